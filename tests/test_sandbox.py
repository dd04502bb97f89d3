"""The bubblewrap sandbox of autograder/sandbox.py, attacked directly (no nbgrader).

Fast: sandboxed ``python -c`` runs through :func:`bwrap_command`, and one kernel through
:class:`SandboxKernelManager` that runs code, survives ``os._exit`` by a restart and is
shut down. Nothing the sandbox writes may reach the host; memory (files in tmpfs
included) and processes are counted per kernel where cgroups are available.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from autograder import sandbox
from autograder.sandbox import (
    KernelCgroup, Limits, SandboxError, SandboxKernelManager, bwrap_command,
    cgroup_support, check_available, describe_limits, open_socket, workdir_files,
)

pytestmark = pytest.mark.skipif(check_available() is not None, reason=f"no sandbox: {check_available()}")

MiB = 2**20


def run_py(code: str, *args: str, workdir=None, limits: Limits | None = None, cgroup=None,
           ro_files=None, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = bwrap_command([sys.executable, "-c", textwrap.dedent(code), *args], workdir, limits,
                        cgroup=cgroup, ro_files=ro_files)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: type, mode, size, content or link target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(folder))] = ("link", os.readlink(p))
        elif p.is_dir():
            out[str(p.relative_to(folder))] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid)
        else:
            out[str(p.relative_to(folder))] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, p.read_bytes())
    return out


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A host working directory as nbgrader leaves it: a notebook, data files, and links."""
    w = tmp_path / "autograded" / "student" / "hw"
    (w / "data").mkdir(parents=True)
    (w / "hw.ipynb").write_text('{"cells": []}')
    (w / "table.csv").write_text("a,b\n1,2\n")
    (w / "data" / "x.txt").write_text("data file")
    (tmp_path / "secret.txt").write_text("not for the sandbox")
    os.symlink("../../../secret.txt", w / "leak.txt")
    os.symlink("../../..", w / "up")
    return w


WRITE_2GB = """
    import errno, os, sys
    path, written = sys.argv[1], 0
    chunk = b"x" * 2**20
    try:
        with open(path, "wb", buffering=0) as f:
            while written < 2 * 2**30:
                written += f.write(chunk)
        print("no error", written)
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno), written)
"""


@pytest.mark.parametrize("where, budget", [("big", "disk_mb"), ("/tmp/big", "disk_mb"),
                                           ("/tmp/home/big", "disk_mb"), ("/dev/shm/big", "shm_mb")])
def test_writing_2gb_stops_at_the_tmpfs_size_and_never_reaches_the_host_disk(workdir, where, budget):
    limits = Limits(disk_mb=96, shm_mb=48)
    before_files = snapshot(workdir)
    free_before = os.statvfs(workdir).f_bavail * os.statvfs(workdir).f_frsize
    r = run_py(WRITE_2GB, where, workdir=workdir, limits=limits)
    free_after = os.statvfs(workdir).f_bavail * os.statvfs(workdir).f_frsize
    assert r.returncode == 0, r.stderr
    code, written = r.stdout.split()
    size = getattr(limits, budget) * MiB
    assert code == "ENOSPC", r.stdout
    assert 0.75 * size <= int(written) <= size, f"{written} bytes written into a {size}-byte tmpfs"
    assert free_before - free_after < 16 * MiB, "the host's disk filled up"
    assert snapshot(workdir) == before_files


def test_cwd_is_tmpfs_with_read_only_data_files_and_nothing_else(workdir):
    before = snapshot(workdir)
    r = run_py("""
        import json, os
        out = {"cwd": os.getcwd(), "home": os.environ["HOME"],
               "files": sorted(os.path.join(d, f)[2:] for d, _, fs in os.walk(".") for f in fs)}
        out["csv"] = open("table.csv").read()
        for name in ["table.csv", "data/x.txt"]:
            try:
                open(name, "a").write("tampered")
                out[name] = "written"
            except OSError as e:
                out[name] = e.errno
        # what hostile submissions did to the host folder: links out, a replaced notebook, many files
        os.symlink("../../../autograder/checks/x.py", "leak.html")
        os.symlink("../../../gradebook.db", "hw.ipynb")
        os.makedirs("feedback/deep")
        for i in range(300):
            open(f"feedback/deep/f{i}", "w").write("x" * 1000)
        open("data/new.txt", "w").write("new")
        out["after"] = sorted(os.listdir("."))
        print(json.dumps(out))
    """, workdir=workdir)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cwd"] == "/tmp/work" and out["home"] == "/tmp/home"
    assert out["files"] == ["data/x.txt", "table.csv"], "notebooks and links must not be shown"
    assert out["csv"] == "a,b\n1,2\n"
    assert out["table.csv"] in (errno.EROFS, errno.EACCES) and out["data/x.txt"] in (errno.EROFS, errno.EACCES)
    assert "leak.html" in out["after"] and "hw.ipynb" in out["after"]
    assert snapshot(workdir) == before, "the sandbox changed the host's working directory"


