"""Run a submission's Jupyter kernel inside a bubblewrap sandbox.

What the student's code sees and may do:

- the file system: the system folders, the Python installation and the ``course``
  package, all read-only; one writable place, a size-limited tmpfs at ``/tmp``
  (:attr:`Limits.disk_mb`) holding its home (``/tmp/home``), its working directory
  (``/tmp/work``: empty, plus read-only copies of the assignment's data files) and the
  kernel's sockets; a small tmpfs at ``/dev/shm`` (:attr:`Limits.shm_mb`). No host folder
  is writable: whatever the code writes, links or deletes vanishes with the sandbox, so the
  grader's later steps (feedback, gradebook) never see it. Not ``source/``, ``solutions/``,
  ``autograder/``, the gradebook, or any other student's files: they do not exist there.
- no network (a fresh network namespace with only a loopback device), its own PID, IPC,
  UTS and cgroup namespaces, a new session (no terminal injection), no capabilities, no
  setuid (``no_new_privs``);
- as root, the kernel runs as an unprivileged uid of its own (no passwd entry, a fresh
  one per kernel), so the process rlimit counts only that kernel's processes; otherwise
  as the calling user;
- resource limits (:class:`Limits`): as root where a memory and a pids cgroup controller
  are writable (v1 or v2), each kernel gets a cgroup of its own whose memory limit covers
  all its processes *and* the tmpfs pages it writes (swap off where the knob exists), and
  whose pids limit covers all its processes and threads; always the rlimits: address
  space, processes, CPU seconds, file size, open files. :func:`describe_limits` says
  which are in force.

The kernel talks to the grader over Jupyter's ``ipc`` transport: TCP would not cross
the fresh network namespace. The kernel binds its Unix sockets in its own tmpfs
(``/tmp/.ipc``); the grader reaches them from outside through ``/proc/<pid>/root`` of a
process inside the sandbox, pins each socket with an ``O_PATH`` file descriptor (after
checking it *is* a socket, not a link planted by the student) and connects through
symlinks ``<private folder>/k-<port> -> /proc/<grader pid>/fd/<fd>``. The private folder
(0700, the grader's) also holds the connection file, bound read-only into the sandbox.
"""
from __future__ import annotations

import asyncio
import atexit
import errno
import functools
import itertools
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Float, Instance, Type, Unicode

SANDBOX_UID = 65534  # nobody: the default
_UID_BASE, _UID_SPAN = 200_000, 60_000  # per-kernel uids, so process limits never add up
_uid_counter = itertools.count()

#: The sandbox's file system layout (all inside the one writable tmpfs, except the
#: read-only connection file).
SANDBOX_TMP = "/tmp"
SANDBOX_HOME = "/tmp/home"
SANDBOX_WORK = "/tmp/work"
SANDBOX_IPC = "/tmp/.ipc"
SANDBOX_CONNECTION_FILE = "/run/jupyter/kernel.json"
#: Most files of the host working directory bound into ``/tmp/work`` (each is a mount).
MAX_WORKDIR_FILES = 2000
#: The cgroup folder (under the grader's own cgroup) that holds one cgroup per kernel.
CGROUP_NAME = "course-grader"


def fresh_uid() -> int:
    """A uid no other sandbox of this machine is likely to use right now: each kernel gets
    its own, so one submission's fork bomb cannot eat the process quota of another one
    graded in parallel (RLIMIT_NPROC counts per uid)."""
    return _UID_BASE + (os.getpid() * 7919 + next(_uid_counter) * 104729) % _UID_SPAN


@dataclass
class Limits:
    """Resource limits of one sandboxed kernel (and everything it starts)."""

    memory_mb: int = 8192  # address space per process (torch alone maps ~3.2 GB); with a
    #                        cgroup also all processes' memory plus the tmpfs files together
    processes: int = 256  # processes and threads of the sandbox (per uid; per cgroup too)
    cpu_s: int = 1800  # CPU seconds per process
    file_mb: int = 512  # largest file it may write
    open_files: int = 1024
    disk_mb: int = 512  # size of the writable tmpfs at /tmp (home, working dir, sockets)
    shm_mb: int = 128  # size of the tmpfs at /dev/shm (shared memory, DataLoader workers)


