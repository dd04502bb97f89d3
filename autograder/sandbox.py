"""Run a submission's Jupyter kernel inside a bubblewrap sandbox.

What the student's code sees and may do:

- the file system: the system folders, the Python installation and the ``course``
  package, all read-only; its own working copy (the autograded folder of this one
  submission), read-write; a private ``/tmp``. Not ``source/``, ``solutions/``,
  ``autograder/``, the gradebook, or any other student's files: they do not exist there.
- no network (a fresh network namespace with only a loopback device), its own PID, IPC
  and UTS namespaces, a new session (no terminal injection), no capabilities, no
  setuid (``no_new_privs``);
- as root, the kernel runs as an unprivileged uid of its own (no passwd entry, a fresh
  one per kernel), so the process limit counts only that kernel's processes; otherwise
  as the calling user;
- resource limits (:class:`Limits`): address space, processes, CPU seconds, file size,
  open files.

The kernel talks to the grader over Jupyter's ``ipc`` transport (Unix sockets in the
working copy): TCP would not cross the fresh network namespace.
"""
from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Instance

SANDBOX_UID = 65534  # nobody: the default
_UID_BASE, _UID_SPAN = 200_000, 60_000  # per-kernel uids, so process limits never add up
_uid_counter = itertools.count()


def fresh_uid() -> int:
    """A uid no other sandbox of this machine is likely to use right now: each kernel gets
    its own, so one submission's fork bomb cannot eat the process quota of another one
    graded in parallel (RLIMIT_NPROC counts per uid)."""
    return _UID_BASE + (os.getpid() * 7919 + next(_uid_counter) * 104729) % _UID_SPAN


@dataclass
class Limits:
    """Resource limits of one sandboxed kernel (and everything it starts)."""

    memory_mb: int = 8192  # address space per process (torch alone maps ~3.2 GB)
    processes: int = 256  # processes and threads of the sandbox user
    cpu_s: int = 1800  # CPU seconds per process
    file_mb: int = 512  # largest file it may write
    open_files: int = 1024


class SandboxUnavailable(RuntimeError):
    pass


def _ro_paths() -> list[str]:
    """Read-only folders the kernel needs: the Python installation and the course package."""
    import course

    paths = {
        sys.prefix, sys.base_prefix, sys.exec_prefix,
        sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
        os.path.dirname(os.path.realpath(sys.executable)),
        str(Path(course.__file__).resolve().parent),
    }
    paths = {os.path.realpath(p) for p in paths if p and os.path.exists(p)} | {p for p in paths if p and os.path.exists(p)}
    # drop paths inside others (binding a parent covers them)
    keep = sorted(paths)
    return [p for p in keep if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in keep)]


def bwrap_command(cmd: list[str], workdir: str | os.PathLike, limits: Limits | None = None,
                  env: dict[str, str] | None = None, uid: int = SANDBOX_UID,
                  extra_rw: list[str] | None = None) -> list[str]:
    """``cmd`` wrapped so that it runs sandboxed with ``workdir`` as its only writable folder."""
    limits = limits or Limits()
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise SandboxUnavailable("bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    workdir = os.path.realpath(workdir)
    args = [bwrap, "--die-with-parent", "--new-session",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    root = os.geteuid() == 0
    if not root:
        args.append("--unshare-user")
    for top in ("usr", "etc", "bin", "lib", "lib32", "lib64", "sbin", "opt"):
        p = "/" + top
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p) and top in ("usr", "etc"):
            args += ["--ro-bind", p, p]
        elif os.path.isdir(p) and top != "opt":
            args += ["--ro-bind", p, p]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp",
             "--perms", "0777", "--dir", "/tmp/home"]
    ro = [p for p in _ro_paths() if not p.startswith(("/usr/", "/etc/"))]
    rw = [workdir, *(extra_rw or [])]
    parents = sorted({str(q) for p in ro + rw for q in Path(p).parents if str(q) not in ("/", "/tmp")})
    for d in parents:  # traversable by the unprivileged user
        args += ["--perms", "0755", "--dir", d]
    for p in ro:
        args += ["--ro-bind", p, p]
    for p in rw:
        args += ["--bind", p, p]
    args += ["--chdir", workdir, "--clearenv"]
    base_env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp/home", "LANG": "C.UTF-8", "MPLCONFIGDIR": "/tmp/home/.mpl",
        "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }
    for k, v in {**base_env, **(env or {})}.items():
        args += ["--setenv", k, v]
    args.append("--")
    if root:
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--no-new-privs", "--bounding-set=-all", "--"]
    limit = ["prlimit", f"--as={limits.memory_mb * 2**20}", f"--nproc={limits.processes}",
             f"--cpu={limits.cpu_s}", f"--fsize={limits.file_mb * 2**20}", f"--nofile={limits.open_files}", "--"]
    return limit + args + list(cmd)


def prepare_workdir(workdir: str | os.PathLike, uid: int = SANDBOX_UID) -> None:
    """Make the working copy (and only it) writable by the sandbox user."""
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(workdir):
        os.chown(dirpath, uid, uid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


@functools.lru_cache(maxsize=1)
def check_available() -> str | None:
    """None if a sandboxed Python starts here; otherwise why not."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepare_workdir(tmp)
            cmd = bwrap_command([sys.executable, "-c", "import course, socket; print('ok')"], tmp)
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except SandboxUnavailable as e:
        return str(e)
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap could not start: {e}"
    if r.returncode != 0 or "ok" not in r.stdout:
        return f"bubblewrap could not start a sandboxed Python (exit {r.returncode}): {r.stderr.strip()[:500]}"
    return None


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel sandboxed, talking over ``ipc``."""

    limits = Instance(Limits, args=())

    async def _async_pre_start_kernel(self, **kw):
        cwd = kw.get("cwd") or os.getcwd()
        # bwrap starts the kernel in a new session, out of reach of a SIGINT to our
        # process group: interrupt over the control channel instead
        self.kernel_spec.interrupt_mode = "message"
        self._uid = fresh_uid()
        # Unix socket paths must stay under ~100 bytes, which a course folder can exceed:
        # the sockets and the connection file live in a short private folder of their own
        self._ipc_dir = tempfile.mkdtemp(prefix="cg", dir="/tmp")
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc_dir, "k")
        self.connection_file = os.path.join(self._ipc_dir, "kernel.json")
        prepare_workdir(cwd, self._uid)
        prepare_workdir(self._ipc_dir, self._uid)
        env = dict(kw.get("env") or {})
        keep = {k: v for k, v in env.items()
                if k in ("COURSE_PROFILE", "NBGRADER_EXECUTION", "MPLBACKEND", "OMP_NUM_THREADS", "PYTHONHASHSEED")}
        keep.setdefault("NBGRADER_EXECUTION", "autograde")
        self._sandbox_env = keep
        self._sandbox_cwd = cwd
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if os.geteuid() == 0 and os.path.exists(self.connection_file):
            os.chown(self.connection_file, self._uid, self._uid)  # written 0600 by the grader
        return bwrap_command(cmd, self._sandbox_cwd, self.limits, self._sandbox_env, self._uid,
                             extra_rw=[self._ipc_dir])

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        shutil.rmtree(getattr(self, "_ipc_dir", ""), ignore_errors=True)