def test_every_host_path_in_the_sandbox_is_read_only(workdir, tmp_path):
    conn = tmp_path / "conn.json"
    conn.write_text("{}")
    r = run_py("""
        import errno, json, os
        res = {}
        for line in open("/proc/self/mountinfo"):
            left, _, right = line.partition(" - ")
            fields = left.split()
            point, opts = fields[4], fields[5].split(",")
            if point in ("/tmp", "/dev", "/proc") or point.startswith(("/dev/", "/proc/")):
                continue
            target = point if not os.path.isdir(point) else os.path.join(point, ".probe")
            try:
                with open(target, "a") as f:
                    f.write("x")
                res[point] = [("ro" in opts), "WRITABLE"]
            except OSError as e:
                res[point] = [("ro" in opts), errno.errorcode.get(e.errno, str(e.errno))]
        print(json.dumps(res))
    """, workdir=workdir, ro_files={"/run/jupyter/kernel.json": str(conn)})
    assert r.returncode == 0, r.stderr
    mounts = json.loads(r.stdout)
    # the system, the Python installation, the course package, the data files, the connection file
    assert "/" in mounts and "/usr" in mounts and "/tmp/work/table.csv" in mounts
    assert "/run/jupyter/kernel.json" in mounts and any(m.startswith(sys.prefix) or sys.prefix.startswith(m)
                                                        for m in mounts)
    bad = {m: v for m, v in mounts.items() if not v[0] or v[1] == "WRITABLE"}
    assert not bad, f"writable or not read-only mounts in the sandbox: {bad}"
    assert all(v[1] in ("EROFS", "EACCES", "EPERM") for v in mounts.values()), mounts


def test_workdir_files_skip_links_and_notebooks(workdir):
    os.symlink("/etc", workdir / "data" / "etc")
    dirs, files = workdir_files(workdir)
    assert files == ["data/x.txt", "table.csv"] and dirs == ["data"]


def test_too_many_workdir_files_are_refused_not_dropped(workdir, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_WORKDIR_FILES", 3)
    for i in range(3):
        (workdir / f"f{i}.txt").write_text("x")
    with pytest.raises(SandboxError, match="more than 3 files"):
        bwrap_command(["true"], workdir)


def test_open_socket_refuses_a_planted_link(tmp_path):
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "k-1"))
    os.symlink("/run/docker.sock", tmp_path / "k-2")
    (tmp_path / "k-3").write_text("")
    dfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = open_socket(dfd, "k-1")
        assert fd is not None and stat.S_ISSOCK(os.fstat(fd).st_mode)
        os.close(fd)
        assert open_socket(dfd, "k-9") is None  # not there yet
        for name in ("k-2", "k-3"):
            with pytest.raises(SandboxError, match="not the kernel's socket"):
                open_socket(dfd, name)
    finally:
        os.close(dfd)
        srv.close()


def test_describe_limits_says_what_is_in_force():
    text = describe_limits(Limits(memory_mb=1000, disk_mb=300))
    assert "\n" not in text and "300 MiB of files" in text and "address space 1000 MiB" in text
    support, why = cgroup_support()
    if support is not None:
        assert f"memory 1000 MiB per kernel incl. its files (cgroup v{support.version})" in text
    else:
        assert why in text


def _need_cgroups():
    support, why = cgroup_support()
    if support is None:
        pytest.skip(f"no per-kernel cgroups here: {why}")
    return support


