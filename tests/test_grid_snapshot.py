"""The refactor's safety net: the grid the code derives is exactly the one committed in
tests/fixtures/grid_snapshot.json (written by tests/make_grid_snapshot.py from the code before
the grid became data). A run of the background grid must be accepted unchanged."""

import json

import pytest

from make_grid_snapshot import SNAPSHOT, snapshot

WANT = json.loads(SNAPSHOT.read_text())


@pytest.fixture(scope="module")
def have():
    return snapshot()


def test_the_snapshot_covers_every_part_of_the_grid(have):
    assert sorted(have) == sorted(WANT)


@pytest.mark.parametrize("part", sorted(WANT))
def test_the_grid_is_derived_as_before(have, part):
    assert have[part] == WANT[part], part
