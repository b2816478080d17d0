"""The slurm executor of job grids (vgg_lib.cluster), against a real Slurm: munged, slurmctld and
slurmd started here as a one-node cluster in a temporary folder (Debian's packages, installed by
`make slurm`), stopped by their PIDs at the end. Where that cannot be (not root, no packages),
those tests skip and say why; the checks of bad input need no cluster."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VGG_LIB_CACHE", str(REPO / ".cache" / "vgg_lib"))

from vgg_lib import cluster, jobs, runs  # noqa: E402
from vgg_lib.atomic import write_json  # noqa: E402
from vgg_lib.checks import ConfigError  # noqa: E402
from vgg_lib.runs import collect, load_checkpoint  # noqa: E402

NOTEBOOK = REPO / "book" / "jobs" / "train.ipynb"
DAEMONS = ("munged", "slurmctld", "slurmd")
# Tiny trainings (tests/test_train.py's sizes) in float32, one thread: a job computes the same
# sums wherever it runs, so the slurm executor's weights equal the local executor's bit for bit.
TINY = dict(dataset="shapes", width=0.0625, train_size=128, val_size=64, batch_size=32, image_size=40,
            device="cpu", amp="off", workers=0)
# 30 minutes: submitit takes a signal in the last 10 minutes of a job's time for its time limit
# (a requeue that counts against `requeues`), earlier for a preemption.
SMALL_JOB = dict(cpus_per_node=1, mem_gb=1, gpus_per_node=0, time="00:30:00", requeues=1)


# --- bad input is refused before anything is submitted ---------------------------------------------

def _grid_file(tmp_path, resources=None, **base) -> Path:
    path = tmp_path / "grid.yaml"
    spec = {"notebook": str(NOTEBOOK), "base": {**TINY, **base}, "grid": {"seed": [0]}}
    if resources is not None:
        spec["resources"] = resources
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.mark.parametrize("resources, message", [
    ({"gpus": 4}, r"unknown resource\(s\) \['gpus'\]; allowed: \['cpus_per_node', 'gpus_per_node'"),
    ({"nodes": 0}, r"resources nodes=0 is not allowed: an integer >= 1"),
    ({"gpus_per_node": 1.5}, r"gpus_per_node=1.5 is not allowed: an integer >= 0"),
    ({"mem_gb": -1}, r"mem_gb=-1 is not allowed: a number of GB > 0"),
    ({"time": 90}, r"time=90 is not allowed: a duration \[D-\]HH:MM:SS"),
    ({"time": "1:70:00"}, r"time='1:70:00' is not allowed: minutes and seconds below 60"),
    ({"slurm_options": ["account"]}, r"slurm_options=\['account'\] is not allowed: a mapping of sbatch options"),
    ("4 GPUs", r"resources is a str; expected a mapping"),
])
def test_bad_resources_are_refused_when_the_grid_file_is_read(tmp_path, resources, message):
    with pytest.raises(ConfigError, match=message):
        jobs.load_grid(_grid_file(tmp_path, resources))


def test_resources_default_to_the_papers_scale_and_a_job_may_override_them(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({"notebook": str(NOTEBOOK), "base": TINY, "resources": {"time": "2-00:00:00"},
                                "jobs": [{"seed": 0}, {"seed": 1, "resources": {"gpus_per_node": 0, "nodes": 2}}]}))
    _, params, _ = jobs.load_grid(path)
    first, second = (cluster.resources(p["resources"], "test") for p in params)
    assert (first.gpus_per_node, first.nodes, first.minutes, first.requeues) == (4, 1, 2 * 1440, 21)
    assert (second.gpus_per_node, second.nodes, second.world_size) == (0, 2, 2)
    assert cluster.resources({"time": "00:00:30"}, "test").minutes == 1  # Slurm counts whole minutes
    assert cluster.resources({"slurm_options": None}, "test").slurm_options == {}


def test_unknown_executor_and_mismatched_devices_are_refused_before_submitting(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        jobs.main(["grid", str(_grid_file(tmp_path)), "--executor", "pbs"])
    assert e.value.code == 2 and "invalid choice: 'pbs'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="executor='pbs' is not allowed: one of local, slurm"):
        jobs.grid(NOTEBOOK, [{"seed": 0}], executor="pbs")
    submitted = []
    monkeypatch.setattr(cluster, "require_slurm", lambda: submitted.append("checked the commands"))
    _, params, _ = jobs.load_grid(_grid_file(tmp_path, {"gpus_per_node": 2}))
    assert jobs.main(["grid", str(_grid_file(tmp_path, {"gpus_per_node": 2})), "--executor", "slurm"]) == 2
    assert "job 0 asks for 2 GPUs per node but trains with device=cpu" in capsys.readouterr().err
    assert jobs.main(["grid", str(_grid_file(tmp_path, {"gpus_per_node": 0}, device="cuda")),
                      "--executor", "slurm"]) == 2
    assert "job 0 trains with device=cuda but asks for no GPU" in capsys.readouterr().err
    assert submitted == []  # refused before Slurm was even looked for


def test_a_job_named_before_its_source_is_trained_gets_the_folder_the_local_grid_gives(tmp_path):
    """The slurm executor names every run folder at submission, before the runs they start from
    exist; the name must be the one job_dir gives once they do."""
    from vgg_lib.options import TrainConfig
    from vgg_lib.train import train

    source = train(TrainConfig(**{**TINY, "epochs": 1, "progress": False, "root": str(tmp_path)}))
    tuned = {**TINY, "epochs": 1, "lr": 0.001, "init_run": str(source)}  # S=384 from S=256, say
    deeper = {**TINY, "epochs": 1, "config": "B", "init": "from_run", "init_source": str(source)}  # B from A
    for params, key in ((tuned, "init_run"), (deeper, "init_source")):
        before = cluster.run_folder(NOTEBOOK, params, tmp_path, pending={key: 0})
        assert before == jobs.job_dir(NOTEBOOK, params, tmp_path)
    # the run it starts from is part of the name
    assert cluster.run_folder(NOTEBOOK, {**tuned, "init_run": str(tmp_path / "elsewhere")}, tmp_path,
                              pending={"init_run": 0}) != jobs.job_dir(NOTEBOOK, tuned, tmp_path)


def test_status_of_a_local_grid_reads_its_run_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "queued_by_name", lambda: {})  # no Slurm: what a laptop sees
    notebook, params, _ = jobs.load_grid(_tiny_grid(tmp_path))
    table = jobs.grid_status(notebook, params, root=tmp_path)
    assert table.status.tolist() == ["not started"] * 4
    bad = Path(table.run_dir[2])
    write_json(bad / "summary.json", {"status": "failed", "failure": {"reason": "non-finite loss"}})
    running = Path(table.run_dir[0])
    write_json(running / "summary.json", {"status": "running"})
    table = jobs.grid_status(notebook, params, root=tmp_path)
    assert table.status.tolist() == ["running", "not started", "failed", "skipped"]
    assert table.error[2] == "non-finite loss" and table.error[3] == "a job it starts from failed"


def test_a_queue_that_does_not_answer_ends_no_job(monkeypatch, capsys):
    answers = iter([RuntimeError("squeue failed: Socket timed out"), {"7": ("RUNNING", "None")}])

    def squeue(ids):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(cluster, "squeue", squeue)
    queue = cluster.Queue(poll=0)
    assert queue.state("7", ["7"]) == ("UNKNOWN", "squeue failed")  # not ended: the wait goes on
    assert "warning: squeue failed: Socket timed out" in capsys.readouterr().err
    assert queue.state("7", ["7"]) == ("RUNNING", "None")


def test_torchrun_command_is_the_readmes_multi_node_line():
    cmd = cluster.torchrun_command(2, 4, "node1:29412", "12", {"config": "D", "S": [256, 512], "progress": False})
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--rdzv-backend=c10d",
                       "--rdzv-endpoint=node1:29412", "--rdzv-id=12", "-m", "vgg_lib.train", "--config", "D",
                       "--S", "256", "512", "--no-progress"]


# --- a one-node Slurm cluster on this machine ----------------------------------------------------

def _tool(name: str) -> str | None:
    """A command's path; the daemons are in sbin, which a PATH may leave out."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _why_no_slurm() -> str | None:
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "srun") if _tool(c) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): `make slurm` installs Debian's "
                "slurmctld, slurmd, slurm-client and munge as root")
    if os.geteuid() != 0:
        return "the daemons of a test cluster (munged, slurmctld, slurmd) run as root; not root here"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(folder: Path) -> str:
    """A minimal one-node cluster: this machine's CPUs and (most of its) memory, one partition,
    no accounting, no cgroups (processes tracked by parent id), state and spool in ``folder``."""
    host = socket.gethostname().split(".")[0]
    mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
    return "\n".join([
        "ClusterName=vgglibtest", f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={folder}/munge.socket",
        f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU_Memory", "DefMemPerCPU=512",
        "ReturnToService=2", "SlurmdParameters=config_overrides", "KillWait=5",
        # a job held by a dependency starts at the next scheduling pass: every 2 s, not 60
        "SchedulerParameters=sched_interval=2",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Start munged (a generated key), slurmctld and slurmd; yield the folder; stop them."""
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    (folder / "slurm.conf").write_text(_slurm_conf(folder))
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "OMP_NUM_THREADS")}
    os.environ.update(SLURM_CONF=str(folder / "slurm.conf"), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    started = []
    try:
        for cmd in ([_tool("munged"), "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
                     f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munge.seed"],
                    [_tool("slurmctld"), "-f", str(folder / "slurm.conf")], [_tool("slurmd"), "-f", str(folder / "slurm.conf")]):
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)  # each forks into the background
            started.append(Path(cmd[0]).name)
        deadline = time.time() + 60
        while _sinfo() != "idle":
            if time.time() > deadline:
                logs = "".join((folder / f"{d}.log").read_text()[-1500:] for d in ("slurmctld", "slurmd"))
                raise RuntimeError(f"the test cluster did not come up (sinfo: {_sinfo()!r}):\n{logs}")
            time.sleep(0.5)
        print(f"test Slurm cluster up in {time.perf_counter() - t0:.1f} s")
        yield folder
    finally:
        if "slurmd" in started:
            _drain(folder)
        for daemon in reversed(DAEMONS):
            pid_file = folder / f"{daemon}.pid"
            if daemon in started and pid_file.is_file():
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                deadline = time.time() + 20
                while Path(f"/proc/{pid}").exists() and time.time() < deadline:
                    time.sleep(0.2)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _drain(folder: Path) -> None:
    """Cancel what is left and wait for the queue to empty: a job step whose slurmd has gone
    waits for it forever. A step that still outlives that (it runs in the cluster's folder) is
    ended by its PID."""
    subprocess.run(["scancel", f"--user={os.getuid()}"], capture_output=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        out = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True)
        if out.returncode == 0 and not out.stdout.strip():
            break
        time.sleep(0.5)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ours = (proc / "cmdline").read_bytes().startswith(b"slurmstepd") and \
                Path(os.readlink(proc / "cwd")).is_relative_to(folder)
        except OSError:
            continue
        if ours:
            os.kill(int(proc.name), signal.SIGKILL)


def _sinfo() -> str:
    out = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True)
    return out.stdout.strip()


# --- a grid through Slurm equals the local grid ---------------------------------------------------

def _tiny_grid(tmp_path) -> Path:
    """Four jobs: A; A-tuned, which starts from A (afterok); bad, whose lr diverges (the job fails);
    bad-tuned, which starts from bad (skipped)."""
    path = tmp_path / "tiny_grid.yaml"
    path.write_text(json.dumps({
        "notebook": str(NOTEBOOK), "base": {**TINY, "epochs": 2}, "resources": SMALL_JOB,
        "recipes": {"TINY": {"params": {}}, "TUNE": {"params": {"lr": 0.001}}, "DIVERGE": {"params": {"lr": 1e6}}},
        "runs": {"A": {"recipe": "TINY", "config": "A", "seeds": [0]},
                 "A-tuned": {"recipe": "TUNE", "config": "A", "init_run": "A", "seeds": [0]},
                 "bad": {"recipe": "DIVERGE", "config": "A", "seeds": [0]},
                 "bad-tuned": {"recipe": "TUNE", "config": "A", "init_run": "bad", "seeds": [0]}}}))
    return path


def _results(root: Path) -> pd.DataFrame:
    table = collect(root)
    cols = ["config", "lr", "init_run", "status", "epochs_done", "val_top1_err", "val_top5_err", "train_loss"]
    table = table[[c for c in cols if c in table]].assign(init_run=table.init_run.notna())
    return table.sort_values(["lr", "init_run"]).reset_index(drop=True)


@pytest.mark.slow
def test_a_grid_on_slurm_gives_the_local_grids_results(slurm, tmp_path, capsys):
    grid_file = _tiny_grid(tmp_path)
    notebook, params, _ = jobs.load_grid(grid_file)
    t0 = time.perf_counter()
    on_slurm = jobs.grid(notebook, params, root=tmp_path / "slurm", executor="slurm", poll=1)
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    t0 = time.perf_counter()
    local = jobs.grid(notebook, params, root=tmp_path / "local", jobs=2, progress=False)
    with capsys.disabled():
        print(f"\n{out}slurm executor {seconds:.0f} s, local executor {time.perf_counter() - t0:.0f} s")
    assert local.status.tolist() == on_slurm.status.tolist() == ["finished", "finished", "failed", "skipped"]
    assert on_slurm.slurm_job.nunique() == 4 and "] failed" in out  # each job one Slurm job
    # the failure says the same as the local one: the job's own error, not Slurm's
    assert on_slurm.error[2].replace(str(tmp_path / "slurm"), "ROOT") == local.error[2].replace(str(tmp_path / "local"), "ROOT")
    assert "non-finite loss" in on_slurm.error[2] and on_slurm.error[3] == local.error[3]
    status = jobs.grid_status(notebook, params, root=tmp_path / "slurm")
    assert status.status.tolist() == ["finished", "finished", "failed", "skipped"]
    assert "non-finite loss" in status.error[2]
    # the same run folders (A-tuned's name holds the path of the A it starts from: its root
    # differs), the same numbers, the same weights
    assert [Path(status.run_dir[i]).name for i in (0, 2)] == [Path(local.run_dir[i]).name for i in (0, 2)]
    pd.testing.assert_frame_equal(_results(tmp_path / "slurm"), _results(tmp_path / "local"))
    for i in (0, 1):
        a, b = (load_checkpoint(Path(table.run_dir[i]) / "checkpoint.pt")["model"] for table in (status, local))
        assert all((a[k] == b[k]).all() for k in a), local.run_dir[i]
    tuned = json.loads((Path(status.run_dir[1]) / "params.json").read_text())
    assert tuned["init_run"] == str(tmp_path / "slurm" / Path(local.run_dir[0]).name)  # it started from A
    assert jobs.main(["status", str(grid_file), "--root", str(tmp_path / "slurm")]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].split()[:3] == ["status", "slurm_job", "run_dir"]
    assert [line.split()[0] for line in shown[1:]] == ["finished", "finished", "failed", "skipped"]


# --- a preempted job is requeued and resumes its run -------------------------------------------

def _wait_for(what: str, check, seconds: float = 120):
    deadline = time.time() + seconds
    while not (found := check()):
        if time.time() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.2)
    return found


@pytest.mark.slow
def test_a_preempted_data_parallel_job_is_requeued_and_resumes_from_its_checkpoint(slurm, tmp_path):
    """Slurm warns a job of preemption or of its time limit with SIGUSR2 (submitit's --signal):
    the job stops its torchrun, requeues itself, and the requeued job resumes the run where its
    checkpoint is, ending with the weights of an uninterrupted run. The job trains with 2
    processes (gloo, on this machine's 2 CPUs): the path of a multi-GPU job."""
    params = {**TINY, "train_size": 256, "epochs": 8, "patience": 0, "max_decreases": 20, "seed": 1,
              "dropout": 0.0}
    two = cluster.resources({**SMALL_JOB, "cpus_per_node": 2, "mem_gb": 2, "processes": 2}, "test")
    grid = cluster.SlurmGrid(NOTEBOOK, [params], [{}], [two], root=tmp_path / "slurm", poll=1)
    job_id, run_dir = grid.job_id(0), grid.run_dirs[0]
    _wait_for("the first checkpoint", lambda: (run_dir / "checkpoint.pt").is_file())
    before = pd.read_csv(run_dir / "metrics.csv")
    t0 = time.perf_counter()
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # as a preemption would
    state = _wait_for("the requeue", lambda: (s := cluster.squeue([job_id]).get(job_id)) and s[0] == "PENDING" and s)
    # Slurm holds a requeued job for two minutes (BeginTime); a test need not wait for that.
    assert state[1] == "BeginTime"
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
    assert runs.status(grid.wait(0)) == "finished"
    print(f"\nrequeued and finished in {time.perf_counter() - t0:.0f} s after the signal")
    log = grid.jobs[0].paths.stdout.read_text()
    assert "Caught signal SIGUSR2 on" in log and "this job is preempted" in log and f"Requeued job {job_id}" in log
    assert log.count("Loading pickle") == 2  # ran twice
    assert json.loads((run_dir / "params.json").read_text())["world_size"] == 2
    after = pd.read_csv(run_dir / "metrics.csv")
    assert before.epoch.max() < params["epochs"] == after.epoch.max()
    # resumed, not started again: the epochs before the signal are the ones it had, timings and all
    pd.testing.assert_frame_equal(after.iloc[:len(before)], before)
    reference = tmp_path / "reference"
    cmd = cluster.torchrun_command(1, 2, f"127.0.0.1:{_free_port()}", "reference",
                                   {**params, "run_dir": str(reference), "progress": False})
    out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = (load_checkpoint(p / "checkpoint.pt")["model"] for p in (run_dir, reference))
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_a_job_at_its_time_limit_is_requeued_as_often_as_allowed_then_reported(slurm, tmp_path):
    """In the last 10 minutes of its time, SIGUSR2 means the time limit: the job is requeued while
    its `requeues` last, then fails with the reason, which the grid reports."""
    params = {**TINY, "epochs": 500, "patience": 500, "seed": 3}  # far longer than the test waits
    limited = cluster.resources({**SMALL_JOB, "time": "00:05:00", "requeues": 1}, "test")
    grid = cluster.SlurmGrid(NOTEBOOK, [params], [{}], [limited], root=tmp_path / "slurm", poll=1)
    job_id, log = grid.job_id(0), grid.jobs[0].paths.stdout

    def started(times: int) -> bool:  # submitit has loaded the call and set its signal handler
        return log.is_file() and log.read_text().count("Loading pickle") >= times and "Starting with" in log.read_text()

    for run in (1, 2):
        _wait_for(f"start {run}", lambda: started(run))
        time.sleep(2)  # the handler is set just after the line
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        if run == 1:
            _wait_for("the requeue", lambda: (s := cluster.squeue([job_id]).get(job_id)) and s[0] == "PENDING")
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
    with pytest.raises(jobs.JobError, match="Job not requeued because: timed-out too many times"):
        grid.wait(0)
    assert log.read_text().count("this job is timed-out") == 2


# --- a multi-node job: the README's torchrun lines ------------------------------------------------

@pytest.mark.slow
def test_two_nodes_of_one_process_train_the_weights_of_one_node_of_two(tmp_path):
    """What a job of 2 nodes x 1 GPU runs (one torchrun per node, a c10d rendezvous on the first
    node), here as two torchruns on localhost with gloo, trains the weights of one torchrun of
    2 processes: float32 sums, no dropout, so the all-reduced gradients are the same numbers."""
    from vgg_lib.options import TrainConfig

    params = {**TINY, "dropout": 0.0, "epochs": 2, "seed": 2, "progress": False}
    params = {k: v for k, v in TrainConfig(**params).to_dict().items() if k not in ("S", "run_dir", "root")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def torchrun(nodes: int, per_node: int, name: str) -> list[subprocess.Popen]:
        cmd = cluster.torchrun_command(nodes, per_node, f"127.0.0.1:{_free_port()}", name,
                                       {**params, "run_dir": str(tmp_path / name)})
        return [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(nodes)]

    t0 = time.perf_counter()
    for name, procs in (("one-node", torchrun(1, 2, "one-node")), ("two-nodes", torchrun(2, 1, "two-nodes"))):
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out[-3000:]
        assert json.loads((tmp_path / name / "params.json").read_text())["world_size"] == 2
    print(f"\n1 node x 2 and 2 nodes x 1 trained in {time.perf_counter() - t0:.0f} s")
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("one-node", "two-nodes"))
    assert all((a[k] == b[k]).all() for k in a)
    pd.testing.assert_frame_equal(*(pd.read_csv(tmp_path / name / "metrics.csv").drop(columns=["images_per_s", "seconds"])
                                    for name in ("one-node", "two-nodes")))


def test_the_imagenet_table3_grid_follows_sect_3_1_at_the_papers_scale(repo):
    notebook, params, root = jobs.load_grid(repo / "book" / "jobs" / "imagenet_table3_slurm.yaml")
    assert notebook == NOTEBOOK and root == Path("runs/imagenet-table3")
    nets = [(p["config"], p["S"]) for p in params]
    assert nets[:6] == [("A", 256), ("A-LRN", 256), ("B", 256), ("C", 256), ("D", 256), ("E", 256)]
    assert {(c, tuple(s) if isinstance(s, list) else s) for c, s in nets[6:]} == {
        (c, s) for c in "CDE" for s in (384, (256, 512))}
    start = {i: (p.get("init"), p.get("starts_from")) for i, p in enumerate(params)}
    assert start[0] == ("normal", None) and start[1] == ("normal", None)
    assert all(start[i] == ("from_run", {"init_source": 0}) for i in (2, 3, 4, 5))  # from A
    for i in range(6, 12):  # S=384 from S=256, jittered from S=384, same net
        j = params[i]["starts_from"]["init_run"]
        assert params[j]["config"] == params[i]["config"] and j < i
    for p in params:
        assert cluster.resources(p["resources"], "test") == dataclasses.replace(cluster.PAPER_SCALE, partition="gpu")