def test_memory_cgroup_counts_tmpfs_files(workdir):
    _need_cgroups()
    limits = Limits(memory_mb=512, disk_mb=2048, file_mb=4096)
    cg = KernelCgroup.create(limits, "test")
    try:
        r = run_py("""
            import errno, sys
            written, chunk = 0, b"x" * 2**20
            try:
                with open("/tmp/big", "wb", buffering=0) as f:
                    while written < 2**30:
                        written += f.write(chunk)
                        if written % (32 * 2**20) == 0:
                            print(written, flush=True)
                print("wrote 1 GiB", flush=True)
            except OSError as e:
                print(errno.errorcode.get(e.errno, e.errno), written, flush=True)
        """, workdir=workdir, limits=limits, cgroup=cg)
        lines = r.stdout.split()
        assert "wrote" not in r.stdout, "1 GiB of files fit in a 512 MiB memory limit"
        last = int(lines[-1]) if lines else 0
        assert last <= 512 * MiB
        killed = r.returncode != 0 and cg.oom_kills() >= 1
        refused = r.returncode == 0 and lines[-2] in ("ENOMEM", "ENOSPC", "EFAULT")
        assert killed or refused, (r.returncode, r.stdout[-300:], r.stderr[-300:])
        assert cg.memory_peak() is None or cg.memory_peak() <= 512 * MiB
    finally:
        assert cg.remove()
    assert not any(d.exists() for d in cg.dirs)


def test_process_limit_is_per_cgroup(workdir):
    _need_cgroups()
    limits = Limits(processes=40)
    cg = KernelCgroup.create(limits, "test")
    try:
        r = run_py("""
            import os, time
            n = 0
            for i in range(200):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(20)
                    os._exit(0)
                n += 1
            print(n, flush=True)
        """, workdir=workdir, limits=limits, cgroup=cg)
        assert r.returncode == 0, r.stderr
        assert 0 < int(r.stdout) < 40
    finally:
        assert cg.remove()  # kills the sleeping children too
    assert not any(d.exists() for d in cg.dirs)


def test_cgroups_of_a_dead_grader_are_swept(workdir):
    support = _need_cgroups()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no grader holds any more
    cg = KernelCgroup(support, f"{dead.pid}-0-test")
    for d in cg.dirs:
        d.mkdir()
    orphan = subprocess.Popen(cg.wrap(["sleep", "60"]))
    try:
        for _ in range(100):
            if cg.pids():
                break
            time.sleep(0.01)
        assert orphan.pid in cg.pids()
        sandbox.remove_stale_cgroups()
        assert orphan.wait(timeout=10) == -9
        assert not any(d.exists() for d in cg.dirs)
    finally:
        cg.remove()


def test_private_folders_of_a_dead_grader_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, mine, alive, foreign = (tmp_path / f"cg{dead.pid}-abc", tmp_path / f"cg{os.getpid()}-abc",
                                   tmp_path / "cg1-abc", tmp_path / "other")
    for d in (stale, mine, alive, foreign):
        d.mkdir(mode=0o700)
        (d / "kernel.json").write_text("{}")
    os.symlink(foreign, tmp_path / f"cg{dead.pid}-link")
    sandbox.remove_stale_private_dirs(str(tmp_path))
    assert not stale.exists()
    assert mine.exists() and alive.exists() and (foreign / "kernel.json").exists()


# -- one kernel, start to finish ----------------------------------------------------------------

HOSTILE = r"""
import os, json
res = {}
os.symlink("../../../autograder/checks/x.py", "leak.html")
os.symlink("../../../gradebook.db", "hw.ipynb")
for i in range(200):
    open(f"junk{i}", "w").write("x")
for name, act in [("rename_ipc", lambda: os.rename("/tmp/.ipc", "/tmp/ipc2")),
                  ("chmod_ipc", lambda: os.chmod("/tmp/.ipc", 0o777)),
                  ("write_conn", lambda: open("/run/jupyter/kernel.json", "a").write("x"))]:
    try:
        act()
        res[name] = "done"
    except OSError as e:
        res[name] = e.errno
# swap a socket for a link: the grader holds the socket itself, not its name
os.rename("/tmp/.ipc/k-1", "/tmp/.ipc/moved")
os.symlink("/run/docker.sock", "/tmp/.ipc/k-1")
print(json.dumps(res))
"""


async def _execute(kc, code: str, timeout: float = 60) -> tuple[dict, str]:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

    reply = await kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    return reply["content"], "".join(out)


