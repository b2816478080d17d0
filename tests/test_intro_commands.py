"""The intro's ImageNet commands are runnable as written: every `-p` names a parameter of the
training job, and each paper-size run passes the paper's geometry (224 crops, S = 256) and an
initialisation that is not the book's small-data default (from net A, or Glorot)."""
import ast
import json
import re
import shlex

from conftest import REPO


def job_parameters() -> set[str]:
    nb = json.loads((REPO / "book" / "jobs" / "train.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}


def intro_commands() -> list[dict[str, str]]:
    text = (REPO / "book" / "intro.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command)
            if words[:2] == ["papermill", "book/jobs/train.ipynb"]:
                commands.append({words[i + 1]: words[i + 2] for i, w in enumerate(words) if w == "-p"})
    return commands


def test_intro_imagenet_commands_use_real_parameters_and_the_paper_geometry():
    params, commands = job_parameters(), intro_commands()
    assert {"crop", "S", "init", "init_source", "workers"} <= params
    assert len(commands) >= 2
    for c in commands:
        assert set(c) <= params, set(c) - params
        assert (c["crop"], c["S"], c["dataset"]) == ("224", "256", "imagefolder")
        assert int(c["workers"]) > 0
    a, d = commands[0], commands[1]
    assert a["config"] == "A" and d["config"] == "D"
    # D starts from the A run the first command writes (Sect. 3.1)
    assert d["init"] == "from_run" and d["init_source"] == a["run_dir"]