class SandboxUnavailable(RuntimeError):
    pass


class SandboxError(RuntimeError):
    """A sandboxed kernel could not be started or set up."""


def _ro_paths() -> list[str]:
    """Read-only folders the kernel needs: the Python installation and the course package."""
    paths = {
        sys.prefix, sys.base_prefix, sys.exec_prefix,
        sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
        os.path.dirname(os.path.realpath(sys.executable)),
        _course_dir(),
    }
    paths = {os.path.realpath(p) for p in paths if p and os.path.exists(p)} | {p for p in paths if p and os.path.exists(p)}
    # drop paths inside others (binding a parent covers them)
    keep = sorted(paths)
    return [p for p in keep if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in keep)]


def _course_dir() -> str:
    """The folder of the ``course`` package the grader imported."""
    import course

    return str(Path(course.__file__).resolve().parent)


def _course_parent() -> str:
    """The folder the grader imported the ``course`` package from (only ``course`` itself is
    bound there in the sandbox)."""
    return str(Path(_course_dir()).parent)


def workdir_files(workdir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The sub-folders and regular files of ``workdir`` (relative paths) that the sandbox
    sees, read-only, in ``/tmp/work``: no links (neither followed nor copied), no
    notebooks (the kernel runs them; it does not read them), nothing but regular files."""
    root = os.path.realpath(workdir)
    dirs: list[str] = []
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked folders
        rel_dir = os.path.relpath(dirpath, root)
        keep_dirs = []
        for d in sorted(dirnames):
            if not os.path.islink(os.path.join(dirpath, d)):
                keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for name in sorted(filenames):
            if name.endswith(".ipynb"):
                continue
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(os.path.normpath(os.path.join(rel_dir, name)))
        if len(files) > MAX_WORKDIR_FILES:
            raise SandboxError(f"{root} holds more than {MAX_WORKDIR_FILES} files to show the kernel "
                               "(each is a read-only mount); ship large data as an archive or a folder "
                               "outside the assignment")
    needed = {os.path.dirname(f) for f in files}
    for f in list(needed):
        while f:
            needed.add(f)
            f = os.path.dirname(f)
    dirs = sorted(d for d in needed if d)
    return dirs, sorted(files)


def bwrap_command(cmd: list[str], workdir: str | os.PathLike | None = None, limits: Limits | None = None,
                  env: dict[str, str] | None = None, uid: int = SANDBOX_UID, *,
                  cgroup: "KernelCgroup | None" = None,
                  ro_files: dict[str, str] | None = None, course: str | None = None) -> list[str]:
    """``cmd`` wrapped so that it runs sandboxed, in ``/tmp/work``.

    The only writable place is a tmpfs of ``limits.disk_mb`` at ``/tmp`` (plus a
    ``limits.shm_mb`` one at ``/dev/shm``). ``workdir`` (a host folder, never bound itself)
    lends its regular files, read-only, at the same relative paths under ``/tmp/work``.
    ``ro_files`` maps sandbox paths to host files bound read-only there. ``course`` (a host
    folder, :func:`autograder.student_copy.kernel_package`) is bound where the ``course``
    package lies, in its place. With ``cgroup`` the launched process joins that cgroup before
    bubblewrap starts.
    """
    limits = limits or Limits()
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise SandboxUnavailable("bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    args = [bwrap, "--die-with-parent", "--new-session",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    root = os.geteuid() == 0
    if not root:
        args.append("--unshare-user")
    for top in ("usr", "etc", "bin", "lib", "lib32", "lib64", "sbin", "opt"):
        p = "/" + top
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p) and top != "opt":
            args += ["--ro-bind", p, p]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(limits.shm_mb * 2**20), "--tmpfs", "/dev/shm",
             "--perms", "1777", "--size", str(limits.disk_mb * 2**20), "--tmpfs", SANDBOX_TMP,
             "--perms", "0777", "--dir", SANDBOX_HOME,
             "--perms", "0777", "--dir", SANDBOX_WORK,
             # root-owned and sticky: the kernel makes its sockets there but cannot swap the folder
             "--perms", "1777", "--dir", SANDBOX_IPC]
    ro = [p for p in _ro_paths() if not p.startswith(("/usr/", "/etc/"))]
    extra = dict(ro_files or {})
    if course is not None:  # mounted over the package's folder (or over its place inside a bound one)
        package = _course_dir()
        ro = [p for p in ro if p != package]
        extra[package] = course
    parents = sorted({str(q) for p in ro + list(extra) for q in Path(p).parents
                      if str(q) not in ("/", SANDBOX_TMP) and not str(q).startswith(SANDBOX_WORK)})
    for d in parents:  # traversable by the unprivileged user
        args += ["--perms", "0755", "--dir", d]
    for p in ro:
        args += ["--ro-bind", p, p]
    if workdir is not None:
        host = os.path.realpath(workdir)
        dirs, files = workdir_files(host)
        for d in dirs:
            args += ["--perms", "0777", "--dir", f"{SANDBOX_WORK}/{d}"]
        for f in files:
            args += ["--ro-bind", os.path.join(host, f), f"{SANDBOX_WORK}/{f}"]
    for dest, src in sorted(extra.items()):
        args += ["--ro-bind", os.path.realpath(src), dest]
    args += ["--remount-ro", "/"]  # the sandbox's own root: nothing may be added to it
    args += ["--chdir", SANDBOX_WORK, "--clearenv"]
    base_env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_HOME, "LANG": "C.UTF-8", "MPLCONFIGDIR": SANDBOX_HOME + "/.mpl",
        "TMPDIR": SANDBOX_TMP, "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
        # the kernel imports the very `course` the grader imported (bound read-only above), also
        # where the grader found it through PYTHONPATH rather than the installed package
        "PYTHONPATH": _course_parent(),
    }
    for k, v in {**base_env, **(env or {})}.items():
        args += ["--setenv", k, v]
    args.append("--")
    if root:
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--no-new-privs", "--bounding-set=-all", "--"]
    limit = ["prlimit", f"--as={limits.memory_mb * 2**20}", f"--nproc={limits.processes}",
             f"--cpu={limits.cpu_s}", f"--fsize={limits.file_mb * 2**20}", f"--nofile={limits.open_files}", "--"]
    full = limit + args + list(cmd)
    return cgroup.wrap(full) if cgroup is not None else full


# -- cgroups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupSupport:
    """Where this process may create per-kernel cgroups: ``version`` 1 (one folder per
    controller: ``memory``, ``pids``) or 2 (one folder, both controllers)."""

    version: int
    bases: tuple[Path, ...]  # the course-grader folders (v1: memory's, then pids'; v2: one)


def _read(path: str | os.PathLike) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str | os.PathLike, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for the unified hierarchy) -> this process's cgroup path."""
    out: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """v1 controller -> (mount point, mount root), from /proc/self/mountinfo."""
    out: dict[str, tuple[str, str]] = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) < 3 or rfields[0] != "cgroup":
            continue
        mroot, mpoint = fields[3], fields[4].replace("\\040", " ")
        for opt in rfields[2].split(","):
            out.setdefault(opt, (mpoint, mroot))
    return out