async def _kernel_lifecycle(workdir: Path, end: str) -> dict:
    km = SandboxKernelManager(kernel_name="python3")
    await km.start_kernel(cwd=str(workdir))
    private = Path(km.connection_file).parent
    facts: dict = {"private_mode": stat.S_IMODE(private.stat().st_mode), "cgroups": []}
    facts["cgroups"].append(km._cgroup)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        _, facts["where"] = await _execute(kc, "import os; x = 41; print(os.getcwd(), os.getuid())")
        _, facts["hostile"] = await _execute(kc, HOSTILE)
        # a second client (with a session id of its own: clients of one session clash)
        # connects through the pinned sockets, not through their (swapped) names
        session = km.session.clone()
        session.session = uuid.uuid4().hex
        kc2 = km.client(session=session)
        kc2.start_channels()
        try:
            await kc2.wait_for_ready(timeout=30)
            _, facts["still"] = await _execute(kc2, "print(x + 1)", timeout=30)
        finally:
            kc2.stop_channels()
        # interrupt (over the control channel): a busy loop becomes KeyboardInterrupt
        # (stop_on_error=False: else ipykernel aborts the next request if it comes too soon)
        msg_id = kc.execute("print('spinning', flush=True)\nwhile True:\n    pass", stop_on_error=False)
        while True:  # interrupt only once the loop runs
            msg = await kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        await km.interrupt_kernel()
        reply = await kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = await kc.get_shell_msg(timeout=30)
        facts["interrupted"] = reply["content"].get("ename")
        # death: os._exit, then a restart (a new sandbox, uid and cgroup; the same client)
        kc.execute("import os; os._exit(3)")
        for _ in range(300):
            if not await km.is_alive():
                break
            await asyncio.sleep(0.05)
        facts["dead"] = not await km.is_alive()
        await km.restart_kernel(now=True)
        facts["cgroups"].append(km._cgroup)
        await kc.wait_for_ready(timeout=60)
        _, facts["after_restart"] = await _execute(kc, "print(1 + 1)\nprint('x' in dir())")
        if end == "died":  # what nbclient does after a DeadKernelError: no shutdown, only cleanup
            kc.execute("import os; os._exit(3)")
            for _ in range(300):
                if not await km.is_alive():
                    break
                await asyncio.sleep(0.05)
    finally:
        kc.stop_channels()
        if end == "shutdown" or await km.is_alive():
            await km.shutdown_kernel(now=False)
        else:
            await km.cleanup_resources()
    facts["private_exists"] = private.exists()
    return facts


@pytest.mark.parametrize("cgroups, end", [(True, "shutdown"), (True, "died"), (False, "shutdown")],
                         ids=["cgroups-shutdown", "cgroups-died", "rlimits-only"])
def test_kernel_runs_survives_exit_by_restart_and_leaves_nothing(workdir, cgroups, end, monkeypatch):
    if cgroups:
        _need_cgroups()
    else:
        monkeypatch.setattr(sandbox, "cgroup_support", lambda: (None, "disabled by the test"))
    before = snapshot(workdir)
    facts = asyncio.run(asyncio.wait_for(_kernel_lifecycle(workdir, end), 240))
    assert facts["private_mode"] & 0o777 == 0o700  # (jupyter_client adds the sticky bit)
    cwd, uid = facts["where"].split()
    assert cwd == "/tmp/work" and (int(uid) != 0 or os.geteuid() != 0)
    res = json.loads(facts["hostile"].strip().splitlines()[-1])
    if os.geteuid() == 0:  # root's sticky folder: the socket folder stays put
        assert res["rename_ipc"] == errno.EPERM and res["chmod_ipc"] == errno.EPERM, res
    assert res["write_conn"] == errno.EROFS, res
    assert facts["still"].strip() == "42", "the grader lost the kernel when its socket name was swapped"
    assert facts["interrupted"] == "KeyboardInterrupt"
    assert facts["dead"]
    assert facts["after_restart"].split() == ["2", "False"]
    assert not facts["private_exists"], "the private connection folder was left behind"
    for cg in facts["cgroups"]:
        if cg is not None:
            assert not any(d.exists() for d in cg.dirs), f"{cg} was not removed"
    if cgroups:
        assert all(cg is not None for cg in facts["cgroups"])
        assert facts["cgroups"][0].name != facts["cgroups"][1].name
    else:
        assert facts["cgroups"] == [None, None]
    assert snapshot(workdir) == before, "the kernel changed the host's working directory"


def test_a_kernel_that_never_opens_its_sockets_fails_clearly_and_cleans_up(workdir):
    async def go():
        km = SandboxKernelManager(kernel_name="python3", sandbox_start_timeout=0.05)
        with pytest.raises(SandboxError, match="did not open its sockets within"):
            await km.start_kernel(cwd=str(workdir))
        return km
    km = asyncio.run(go())
    assert km._private is None and km._cgroup is None
    assert not os.path.exists(km.connection_file)
    assert km.provisioner.process.poll() is not None
