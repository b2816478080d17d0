"""The ``slurm`` executor of job grids: each job of a grid file is one Slurm job, submitted
through submitit (``python -m vgg_lib.jobs grid FILE --executor slurm``).

What a Slurm job runs is what the ``local`` executor runs for that job: the job notebook with
its parameters (``vgg_lib.jobs.run``), into the same run folder. A training job given several
processes (GPUs per node x nodes) runs ``torchrun -m vgg_lib.train`` instead, the README's
data-parallel command, with a c10d rendezvous on the job's first node.

* A job that starts from another one's weights is submitted with ``--dependency=afterok:<id>``,
  so the cluster holds it until that job has finished; the grid's own scheduler
  (``vgg_lib.scheduler``) follows the same graph, reports a failed job and the jobs that need it
  as skipped, and cancels those (a cluster without ``kill_invalid_depend`` keeps them pending).
* A job warned of its time limit or of a preemption (``SIGUSR2``, submitit's signal) is requeued
  and runs the same call again: the training resumes from its last checkpoint (taken every
  epoch), bit for bit as after any kill. Time-limit requeues are capped by ``requeues``.
* Resources come from the grid file's ``resources`` (all jobs) and a ``jobs:`` entry's own
  ``resources``; what is not given is ``PAPER_SCALE``.

Status and results are read from the run folders (``vgg_lib.runs.collect``) and from the queue
(``squeue``): ``python -m vgg_lib.jobs status FILE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .checks import ConfigError

EXECUTORS = ("local", "slurm")
RESOURCES = "resources"  # the key of a grid file's (and a jobs: entry's) resources
# Slurm job states in which a job will not run again, and those of a job on its nodes.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
NEVER = "DependencyNeverSatisfied"  # the reason of a job held on a failed job


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one Slurm job asks for. One task per node: it runs ``torchrun`` with one process per
    GPU (one process on a node without GPUs; ``processes`` sets another number, as data-parallel
    training on CPUs with gloo).

    The defaults are the paper's scale. It trained each net for 2-3 weeks on 4 NVIDIA Titan Black
    GPUs (Sect. 3.3): 4 GPUs on one node. 36 CPUs: 8 JPEG-decoding workers per GPU (``--workers``'
    default, min(8, CPUs per GPU); the README's table estimates 4 for E to 10 for A on an
    A100-class GPU) and the 4 training processes. 64 GB: about 1 GB per decoding worker and a few
    per training process (CUDA context, pinned batches). 24 hours, the longest job many
    partitions allow, and 21 time-limit requeues, so that a net needing the paper's 3 weeks still
    ends; each requeue resumes from the last epoch's checkpoint."""

    nodes: int = 1
    gpus_per_node: int = 4
    cpus_per_node: int = 36
    mem_gb: float = 64
    time: str = "24:00:00"  # [D-]HH:MM:SS, Slurm's --time
    partition: str | None = None  # None: the cluster's default partition
    requeues: int = 21  # requeues after a time limit (a preemption always requeues)
    slurm_options: dict = dataclasses.field(default_factory=dict)  # any other sbatch option: account, qos, ...
    processes: int | None = None  # training processes per node; None: one per GPU (one without GPUs)

    @property
    def processes_per_node(self) -> int:
        return self.processes or max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def minutes(self) -> int:
        days, hours, minutes, seconds = _time_parts(self.time)
        return max(1, days * 1440 + hours * 60 + minutes + (seconds > 0))


PAPER_SCALE = Resources()

_TIME = re.compile(r"^(?:(\d+)-)?(\d{1,2}):(\d{2}):(\d{2})$")


def _time_parts(text: str) -> tuple[int, int, int, int]:
    m = _TIME.match(text)
    return tuple(int(g or 0) for g in m.groups())


