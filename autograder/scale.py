"""Grading one student as a self-contained task, and running many such tasks at once:
on this machine (a pool of worker processes) or on a Dask distributed cluster.

A task needs no shared filesystem. What every student of an assignment shares travels once
(:class:`Bundle`: a gradebook that knows only the released assignment, the assignment's data
files, the hidden checks file and the hashes of the course code the checks import, the
limits); each student's :class:`Task` carries only their notebook(s), already restored from
the release. :func:`run_task` grades in a private scratch folder on whichever machine runs it
(the worker process of :mod:`autograder.worker` with its wall-clock limit over its whole
process group, the kernel sandboxed) and returns everything as plain data: the graded
notebook and the feedback pages (regular files only), the worker's private gradebook, the
trusted verdicts, the cell times and the tail of the log. Only the process that called
``grade`` writes the course's gradebook (:mod:`autograder.ledger`).

A worker node needs what the grading machine needs: bubblewrap, the course environment
(the same ``course`` and ``autograder`` code: a task whose node imports other versions of
the modules the checks import is refused, not graded), and nothing else.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from autograder import config as cfg

#: Most bytes of graded notebooks and feedback pages one task sends back.
MAX_RETURN_BYTES = 256 * 2**20
#: Characters of the worker's log sent back (its end).
LOG_TAIL_CHARS = 200_000

#: Time limits measured from the reference solution (:func:`derive_limits`): a cell may take
#: CELL_FACTOR times the slowest cell of the reference (at least CELL_FLOOR_S), a student
#: STUDENT_FACTOR times the reference's grading time plus two cell limits (at least
#: STUDENT_FLOOR_S); never more than the fixed defaults.
CELL_FACTOR, CELL_FLOOR_S = 4.0, 10
STUDENT_FACTOR, STUDENT_FLOOR_S = 3.0, 120
DEFAULT_STUDENT_TIMEOUT_S = 1800


@dataclass
class Bundle:
    """What every task of one grading run shares (sent to each worker once)."""

    assignment: str
    template_db: bytes  # a SQLite gradebook holding the released assignment and no student
    files: dict[str, bytes]  # the assignment's other files (data), by path relative to source/<assignment>
    checks: bytes | None  # the hidden checks file (None: the assignment has none)
    code: dict[str, str]  # what the checks import from course/ and autograder/: path -> sha256
    cell_timeout: int
    student_timeout: int
    sandbox: bool = True
    threads: int | None = None  # torch/OpenMP threads per kernel; None: the node's cores / its task slots


@dataclass
class Task:
    student: str
    notebooks: dict[str, bytes]  # name -> the notebook to grade (locked cells restored); missing ones absent


# -- hashes -----------------------------------------------------------------------------------


def sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def submission_sha256(notebooks: dict[str, bytes | None]) -> str:
    """The hash of a submission as it was handed in: each expected notebook's name and bytes
    (a missing one counts as missing)."""
    parts: list[bytes | str] = []
    for name in sorted(notebooks):
        data = notebooks[name]
        parts += [name, b"\x00missing" if data is None else b"\x01" + data]
    return sha256(*parts)


def _module_names(source: bytes) -> set[str]:
    """Modules of ``course`` and ``autograder`` that a checks file imports (directly)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in ("course", "autograder")}


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _package_root(top: str) -> Path | None:
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).resolve().parent


