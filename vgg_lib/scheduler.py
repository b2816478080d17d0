"""A small dependency-aware local scheduler: the one behind ``python -m vgg_lib.experiments
reproduce`` and ``python -m vgg_lib.jobs grid``.

A task is a key, the keys it needs and a function of no arguments. Up to ``jobs`` tasks run at
once (threads: each task runs a subprocess, a papermill kernel or single-threaded torch); a
task starts, in the given order, when every task it needs is done; a failed task fails only
the tasks that need it (directly or not), which are skipped and reported; the rest go on::

    failures = run([Task("a", fn_a), Task("b", fn_b, needs={"a"})], jobs=2)
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable


@dataclass
class Task:
    key: Hashable
    fn: Callable[[], object]
    needs: set = field(default_factory=set)
    label: str = ""

    def __post_init__(self):
        self.label = self.label or str(self.key)


@dataclass
class Outcome:
    """What ``run`` did: the keys done, and one line per failed or skipped task."""
    done: set = field(default_factory=set)
    failures: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    seconds: float = 0.0


def run(tasks: list[Task], jobs: int = 1, log=print) -> Outcome:
    """Run ``tasks`` (see the module's text); a need that is not among ``tasks`` counts as done.
    Returns the ``Outcome``; an exception of a task is logged as ``FAILED <label>: <error>``."""
    keys = {t.key for t in tasks}
    out, broken, running = Outcome(), set(), set()
    pending = list(tasks)
    lock = threading.Condition()
    jobs = max(1, int(jobs))

    def work_on(t: Task):
        try:
            result, ok = t.fn(), True
        except Exception as e:  # noqa: BLE001 - recorded; what does not need this task goes on
            log(f"FAILED {t.label}: {e}")
            result, ok = e, False
        with lock:
            running.discard(t.key)
            out.results[t.key] = result
            if ok:
                out.done.add(t.key)
            else:
                broken.add(t.key)
                out.failures.append(f"{t.label}: {result}")
            lock.notify_all()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool, lock:
        while pending or running:
            for t in [t for t in pending if t.needs & broken]:
                pending.remove(t)
                broken.add(t.key)
                out.failures.append(f"skipped {t.label}: a task it needs failed")
            ready = [t for t in pending if all(n in out.done or n not in keys for n in t.needs)]
            if ready and len(running) < jobs:
                t = ready[0]
                pending.remove(t)
                running.add(t.key)
                pool.submit(work_on, t)
            elif pending or running:
                if not running and not ready:  # what is left waits on itself: a cycle
                    for t in pending:
                        out.failures.append(f"skipped {t.label}: its needs are never done (a cycle)")
                    break
                lock.wait(timeout=5)
    out.seconds = time.perf_counter() - t0
    return out