def resources(spec, where: str, base: Resources = PAPER_SCALE) -> Resources:
    """``base`` with the keys of the mapping ``spec`` (a grid file's ``resources``); a
    ``ConfigError`` naming ``where`` for an unknown key or a bad value."""
    if spec is None:
        return base
    fields = {f.name for f in dataclasses.fields(Resources)}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: resources is a {type(spec).__name__}; expected a mapping with keys {sorted(fields)}")
    unknown = sorted(set(map(str, spec)) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown resource(s) {unknown}; allowed: {sorted(fields)}")

    def bad(key, want):
        raise ConfigError(f"{where}: resources {key}={spec[key]!r} is not allowed: {want}")

    for key, low in (("nodes", 1), ("gpus_per_node", 0), ("cpus_per_node", 1), ("requeues", 0), ("processes", 1)):
        if key == "processes" and spec.get(key) is None:
            continue
        if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < low):
            bad(key, f"an integer >= {low}")
    if "mem_gb" in spec and (not isinstance(spec["mem_gb"], (int, float)) or isinstance(spec["mem_gb"], bool)
                             or not spec["mem_gb"] > 0):
        bad("mem_gb", "a number of GB > 0")
    if "time" in spec:
        text = spec["time"]
        if not isinstance(text, str) or not _TIME.match(text) or not any(_time_parts(text)):
            bad("time", "a duration [D-]HH:MM:SS such as 24:00:00 or 2-12:00:00, in quotes")
        if int(_time_parts(text)[2]) > 59 or int(_time_parts(text)[3]) > 59:
            bad("time", "minutes and seconds below 60")
    if "partition" in spec and spec["partition"] is not None and (not isinstance(spec["partition"], str) or not spec["partition"]):
        bad("partition", "a partition name")
    options = spec.get("slurm_options")
    if options is not None and (not isinstance(options, dict)
                                or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in options.values())):
        bad("slurm_options", "a mapping of sbatch options to strings or integers, such as {account: vision}")
    if "slurm_options" in spec:
        spec = {**spec, "slurm_options": dict(options or {})}
    return dataclasses.replace(base, **spec)


# --- what one Slurm job runs ----------------------------------------------------------------------

def train_arguments(params: dict) -> list[str]:
    """``python -m vgg_lib.train``'s arguments for a dict of ``TrainConfig`` fields."""
    args = []
    for key, value in params.items():
        flag = f"--{key}"
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key}")
        elif isinstance(value, (list, tuple)):
            args += [flag, *map(str, value)]
        elif value is not None:
            args += [flag, str(value)]
    return args


def run_folder(notebook, params: dict, root=None, pending=()) -> Path:
    """The run folder of a job, as ``vgg_lib.jobs.job_dir`` names it, computed before the job runs
    and where no GPU may be. The device does not name a run (it is a runtime field), and a login
    node without a GPU would refuse ``device="cuda"``: the job checks it on its own node.
    ``pending`` names the parameters that are run folders of jobs not finished yet (the
    ``init_run`` of a job that starts from another one): ``TrainConfig`` would refuse them until
    they hold a finished run, so the name is computed from the rest, as
    ``TrainConfig.resolved_run_dir`` computes it, with their values put back."""
    from .jobs import is_training_job, job_dir, notebook_parameters

    if params.get("device") == "cuda":
        params = {**params, "device": "cpu"}
    defaults = notebook_parameters(notebook)
    held = {k: params[k] for k in pending if params.get(k) is not None}
    if not held or not is_training_job(defaults):
        return job_dir(notebook, params, root)
    from .runs import run_name, runs_root
    from .options import TrainConfig

    stand_in = {**defaults, **params, **{k: None for k in held}, "run_dir": None, "root": str(runs_root(root))}
    if "init_source" in held:
        stand_in["init"] = defaults["init"] if defaults["init"] != "from_run" else "normal"
    cfg = TrainConfig(**stand_in)
    identity = {**cfg.identity(), **held, "init": params.get("init", defaults["init"])}
    return runs_root(root) / run_name(identity, (cfg.config, cfg.dataset, f"s{cfg.seed}"))


class GridJob:
    """The call a Slurm job makes: one job of a grid. Checkpointable the submitit way: on a
    time-limit or preemption signal, ``checkpoint`` resubmits the same call (the training's own
    checkpoint is the state), and the requeued job resumes the run."""

    def __init__(self, notebook, params: dict, root, run_dir, resources: Resources):
        self.notebook, self.params, self.root = str(notebook), dict(params), root
        self.run_dir, self.resources = str(run_dir), resources

    def __call__(self) -> str:
        from . import jobs

        if self.resources.world_size == 1:
            return str(jobs.run(self.notebook, self.params, root=self.root))
        return str(self._torchrun())

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _torchrun(self) -> Path:
        """The README's multi-node command on this job's nodes: one ``torchrun`` per node (one
        Slurm task per node), its processes meeting at a c10d rendezvous on the first node."""
        import submitit

        from .runs import is_done, run_failure

        run_dir = Path(self.run_dir)
        if is_done(run_dir):
            return run_dir
        env = submitit.JobEnvironment()
        job = int(env.job_id.split("_")[0])
        port = 29400 + job % 1000  # jobs sharing a node rendezvous on different ports
        cmd = torchrun_command(self.resources.nodes, self.resources.processes_per_node,
                               f"{env.hostnames[0]}:{port}", str(job),
                               {**self.params, "run_dir": str(run_dir), "progress": False})
        code = _run_to_the_end(cmd)
        if env.global_rank != 0:
            return run_dir
        if code != 0 or run_failure(run_dir):
            from .jobs import JobError

            raise JobError(run_failure(run_dir) or f"torchrun exited with status {code}: see the job's log")
        return run_dir