def code_hashes(checks: bytes | None) -> dict[str, str]:
    """``course/...`` and ``autograder/...`` files the checks import, with their SHA-256."""
    out: dict[str, str] = {}
    for name in sorted(_module_names(checks or b"")):
        path = _module_file(name)
        root = _package_root(name.split(".")[0])
        if path is None or root is None:
            continue
        out[path.resolve().relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _code_mismatch(code: dict[str, str]) -> str:
    """Which of the files in ``code`` this machine has in another version ("" if none)."""
    for rel, digest in sorted(code.items()):
        root = _package_root(rel.split("/")[0])
        path = root / rel if root else None
        try:
            mine = hashlib.sha256(path.read_bytes()).hexdigest() if path else ""
        except OSError:
            mine = ""
        if mine != digest:
            return f"{socket.gethostname()} runs another version of {rel} than the grading machine"
    return ""


def bundle_sha256(bundle: Bundle, release: dict[str, bytes]) -> str:
    """The hash of everything besides the notebook that decides a grade: the release
    (locked cells, points), the checks and the code they import, the assignment's files, the
    limits and whether the kernel is sandboxed."""
    return sha256(inputs_sha256(bundle, release), str(bundle.cell_timeout), str(bundle.student_timeout),
                  str(bundle.sandbox))


def inputs_sha256(bundle: Bundle, release: dict[str, bytes]) -> str:
    """Like :func:`bundle_sha256` without the limits (what calibrated limits are keyed by)."""
    parts: list[bytes | str] = [bundle.assignment]
    for name in sorted(release):
        parts += [name, release[name]]
    parts += [b"checks", bundle.checks if bundle.checks is not None else b"\x00none"]
    for rel in sorted(bundle.code):
        parts += [rel, bundle.code[rel]]
    for rel in sorted(bundle.files):
        parts += [rel, bundle.files[rel]]
    return sha256(*parts)


# -- one task -----------------------------------------------------------------------------------

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_swept = False
_TASK_PREFIX = "grade-task-"


def kill_running() -> None:
    """Kill the worker of every task running in this process (and everything it started)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except OSError:
            pass


def _sweep_scratch() -> None:
    """Delete the scratch folders of tasks whose process is gone (a killed run)."""
    global _swept
    if _swept:
        return
    _swept = True
    root = tempfile.gettempdir()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for e in entries:
        m = re.fullmatch(_TASK_PREFIX + r"(\d+)-\w+", e.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            shutil.rmtree(e.path, ignore_errors=True)


def _regular_files(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Regular files below ``folder`` (paths relative to it), and whatever else is there
    (links, sockets...: never followed, never sent)."""
    files: dict[str, bytes] = {}
    odd: list[str] = []
    if not folder.is_dir() or folder.is_symlink():
        return files, odd
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                with open(path, "rb") as f:
                    files[Path(rel).as_posix()] = f.read()
            elif not stat.S_ISDIR(mode):
                odd.append(rel)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return files, odd


def _threads(bundle: Bundle) -> int:
    if bundle.threads:
        return bundle.threads
    slots = 1
    try:  # on a Dask worker: its task slots share the node's cores
        from distributed import get_worker

        slots = max(1, int(get_worker().state.nthreads))
    except Exception:
        pass
    return max(1, (os.cpu_count() or 1) // slots)


def run_task(bundle: Bundle, task: Task, on_start=None) -> dict:
    """Grade one student (see the module docstring). Never raises for anything the
    submission does; the outcome says what happened:

    ``autograde``/``feedback`` (bools), ``error``, ``timed_out``, ``seconds``, ``host``,
    ``files`` (``autograded/<path>`` and ``feedback/<path>`` -> bytes), ``odd`` (links or
    special files found in the graded copy), ``gradebook`` (the private SQLite gradebook's
    bytes, or None), ``verdicts`` (the trusted report), ``timing`` (cell times), ``log``.
    """
    if on_start is not None:
        on_start()
    t0 = time.perf_counter()
    aid, sid = bundle.assignment, task.student
    out: dict = {"student": sid, "autograde": False, "feedback": False, "error": "", "timed_out": False,
                 "seconds": 0.0, "host": socket.gethostname(), "files": {}, "odd": [], "gradebook": None,
                 "verdicts": {}, "timing": {}, "log": ""}
    problem = _code_mismatch(bundle.code)
    if not problem and bundle.sandbox:
        from autograder.sandbox import check_available

        why = check_available()
        if why:
            problem = f"the sandbox cannot start on {socket.gethostname()} ({why})"
    if problem:
        out["error"] = problem
        return out
    _sweep_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=f"{_TASK_PREFIX}{os.getpid()}-"))  # 0700
    try:
        course = scratch / "course"
        submitted = course / "submitted" / sid / aid
        submitted.mkdir(parents=True)
        for name, data in task.notebooks.items():
            (submitted / name).write_bytes(data)
        source = course / cfg.SOURCE / aid
        source.mkdir(parents=True)
        for rel, data in bundle.files.items():
            dest = source / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        db_path = course / "gradebook.db"
        db_path.write_bytes(bundle.template_db)
        checks_dir = scratch / "checks"
        checks_dir.mkdir()
        if bundle.checks is not None:
            (checks_dir / f"{aid}.py").write_bytes(bundle.checks)
        logs = scratch / "logs"
        logs.mkdir()
        result_file, report, timing = logs / "result.json", logs / "trusted.json", logs / "timing.json"

        env = dict(os.environ)
        env["COURSE_PROFILE"] = "quick"  # never retrain a full model while grading
        env["MPLBACKEND"] = "Agg"
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = str(cfg.repo_root()) + os.pathsep + env.get("PYTHONPATH", "")
        env["AUTOGRADER_TRUSTED_REPORT"] = str(report)
        env["AUTOGRADER_TIMING_REPORT"] = str(timing)
        env["AUTOGRADER_PARENT_PID"] = str(os.getpid())
        if "OMP_NUM_THREADS" not in os.environ:  # N kernels on N cores: one thread each, not N
            env["OMP_NUM_THREADS"] = str(_threads(bundle))
        cmd = [sys.executable, "-m", "autograder.worker", "--db-url", f"sqlite:///{db_path}",
               "--cell-timeout", str(bundle.cell_timeout), "--result", str(result_file),
               "--checks-dir", str(checks_dir)]
        if bundle.sandbox:
            cmd.append("--sandbox")
        cmd += ["--", str(course), aid, sid]  # positional, whatever they look like
        log_path = logs / "worker.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=scratch, start_new_session=True)
            with _live_lock:
                _live.add(proc)
            try:
                proc.wait(timeout=bundle.student_timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)  # the worker leads its group; its sandboxed kernel dies with it
                proc.wait()
                if bundle.sandbox:  # the worker could not clean up its kernel's cgroup: do it now
                    from autograder.sandbox import remove_stale_cgroups

                    remove_stale_cgroups()
                out["timed_out"] = True
                out["error"] = f"grading took longer than {bundle.student_timeout} s"
            finally:
                with _live_lock:
                    _live.discard(proc)
        out["log"] = _tail(log_path)
        if out["timed_out"]:
            return out
        outcome = _json(result_file)
        out["autograde"] = bool(outcome.get("autograde"))
        out["feedback"] = bool(outcome.get("feedback"))
        out["error"] = str(outcome.get("error") or "") or ("" if out["autograde"] else
                                                          f"grader process exited with {proc.returncode}")
        out["verdicts"] = _json(report)
        out["timing"] = _json(timing)
        size = 0
        for folder in ("autograded", "feedback"):
            files, odd = _regular_files(course / folder / sid / aid)
            out["odd"] += [f"{folder}: {p}" for p in odd]
            for rel, data in files.items():
                out["files"][f"{folder}/{rel}"] = data
                size += len(data)
        if size > MAX_RETURN_BYTES:
            out["files"], out["autograde"] = {}, False
            out["error"] = f"graded notebook and feedback take {size / 2**20:.0f} MiB (over {MAX_RETURN_BYTES >> 20})"
        if out["autograde"]:
            out["gradebook"] = db_path.read_bytes()
        return out
    except Exception as e:  # the grading machinery itself (disk full, ...): this student's row only
        out["autograde"], out["error"] = False, f"{type(e).__name__}: {e}"[:300]
        return out
    finally:
        out["seconds"] = time.perf_counter() - t0
        shutil.rmtree(scratch, ignore_errors=True)