def _probe(bases: list[Path], files: list[str]) -> None:
    """Create the course-grader folders and one throw-away child with a limit written."""
    probe_name = f"probe-{os.getpid()}-{threading.get_ident() % 10_000}"
    made = []
    try:
        for base, f in zip(bases, files):
            base.mkdir(exist_ok=True)
            child = base / probe_name
            child.mkdir()
            made.append(child)
            _write(child / f, _read(child / f).strip() or "max")
    finally:
        for child in made:
            try:
                child.rmdir()
            except OSError:
                pass


@functools.lru_cache(maxsize=1)
def cgroup_support() -> tuple[CgroupSupport | None, str]:
    """(where to make per-kernel cgroups, "") or (None, why not)."""
    if sys.platform != "linux":
        return None, "not Linux"
    if os.geteuid() != 0:
        return None, "not running as root"
    try:
        own = _own_cgroups()
        unified = Path("/sys/fs/cgroup")
        if (unified / "cgroup.controllers").exists():  # pure v2
            ctrls = _read(unified / "cgroup.controllers").split()
            if not {"memory", "pids"} <= set(ctrls):
                return None, "cgroup v2 without the memory and pids controllers"
            parent = unified / own.get("", "/").lstrip("/")
            if not {"memory", "pids"} <= set(_read(parent / "cgroup.controllers").split()):
                return None, f"cgroup v2: memory and pids are not delegated to {parent}"
            try:
                _write(parent / "cgroup.subtree_control", "+memory +pids")
            except OSError as e:
                return None, (f"cgroup v2: cannot enable memory and pids below {parent} "
                              f"({e.strerror}; the grader would have to run in a leaf cgroup of its own)")
            base = parent / CGROUP_NAME
            base.mkdir(exist_ok=True)
            _write(base / "cgroup.subtree_control", "+memory +pids")
            _probe([base], ["memory.max"])
            return CgroupSupport(2, (base,)), ""
        mounts = _cgroup_mounts()
        bases = []
        for ctrl in ("memory", "pids"):
            if ctrl not in mounts or ctrl not in own:
                return None, f"no cgroup {ctrl} controller mounted"
            mpoint, mroot = mounts[ctrl]
            path = own[ctrl]
            if mroot != "/" and (path + "/").startswith(mroot.rstrip("/") + "/"):
                path = path[len(mroot.rstrip("/")):]
            bases.append(Path(mpoint) / path.lstrip("/") / CGROUP_NAME)
        _probe(bases, ["memory.limit_in_bytes", "pids.max"])
        return CgroupSupport(1, tuple(bases)), ""
    except OSError as e:
        return None, f"cgroups not writable ({e.strerror or e}: {getattr(e, 'filename', '') or ''})"