def torchrun_command(nodes: int, per_node: int, endpoint: str, rdzv_id: str, params: dict) -> list[str]:
    """``torchrun --nnodes ... -m vgg_lib.train ...``: run on every node of a multi-node job."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}",
            "-m", "vgg_lib.train", *train_arguments(params)]


def _run_to_the_end(cmd: list[str]) -> int:
    """Run ``cmd``; if this process is told to stop (submitit's requeue exits with SystemExit),
    stop the command first, so that the requeued job does not meet it still writing."""
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- submitting a grid and following it ------------------------------------------------------------

def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue", "scancel", "srun") if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"the slurm executor needs Slurm's commands; {', '.join(missing)} not found "
                          "(run on a cluster's login node, or use --executor local)")


class Queue:
    """The states of some Slurm jobs, read with one ``squeue`` call at most every ``poll``
    seconds however many threads ask."""

    def __init__(self, poll: float):
        self.poll, self._lock, self._states, self._read_at = poll, threading.Lock(), {}, -1e9

    def state(self, job_id: str, ids) -> tuple[str, str] | None:
        """(state, reason) of ``job_id``, or None once the queue has forgotten it."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.poll:
                try:
                    self._states = squeue(ids)
                except RuntimeError as e:  # the controller did not answer this time: no news, no end
                    print(f"warning: {e}; asking again in {self.poll:g} s", file=sys.stderr, flush=True)
                    self._states = {i: self._states.get(i, ("UNKNOWN", "squeue failed")) for i in ids}
                self._read_at = time.monotonic()
            return self._states.get(job_id)


def squeue(ids=None, name_user: bool = False) -> dict:
    """``{job id: (state, reason)}`` of the given jobs (all of this user's with ``name_user``,
    then keyed by job name, the latest job of each name) from ``squeue``, finished jobs too while
    the controller remembers them; an id it does not know is left out."""
    fmt = "%i|%j|%T|%r"
    cmd = ["squeue", "--noheader", "--states=all", f"--format={fmt}"]
    if name_user:
        cmd.append(f"--user={os.environ.get('USER') or os.getuid()}")
    elif ids:
        cmd.append("--jobs=" + ",".join(ids))
    else:
        return {}
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every id asked for is forgotten
            return {}
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    states = {}
    for line in out.stdout.splitlines():
        job_id, name, state, reason = line.split("|", 3)
        key = name if name_user else job_id
        if name_user and key in states and int(states[key][0]) > int(job_id):
            continue
        states[key] = (job_id, state, reason) if name_user else (state, reason)
    return states


class SlurmGrid:
    """A grid submitted to Slurm: every job at once, in the grid's order, each held by
    ``afterok`` on the jobs it starts from. ``wait(i)`` follows job ``i`` to its end."""

    def __init__(self, notebook, params_list: list[dict], starts: list[dict], resources_list: list[Resources],
                 root=None, force: bool = False, poll: float = 30.0):
        import submitit

        from .runs import is_done, runs_root

        for i, (params, res) in enumerate(zip(params_list, resources_list)):
            if res.world_size > 1 and not _is_training(notebook):
                raise ConfigError(f"job {i}: {res.world_size} processes (per node x nodes) need a training "
                                  f"notebook (torchrun -m vgg_lib.train); {Path(notebook).name} runs in one")
            device = params.get("device")
            if res.gpus_per_node and device == "cpu":
                raise ConfigError(f"job {i} asks for {res.gpus_per_node} GPUs per node but trains with device=cpu")
            if not res.gpus_per_node and device == "cuda":
                raise ConfigError(f"job {i} trains with device=cuda but asks for no GPU: set resources gpus_per_node")
        require_slurm()
        self.root = root  # as given: a job runs in this folder (sbatch's default), names its runs alike
        self.folder = runs_root(root).resolve() / "slurm"  # submitit's pickles and logs: on the shared file system
        self.queue = Queue(poll)
        self.stopped = threading.Event()  # set by Ctrl-C: the waits end, the jobs go on
        self.run_dirs, self.errors, self.jobs = [], {}, []
        for i, params in enumerate(params_list):
            try:
                self.run_dirs.append(run_folder(notebook, {**params, **self._given(i, starts)}, root, pending=starts[i]))
            except Exception as e:  # a bad parameter fails its job (as the local executor does), at once
                self.run_dirs.append(None)
                self.errors[i] = str(e)
        for i, params in enumerate(params_list):
            run_dir, res = self.run_dirs[i], resources_list[i]
            needs = set(starts[i].values())
            if run_dir is None or any(j in self.errors or (self.jobs[j] is None and not is_done(self.run_dirs[j]))
                                      for j in needs):
                self.jobs.append(None)  # failed already, or waits on a job that did
                continue
            if force and run_dir.exists():
                shutil.rmtree(run_dir)  # here, once: a requeued job must resume, not start again
            if is_done(run_dir):
                self.jobs.append(None)
                continue
            after = [self.jobs[j].job_id for j in sorted(needs) if self.jobs[j] is not None]
            executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=res.requeues)
            executor.update_parameters(
                job_name=run_dir.name, nodes=res.nodes, ntasks_per_node=1, cpus_per_task=res.cpus_per_node,
                gpus_per_node=res.gpus_per_node or None, mem=f"{res.mem_gb:g}GB", time=res.minutes,
                partition=res.partition, dependency=f"afterok:{':'.join(after)}" if after else None,
                additional_parameters=dict(res.slurm_options) or None)
            params = {**params, **self._given(i, starts)}
            self.jobs.append(executor.submit(GridJob(notebook, params, self.root, run_dir, res)))

    def _given(self, i: int, starts: list[dict]) -> dict:
        """The run folders job ``i`` starts from, as its parameters (``{"init_run": folder}``)."""
        return {k: str(self.run_dirs[j]) for k, j in starts[i].items()}

    @property
    def ids(self) -> list[str]:
        return [j.job_id for j in self.jobs if j is not None]

    def job_id(self, i: int) -> str | None:
        return None if self.jobs[i] is None else self.jobs[i].job_id

    def wait(self, i: int) -> Path:
        """Job ``i``'s run folder once its Slurm job has ended well; ``JobError`` (the job's own
        error, as the local executor words it) when it has not."""
        from .jobs import JobError

        if i in self.errors:
            raise JobError(self.errors[i])
        job = self.jobs[i]
        if job is None:
            return self.run_dirs[i]
        while True:
            if job.paths.result_pickle.exists():
                with open(job.paths.result_pickle, "rb") as f:
                    outcome, value = pickle.load(f)
                if outcome == "success":
                    return Path(value)
                raise JobError(_last_error(value))
            state = self.queue.state(job.job_id, self.ids)
            if state is None or state[0] in ENDED:
                self._pause(15)  # its result file may reach this node late (submitit waits as long)
                if job.paths.result_pickle.exists():
                    continue
                said = f"ended {state[0]} ({state[1]})" if state else "left the queue"
                raise JobError(f"Slurm job {job.job_id} {said} without a result; its log: {job.paths.stderr}")
            self._pause(self.queue.poll)

    def _pause(self, seconds: float) -> None:
        if self.stopped.wait(seconds):
            raise KeyboardInterrupt("stopped following the grid; its Slurm jobs go on")

    @contextlib.contextmanager
    def following(self):
        """While the grid is followed, Ctrl-C ends every ``wait`` (which would otherwise keep the
        threads of the scheduler, and so the command, alive until the cluster is done) and then
        raises ``KeyboardInterrupt``; the submitted jobs go on."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum, frame):
            self.stopped.set()
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def cancel(self, indices) -> None:
        ids = [self.jobs[i].job_id for i in indices if self.jobs[i] is not None]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)


def _is_training(notebook) -> bool:
    from .jobs import is_training_job, notebook_parameters

    return is_training_job(notebook_parameters(notebook))


def _last_error(traceback_text: str) -> str:
    """The exception line of a job's traceback without its class path, as ``str(error)``:
    ``vgg_lib.jobs.JobError: train.ipynb failed: ...`` -> ``train.ipynb failed: ...``."""
    lines = [ln for ln in str(traceback_text).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "the job failed"
    return re.sub(r"^[\w.]+(Error|Exception|Exit)\w*: ", "", last)


def queued_by_name() -> dict:
    """``{job name: (job id, state, reason)}`` of this user's Slurm jobs, the latest of each name;
    {} where there is no Slurm."""
    if shutil.which("squeue") is None:
        return {}
    try:
        return squeue(name_user=True)
    except RuntimeError:
        return {}


