"""The GPU training commands the README (and the book, where it has one) tells users to run:
every one parses with the real command-line parser or the job's parameters, and names loader
workers, an initialisation a deep net can train from, and the paper's geometry.

book/intro.md is checked once its ImageNet command is the paper-size one (being rewritten
under issue 14: until then it is reported as skipped)."""

import json
import shlex
from pathlib import Path

import pytest

from vgg_lib import jobs
from vgg_lib import train as T
from vgg_lib.configs import resolve

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "book" / "jobs" / "train.ipynb"


def _blocks(text: str) -> list[str]:
    """The shell code blocks (```bash, ```sh, ```shell or a bare fence) of a markdown text."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = [] if line.strip("` ") in ("", "bash", "sh", "shell") else False
            else:
                if current is not False:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current:
            current.append(line)
        elif current == []:
            current = [line]
    return blocks


def _commands(text: str) -> list[list[str]]:
    """Every command of the fenced code blocks, continuation lines joined, comments dropped."""
    out = []
    for block in _blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # prose in a bare fence (the layout listing), not a command
                continue
            if words:
                out.append(words)
    return out


def _sources() -> dict[str, str]:
    texts = {"README.md": (REPO / "README.md").read_text()}
    nb = json.loads(JOB.read_text())
    texts["book/jobs/train.ipynb"] = "\n".join("".join(c["source"]) for c in nb["cells"]
                                               if c["cell_type"] == "markdown")
    return texts


def _training_commands(sources):
    """(where, kind, settings) of every command that trains on ImageNet-style data."""
    found = []
    for where, text in sources.items():
        for words in _commands(text):
            if "vgg_lib.train" in words:
                args = words[words.index("vgg_lib.train") + 1:]
                given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in args if a.startswith("--")}
                parsed = vars(T.parser().parse_args(args))  # an unknown option fails here
                found.append((where, "cli", {k: v for k, v in parsed.items() if k in given}))
            elif any(w.endswith("train.ipynb") for w in words) and "papermill" in words[0]:
                if "-p" not in words:
                    continue  # e.g. papermill --help-notebook
                pairs = [words[i + 1:i + 3] for i, w in enumerate(words) if w == "-p"]
                found.append((where, "papermill", {k: v for k, v in pairs}))
    return found


COMMANDS = _training_commands(_sources())
INTRO = REPO / "book" / "intro.md"
INTRO_COMMANDS = _training_commands({"book/intro.md": INTRO.read_text()}) if INTRO.is_file() else []


def test_the_readme_has_gpu_training_commands():
    kinds = {(where, kind) for where, kind, _ in COMMANDS}
    assert {("README.md", "cli"), ("README.md", "papermill")} <= kinds  # torchrun / python -m, papermill
    text = (REPO / "README.md").read_text()
    assert "torchrun --nproc_per_node 8" in text and "## Running on GPUs" in text


@pytest.mark.parametrize("where, kind, settings", COMMANDS,
                         ids=[f"{w}:{k}:{s.get('config')}-{i}" for i, (w, k, s) in enumerate(COMMANDS)])
def test_gpu_commands_name_workers_init_and_the_papers_geometry(where, kind, settings):
    check(where, kind, settings)


@pytest.mark.parametrize("where, kind, settings", INTRO_COMMANDS,
                         ids=[f"intro:{k}:{s.get('config')}-{i}" for i, (w, k, s) in enumerate(INTRO_COMMANDS)])
def test_the_intros_gpu_commands_too(where, kind, settings):
    if "crop" not in settings:
        pytest.skip("book/intro.md still has its old ImageNet command (issue 14 rewrites it)")
    check(where, kind, settings)


def check(where, kind, settings):
    if kind == "papermill":
        unknown = set(settings) - set(jobs.notebook_parameters(JOB))
        assert not unknown, f"{where}: {sorted(unknown)} are not parameters of train.ipynb"
    s = settings
    what = f"{where}: {kind} command for config {s.get('config')}"
    assert s.get("dataset") == "imagefolder" and s.get("device") == "cuda", what
    # loader workers: without them each GPU decodes JPEGs in its training process
    assert "workers" in s and int(s["workers"]) >= 1, f"{what} does not name --workers"
    # the paper's geometry: 224 crops, S = 256 (or 384, or [256, 512] fine-tuned from a run)
    assert int(s.get("crop", 0)) == 224, f"{what}: crop is not 224"
    S = s.get("S")
    S = [int(v) for v in (S if isinstance(S, list) else str(S).replace(",", " ").split())] if S else None
    assert S in ([256], [384], [256, 512]), f"{what}: S={S} is not the paper's"
    assert float(s.get("width", 1)) == 1.0 and int(s.get("batch_size", 256)) == 256, what
    # an initialisation a deep net trains from (Sect. 3.1); only net A starts from N(0, 0.01),
    # the default
    init = s.get("init", "normal")
    if init == "from_run":
        assert s.get("init_source"), f"{what}: init from_run without init_source"
    elif init == "normal":
        assert resolve(s["config"]) == "A", f"{what}: a deep net from N(0, 0.01) stalls"
    else:
        assert init == "glorot" or s.get("init_run"), what
    if S == [256, 512]:
        assert s.get("init_run"), f"{what}: jittered S is fine-tuned from a single-scale run"


def test_notebooks_are_committed_without_outputs_and_with_cell_ids():
    """The book build executes the chapters; a committed output would be stale, and nbformat 4.5
    needs an id on every cell (without one the build warns, and later versions will refuse)."""
    notebooks = sorted((REPO / "book").rglob("*.ipynb"))
    notebooks = [p for p in notebooks if "_build" not in p.parts and ".ipynb_checkpoints" not in p.parts]
    assert len(notebooks) >= 10
    for path in notebooks:
        nb = json.loads(path.read_text())
        ids = [c.get("id") for c in nb["cells"]]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: a cell without an id, or two with one id"
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                assert not c["outputs"] and c["execution_count"] is None, f"{path.name}: a committed output"


def test_plumbing_cells_are_folded_and_the_teaching_code_stays_visible():
    # the book issue: a chapter is prose first; reading results, formatting and plotting are folded
    # behind a "show code" toggle (hide-input), the code a reader learns from stays in sight
    import json

    folded = visible = 0
    for path in sorted((REPO / "book").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        hidden = [c for c in cells if "hide-input" in c["metadata"].get("tags", [])]
        folded, visible = folded + len(hidden), visible + len(cells) - len(hidden)
        if path.stem in ("training", "testing", "localisation", "reproduction", "transfer", "fusion"):
            assert len(hidden) >= len(cells) // 2, f"{path.name}: {len(hidden)} of {len(cells)} code cells folded"
    assert folded >= 60 and visible >= 10, (folded, visible)