def _json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_CHARS))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# -- limits measured from the reference solution ----------------------------------------------


def derive_limits(slowest_cell_s: float, reference_s: float, max_cell: int = cfg.CELL_TIMEOUT_S,
                  max_student: int = DEFAULT_STUDENT_TIMEOUT_S) -> tuple[int, int]:
    """(cell timeout, student timeout) in seconds from the reference's slowest cell and its
    whole grading time (see the constants above)."""
    cell = min(max_cell, max(CELL_FLOOR_S, math.ceil(CELL_FACTOR * slowest_cell_s)))
    student = min(max_student, max(STUDENT_FLOOR_S, math.ceil(STUDENT_FACTOR * reference_s) + 2 * cell))
    return cell, student


def slowest_cell(timing: dict) -> float:
    """The longest cell time in a task's ``timing``; 0 if none."""
    times = [float(s) for nb in timing.values() if isinstance(nb, dict)
             for s in (nb.get("cells") or {}).values() if isinstance(s, (int, float))]
    return max(times, default=0.0)


# -- pools ---------------------------------------------------------------------------------------


class Pool:
    """Runs tasks; ``slots`` of them at once."""

    def __init__(self, slots: int = 1):
        self.slots = slots

    def prepare(self, bundle: Bundle):
        return bundle

    def submit(self, bundle_ref, task: Task):
        raise NotImplementedError

    def running_now(self, pending: int) -> int:
        return min(pending, self.slots)

    def close(self, cancel: bool = False) -> None:
        pass