_live_cgroups: set["KernelCgroup"] = set()
_live_lock = threading.Lock()
_cg_counter = itertools.count()
_swept = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KernelCgroup:
    """The cgroup of one sandboxed kernel: memory (incl. its tmpfs pages, no swap) and
    process limits over everything it starts; killed and removed by :meth:`remove`."""

    def __init__(self, support: CgroupSupport, name: str):
        self.support = support
        self.name = name
        self.dirs = [base / name for base in support.bases]

    @classmethod
    def create(cls, limits: Limits, tag: int | str = "") -> "KernelCgroup | None":
        """A new cgroup with ``limits``; None where cgroups are not available here."""
        support, _ = cgroup_support()
        if support is None:
            return None
        _sweep_stale(support)
        name = f"{os.getpid()}-{next(_cg_counter)}" + (f"-{tag}" if tag != "" else "")
        cg = cls(support, name)
        try:
            for d in cg.dirs:
                d.mkdir()
            with _live_lock:
                _live_cgroups.add(cg)
            mem = str(limits.memory_mb * 2**20)
            if support.version == 1:
                mdir, pdir = cg.dirs
                _write(mdir / "memory.limit_in_bytes", mem)
                if (mdir / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no swap at all
                    _write(mdir / "memory.memsw.limit_in_bytes", mem)
                elif (mdir / "memory.swappiness").exists():
                    _write(mdir / "memory.swappiness", "0")
                _write(pdir / "pids.max", str(limits.processes))
            else:
                d = cg.dirs[0]
                _write(d / "memory.max", mem)
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(limits.processes))
        except OSError as e:
            cg.remove()
            raise SandboxError(f"cannot set up the kernel's cgroup {cg.dirs[0]}: {e}") from e
        return cg

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` run by a shell that first moves itself into this cgroup (then execs, so
        everything ``cmd`` starts is inside; if joining fails, nothing runs: exit 125)."""
        procs = " ".join(shlex.quote(str(d / "cgroup.procs")) for d in self.dirs)
        script = f'for f in {procs}; do echo $$ > "$f" || exit 125; done; exec "$@"'
        return ["/bin/sh", "-c", script, "sandbox-cgroup", *cmd]

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out |= {int(p) for p in _read(d / "cgroup.procs").split()}
            except OSError:
                pass
        return out

    def memory_peak(self) -> int | None:
        """Highest memory use so far, in bytes (None if unknown)."""
        d = self.dirs[0]
        for f in ("memory.max_usage_in_bytes", "memory.peak"):
            try:
                return int(_read(d / f))
            except (OSError, ValueError):
                pass
        return None

    def oom_kills(self) -> int:
        """How many processes the out-of-memory killer stopped in this cgroup."""
        d = self.dirs[0]
        for f in ("memory.oom_control", "memory.events"):
            try:
                for line in _read(d / f).splitlines():
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
            except (OSError, ValueError):
                pass
        return 0

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup until none is left; True if it is empty."""
        kill_file = self.dirs[0] / "cgroup.kill"
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            if self.support.version == 2 and kill_file.exists():
                try:
                    _write(kill_file, "1")
                except OSError:
                    pass
            else:
                for pid in pids:
                    _kill_member(pid, self)
            time.sleep(0.01)

    def remove(self, timeout: float = 5.0) -> bool:
        """Kill what is left in the cgroup and delete it; True if it is gone."""
        self.kill(timeout)
        deadline = time.monotonic() + timeout
        gone = True
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        gone = False
                        break
                    self.kill(0.5)
                    time.sleep(0.02)
        if gone:
            with _live_lock:
                _live_cgroups.discard(self)
        return gone

    def __repr__(self) -> str:
        return f"KernelCgroup({', '.join(map(str, self.dirs))})"


def _kill_member(pid: int, cg: KernelCgroup) -> None:
    """SIGKILL ``pid`` only if it still is in ``cg`` (a pidfd pins the process, so a
    recycled pid is never hit)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        if pid in cg.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return
    try:
        if pid in cg.pids():
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep_stale(support: CgroupSupport) -> None:
    global _swept
    if not _swept:
        _swept = True
        remove_stale_cgroups(support)


def remove_stale_cgroups(support: CgroupSupport | None = None) -> None:
    """Kill and remove the kernel cgroups left behind by graders that are gone (a worker
    SIGKILLed at its time limit cannot clean up; each new grader process sweeps once)."""
    support = support or cgroup_support()[0]
    if support is None:
        return
    try:
        names = {p.name for base in support.bases for p in base.iterdir() if p.is_dir()}
    except OSError:
        return
    for name in names:
        m = re.match(r"(?:probe-)?(\d+)-\d+", name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            KernelCgroup(support, name).remove(timeout=1.0)


@atexit.register
def _remove_leftover_cgroups() -> None:
    with _live_lock:
        left = list(_live_cgroups)
    for cg in left:
        cg.remove(timeout=1.0)


def describe_limits(limits: Limits | None = None) -> str:
    """One line: which limits a sandboxed kernel gets on this machine."""
    limits = limits or Limits()
    support, why = cgroup_support()
    files = (f"{limits.disk_mb} MiB of files in /tmp + {limits.shm_mb} MiB in /dev/shm "
             "(tmpfs; no host folder writable)")
    rl = (f"address space {limits.memory_mb} MiB per process, CPU {limits.cpu_s} s per process, "
          f"files up to {limits.file_mb} MiB each, {limits.open_files} open files")
    if support is not None:
        v = f"cgroup v{support.version}"
        return (f"memory {limits.memory_mb} MiB per kernel incl. its files ({v}), "
                f"{limits.processes} processes and threads per kernel ({v}), {files}, {rl}")
    return (f"no per-kernel memory limit ({why}: memory is limited per process only, files "
            f"in tmpfs are not counted), {limits.processes} processes per kernel (rlimit, one uid "
            f"per kernel{'' if os.geteuid() == 0 else ': not as root, shared with your own processes'}), "
            f"{files}, {rl}")


@functools.lru_cache(maxsize=1)
def check_available() -> str | None:
    """None if a sandboxed Python starts here; otherwise why not."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = bwrap_command([sys.executable, "-c", "import course, socket; print('ok')"], tmp)
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except SandboxUnavailable as e:
        return str(e)
    except (OSError, subprocess.SubprocessError, SandboxError) as e:
        return f"bubblewrap could not start: {e}"
    if r.returncode != 0 or "ok" not in r.stdout:
        return f"bubblewrap could not start a sandboxed Python (exit {r.returncode}): {r.stderr.strip()[:500]}"
    return None


# -- finding the sandbox from outside ----------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    found_file = False
    for tid in tasks:
        try:
            kids += [int(c) for c in _read(f"/proc/{pid}/task/{tid}/children").split()]
            found_file = True
        except OSError:
            pass
    if found_file:
        return kids
    for entry in os.listdir("/proc"):  # no CONFIG_PROC_CHILDREN: scan
        if entry.isdigit() and _ppid(f"/proc/{entry}/stat") == pid:
            kids.append(int(entry))
    return kids


def _ppid(stat_path: str, dir_fd: int | None = None) -> int | None:
    try:
        fd = os.open(stat_path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            data = os.read(fd, 4096).decode(errors="replace")
        finally:
            os.close(fd)
        return int(data.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def open_sandbox_dir(launcher_pid: int, path: str = SANDBOX_IPC, owner: int | None = None) -> int | None:
    """An ``O_PATH`` descriptor of folder ``path`` as seen inside the sandbox launched as
    ``launcher_pid`` (bubblewrap), or None while the sandbox is not set up yet.

    The sandbox is bubblewrap's child once its root differs from ours. A ``/proc/<pid>``
    descriptor pins that process (a recycled pid cannot be confused with it), the folder
    must be a real folder (no link), owned by ``owner`` if given."""
    our_root = os.stat("/")
    for child in _children(launcher_pid):
        try:
            proc_fd = os.open(f"/proc/{child}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _ppid("stat", dir_fd=proc_fd) != launcher_pid:
                continue
            root = os.stat("root", dir_fd=proc_fd)
            if (root.st_dev, root.st_ino) == (our_root.st_dev, our_root.st_ino):
                continue  # not pivoted into the sandbox yet
            try:
                fd = os.open("root" + path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=proc_fd)
            except OSError:
                continue  # bubblewrap is still building the sandbox
            st = os.fstat(fd)
            if owner is not None and st.st_uid != owner:
                os.close(fd)
                raise SandboxError(f"{path} in the sandbox is owned by uid {st.st_uid}, not {owner}")
            return fd
        finally:
            os.close(proc_fd)
    return None


def open_socket(dir_fd: int, name: str, owner: int | None = None) -> int | None:
    """An ``O_PATH`` descriptor of Unix socket ``name`` in ``dir_fd``; None if it does not
    exist yet; :class:`SandboxError` if it is anything but a socket (say, a planted link)."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode) or (owner is not None and st.st_uid != owner):
        os.close(fd)
        raise SandboxError(f"{name} in the sandbox is not the kernel's socket (mode {oct(st.st_mode)}, "
                           f"uid {st.st_uid})")
    return fd


def remove_stale_private_dirs(root: str | None = None) -> None:
    """Delete the private folders (``cg<pid>-*``, ours, 0700) of graders that are gone."""
    root = root or _private_root()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        m = re.fullmatch(r"cg(\d+)-\w+", entry.name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            shutil.rmtree(entry.path, ignore_errors=True)


_private_swept = False


def _sweep_private_once() -> None:
    global _private_swept
    if not _private_swept:
        _private_swept = True
        remove_stale_private_dirs()


def _private_root() -> str:
    """A short folder for the private folders: Unix socket paths must stay under ~100 bytes."""
    for d in ("/tmp", tempfile.gettempdir()):
        if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK) and len(d) < 60:
            return d
    return tempfile.gettempdir()


#: Largest single message frame the grader accepts from a sandboxed kernel: a larger one is
#: dropped by ZeroMQ before it is read into memory (the grading agent's replies are at most
#: ~86 MB, see autograder.wire.MAX_BYTES; no notebook output needs more).
MAX_MESSAGE_BYTES = 128 * 2**20


class _LimitedContext(zmq.asyncio.Context):
    """A ZeroMQ context whose sockets refuse inbound messages over MAX_MESSAGE_BYTES."""

    def socket(self, socket_type, *args, **kwargs):
        sock = super().socket(socket_type, *args, **kwargs)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        return sock


class LimitedKernelClient(AsyncKernelClient):
    """The grader's client of a sandboxed kernel: a kernel cannot make the grader hold a
    gigabyte-sized message in memory (it is dropped unread, see MAX_MESSAGE_BYTES)."""

    def _context_default(self) -> zmq.asyncio.Context:
        self._created_context = True
        return _LimitedContext()


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel sandboxed, talking over ``ipc``.

    Each start (a restart too) gets a fresh uid and, where available, a cgroup of its own;
    the private folder (connection file, links to the pinned sockets) lives until the
    manager's final cleanup, so the socket paths clients use stay the same across restarts.
    """

    limits = Instance(Limits, args=())
    client_class = DottedObjectName("autograder.sandbox.LimitedKernelClient")
    client_factory = Type(klass=LimitedKernelClient)
    sandbox_start_timeout = Float(60.0, help="Seconds the sandboxed kernel may take to open its sockets.",
                                  config=True)
    course_package = Unicode("", help="A folder bound in place of the course package (its answers withheld: "
                                      "autograder.student_copy.kernel_package); empty: the package itself.",
                             config=True)

    _private: str | None = None
    _cgroup: KernelCgroup | None = None

    # -- start ---------------------------------------------------------------------------------
    async def _async_pre_start_kernel(self, **kw):
        cwd = kw.get("cwd") or os.getcwd()
        # bwrap starts the kernel in a new session, out of reach of a SIGINT to our
        # process group: interrupt over the control channel instead
        self.kernel_spec.interrupt_mode = "message"
        self._uid = fresh_uid()
        self._release_sandbox()  # whatever a previous start left
        if not self._private or not os.path.isdir(self._private):
            _sweep_private_once()  # what graders killed at their time limit left
            self._private = tempfile.mkdtemp(prefix=f"cg{os.getpid()}-", dir=_private_root())  # 0700, ours
        self.transport = "ipc"
        self.cache_ports = False
        self.ip = SANDBOX_IPC + "/k"  # as the kernel sees it; the grader's view is set once it runs
        self.connection_file = os.path.join(self._private, "kernel.json")
        env = dict(kw.get("env") or {})
        keep = {k: v for k, v in env.items()
                if k in ("COURSE_PROFILE", "NBGRADER_EXECUTION", "MPLBACKEND", "OMP_NUM_THREADS", "PYTHONHASHSEED")}
        keep.setdefault("NBGRADER_EXECUTION", "autograde")
        self._sandbox_env = keep
        self._sandbox_cwd = cwd
        try:
            self._cgroup = KernelCgroup.create(self.limits, self._uid)
            return await super()._async_pre_start_kernel(**kw)
        except BaseException:
            self._release_sandbox()
            self._drop_private()
            raise

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        host_file = os.path.realpath(self.connection_file)
        if os.geteuid() == 0 and os.path.exists(host_file):
            os.chown(host_file, self._uid, self._uid)  # written 0600 by the grader, read by the kernel
        cmd = [a.replace(host_file, SANDBOX_CONNECTION_FILE) for a in cmd]
        return bwrap_command(cmd, self._sandbox_cwd, self.limits, self._sandbox_env, self._uid,
                             cgroup=self._cgroup, ro_files={SANDBOX_CONNECTION_FILE: host_file},
                             course=self.course_package or None)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            await self._attach_sockets()
        except BaseException:
            process = getattr(self.provisioner, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
            self._release_sandbox()
            self._drop_private()
            raise

    async def _attach_sockets(self) -> None:
        """Wait until the kernel has bound its sockets inside the sandbox, pin them, and
        point ``self.ip`` at links to them in the private folder."""
        process = self.provisioner.process
        root = os.geteuid() == 0
        ports = [self.shell_port, self.iopub_port, self.stdin_port, self.control_port, self.hb_port]
        fds: dict[int, int] = {}
        self._socket_fds = fds
        ipc_fd = None
        deadline = time.monotonic() + self.sandbox_start_timeout
        try:
            while True:
                code = process.poll()
                if code is not None:
                    raise SandboxError(f"the sandboxed kernel exited (code {code}) before opening its sockets"
                                       + (" (could not join its cgroup)" if code == 125 and self._cgroup else ""))
                if ipc_fd is None:
                    ipc_fd = open_sandbox_dir(process.pid, SANDBOX_IPC, owner=0 if root else None)
                if ipc_fd is not None:
                    for port in ports:
                        if port not in fds:
                            fd = open_socket(ipc_fd, f"k-{port}", owner=self._uid if root else None)
                            if fd is not None:
                                fds[port] = fd
                    if len(fds) == len(ports):
                        break
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"the sandboxed kernel did not open its sockets within {self.sandbox_start_timeout:g} s "
                        f"({'sandbox not found' if ipc_fd is None else f'{len(fds)} of {len(ports)} sockets'})")
                await asyncio.sleep(0.02)
        finally:
            if ipc_fd is not None:
                os.close(ipc_fd)
        me = os.getpid()
        for port, fd in fds.items():
            link = os.path.join(self._private, f"k-{port}")
            tmp = link + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(f"/proc/{me}/fd/{fd}", tmp)
            os.replace(tmp, link)
        self.ip = os.path.join(self._private, "k")

    # -- stop ----------------------------------------------------------------------------------
    def cleanup_ipc_files(self) -> None:
        """The sockets live (and die) in the sandbox's tmpfs; only our links are ours."""
        private = self._private
        if not private:
            return
        for port in self.ports:
            link = os.path.join(private, f"k-{port}")
            if os.path.islink(link):
                os.unlink(link)

    def _release_sandbox(self) -> None:
        """Kill everything left of the kernel's sandbox, drop its cgroup and socket pins."""
        for fd in getattr(self, "_socket_fds", {}).values():
            try:
                os.close(fd)  # (they pin the sandbox's tmpfs)
            except OSError:
                pass
        self._socket_fds = {}
        process = getattr(self.provisioner, "process", None) if self.provisioner else None
        if process is not None and process.poll() is None:
            process.kill()  # bubblewrap: the sandbox dies with it (--die-with-parent)
        cg, self._cgroup = self._cgroup, None
        if cg is not None and not cg.remove():
            self.log.warning("could not remove the kernel's cgroup %s", cg)
        if process is not None:
            process.poll()  # reap it if it is gone

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        self._release_sandbox()
        if not restart:
            self._drop_private()

    # AsyncKernelManager binds its public names to KernelManager's coroutines: rebind them
    # to ours, or nbclient's km.cleanup_resources() (after a kernel death) would skip them
    pre_start_kernel = _async_pre_start_kernel
    _launch_kernel = _async_launch_kernel
    cleanup_resources = _async_cleanup_resources

    def _drop_private(self) -> None:
        if self._private:
            private, self._private = self._private, None
            shutil.rmtree(private, ignore_errors=True)  # only our 0700 folder: links, connection file
        self.ip = SANDBOX_IPC + "/k"