class LocalPool(Pool):
    """``workers`` tasks at a time on this machine: each runs in a thread that starts, waits
    for and collects one worker process (a process pool in effect)."""

    def __init__(self, workers: int):
        super().__init__(slots=max(1, workers))
        self._ex = ThreadPoolExecutor(self.slots, thread_name_prefix="grade")
        self._lock = threading.Lock()
        self._started = 0
        self._futures: list = []

    def _on_start(self) -> None:
        with self._lock:
            self._started += 1

    def submit(self, bundle_ref, task: Task):
        fut = self._ex.submit(run_task, bundle_ref, task, self._on_start)
        self._futures.append(fut)
        return fut

    def running_now(self, pending: int) -> int:
        with self._lock:
            done = sum(f.done() for f in self._futures)
            return max(0, self._started - done)

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for f in self._futures:
                f.cancel()
            kill_running()
        self._ex.shutdown(wait=True, cancel_futures=cancel)


class DaskPool(Pool):
    """Tasks on a Dask distributed cluster: ``scheduler`` is its address
    (``tcp://host:8786``), or ``local`` for a ``LocalCluster`` of ``workers`` processes here."""

    def __init__(self, scheduler: str, workers: int):
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:  # pragma: no cover - dask is a dependency
            raise SystemExit(f"--scheduler needs dask.distributed ({e}); pip install 'dask[distributed]'")
        self.cluster = None
        if scheduler == "local":
            self.cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            self.client = Client(scheduler, timeout=60)
        nthreads = self.client.nthreads()
        if not nthreads:
            self.client.wait_for_workers(1, timeout=300)
            nthreads = self.client.nthreads()
        super().__init__(slots=max(1, sum(nthreads.values())))
        self._futures: list = []
        self._asked = time.monotonic()

    def prepare(self, bundle: Bundle):
        return self.client.scatter(bundle, broadcast=True, hash=False)

    def submit(self, bundle_ref, task: Task):
        fut = self.client.submit(run_task, bundle_ref, task, pure=False)
        self._futures.append(fut)
        return fut

    def running_now(self, pending: int) -> int:
        if time.monotonic() - self._asked > 10:  # workers come and go (SLURM jobs start, end)
            self._asked = time.monotonic()
            self.slots = max(1, sum(self.client.nthreads().values()))
        return min(pending, self.slots)

    def close(self, cancel: bool = False) -> None:
        if cancel:
            self.client.cancel([f for f in self._futures if not f.done()])
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_pool(workers: int | None = None, scheduler: str | None = None) -> Pool:
    workers = workers or default_workers()
    if scheduler:
        return DaskPool(scheduler, workers)
    return LocalPool(workers)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
