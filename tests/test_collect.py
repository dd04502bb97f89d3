"""Collecting submissions (autograder/collect.py) from hostile folders and zips.

Every test builds real folders and zips (corrupted by patching their bytes) and checks the
invariants of every run: ids unique (also ignoring case) and sorted, short messages, and a
staging area that holds exactly the expected notebooks as regular files the grader wrote.
"""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import time
import unicodedata
import zipfile
from pathlib import Path

import pytest

import autograder.collect as collect_mod
from autograder.collect import CollectError, Limits, Submission, collect, student_id

NB = "toy.ipynb"
SECRET = "TOP-SECRET-7f3a"


def nb(tag: str) -> bytes:
    return json.dumps({"cells": [], "metadata": {"tag": tag}, "nbformat": 4, "nbformat_minor": 5}).encode()


def put(root: Path, rel: str, data: bytes = b"") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def make_zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def run(path: Path, staging: Path, names=(NB,), limits: Limits = Limits()) -> dict[str, Submission]:
    subs = collect(path, staging, list(names), limits)
    check_invariants(subs, staging)
    return {s.origin: s for s in subs}


def check_invariants(subs: list[Submission], staging: Path) -> None:
    ids = [s.student for s in subs]
    assert ids == sorted(ids) and len({i.casefold() for i in ids}) == len(ids), ids
    staged = set()
    for s in subs:
        assert len(s.problem) <= 300, s.problem
        assert SECRET not in s.problem
        if s.problem:
            assert all(p is None for p in s.notebooks.values()), s
        for name, p in s.notebooks.items():
            if p is not None:
                assert p == staging / s.student / name
                staged.add(p)
    on_disk = set()
    for dirpath, dirs, files in os.walk(staging):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), name
            if stat.S_ISREG(st.st_mode):
                assert st.st_nlink == 1
                on_disk.add(Path(dirpath) / name)
    assert on_disk == staged, "staging holds something else than the expected notebooks"


def patch_member(data: bytes, name: str, **fields: int) -> bytes:
    """Patch a member's fields in its local header and central directory record.

    fields: flag, method, crc, size, version (needed to extract; central record only), mode (unix mode).
    """
    buf = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    local = info.header_offset
    central = next(i for i in range(len(buf)) if buf[i:i + 4] == b"PK\x01\x02"
                   and buf[i + 46:i + 46 + len(info.orig_filename.encode())] == info.orig_filename.encode())
    for key, value in fields.items():
        if key == "flag":
            struct.pack_into("<H", buf, local + 6, value); struct.pack_into("<H", buf, central + 8, value)
        elif key == "method":
            struct.pack_into("<H", buf, local + 8, value); struct.pack_into("<H", buf, central + 10, value)
        elif key == "crc":
            struct.pack_into("<L", buf, local + 14, value); struct.pack_into("<L", buf, central + 16, value)
        elif key == "size":  # compressed and uncompressed
            struct.pack_into("<2L", buf, local + 18, value, value); struct.pack_into("<2L", buf, central + 20, value, value)
        elif key == "version":
            struct.pack_into("<B", buf, central + 6, value)
        elif key == "mode":
            struct.pack_into("<L", buf, central + 38, value << 16)
    return bytes(buf)


def member_data_offset(data: bytes, name: str) -> int:
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    n, m = struct.unpack_from("<2H", data, info.header_offset + 26)
    return info.header_offset + 30 + n + m


def corrupt_deflate(data: bytes, name: str) -> bytes:
    buf = bytearray(data)
    buf[member_data_offset(data, name)] = 0xFF  # BTYPE 11: reserved block type
    return bytes(buf)


# -- the ordinary case ----------------------------------------------------------------------

def test_folders_and_zips_are_collected_as_fresh_copies_of_the_notebooks_only(tmp_path):
    subs = tmp_path / "subs"
    alice = put(subs, "alice/hw/toy.ipynb", nb("alice"))
    put(subs, "alice/hw/data.csv", b"1,2")
    put(subs, "alice/other.ipynb", nb("not this one"))
    put(subs, "carol/renamed.ipynb", nb("carol"))            # the only notebook, under another name
    put(subs, "dave/notes.txt", b"forgot")
    (subs / "bob.zip").write_bytes(make_zip({"hw/toy.ipynb": nb("bob"), "hw/run.sh": b"rm -rf /"}))
    put(subs, "readme.txt", b"not a student")
    r = run(subs, tmp_path / "staging")
    assert sorted(r) == ["alice", "bob.zip", "carol", "dave"]
    assert [r[k].student for k in ("alice", "bob.zip", "carol", "dave")] == ["alice", "bob", "carol", "dave"]
    for origin, tag in [("alice", "alice"), ("bob.zip", "bob"), ("carol", "carol")]:
        copy = r[origin].notebooks[NB]
        assert not r[origin].problem and copy is not None and json.loads(copy.read_bytes())["metadata"]["tag"] == tag
    assert os.stat(r["alice"].notebooks[NB]).st_ino != os.stat(alice).st_ino
    assert r["dave"].notebooks == {NB: None} and not r["dave"].problem
    assert not (tmp_path / "staging" / "dave").exists()


def test_shallowest_match_wins_and_junk_folders_are_skipped(tmp_path):
    tree = {"__MACOSX/toy.ipynb": nb("mac"), ".ipynb_checkpoints/toy.ipynb": nb("ckpt"),
            "__pycache__/toy.ipynb": nb("pyc"), ".hidden/toy.ipynb": nb("dot"), "._toy.ipynb": nb("appledouble"),
            "a/b/toy.ipynb": nb("deep"), "a/toy.ipynb": nb("shallow"), "z/toy.ipynb": nb("tie")}
    subs = tmp_path / "subs"
    for rel, data in tree.items():
        put(subs / "folder", rel, data)
    (subs / "zipped.zip").write_bytes(make_zip(tree))
    r = run(subs, tmp_path / "staging")
    for origin in ("folder", "zipped.zip"):
        assert json.loads(r[origin].notebooks[NB].read_bytes())["metadata"]["tag"] == "shallow"


def test_single_notebook_fallback_only_with_one_expected_name(tmp_path):
    subs = tmp_path / "subs"
    put(subs, "alice/a.ipynb", nb("a"))
    put(subs, "bob/x.ipynb", nb("x"))
    r = run(subs, tmp_path / "staging", names=("a.ipynb", "b.ipynb"))
    assert r["alice"].notebooks["a.ipynb"] is not None and r["alice"].notebooks["b.ipynb"] is None
    assert r["bob"].notebooks == {"a.ipynb": None, "b.ipynb": None} and not r["bob"].problem


# -- links ----------------------------------------------------------------------------------

def test_symlinked_notebooks_are_refused_and_never_opened(tmp_path, monkeypatch):
    subs = tmp_path / "subs"
    host = put(tmp_path, "host/shadow", SECRET.encode())
    put(subs, "bob/toy.ipynb", nb(SECRET))
    (subs / "mallory").mkdir()
    (subs / "mallory/toy.ipynb").symlink_to(host)
    (subs / "eve").mkdir()
    (subs / "eve/toy.ipynb").symlink_to(subs / "bob/toy.ipynb")
    (subs / "trudy/hw").mkdir(parents=True)
    (subs / "trudy/hw/mine.ipynb").symlink_to(host)          # the only notebook, picked by the fallback
    opened = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    r = run(subs, tmp_path / "staging")
    for origin in ("mallory", "eve", "trudy"):
        assert r[origin].problem.endswith("is a symbolic link: submit the notebook file itself"), r[origin]
        assert r[origin].notebooks == {NB: None}
    assert "hw/mine.ipynb" in r["trudy"].problem
    assert r["bob"].notebooks[NB] is not None
    reads = [(p, f) for p, f in opened if not f & os.O_WRONLY]
    assert reads and all(f & os.O_NOFOLLOW for _, f in reads), "a read followed a link"
    assert not any("shadow" in p for p, _ in opened)


def test_symlinked_student_folder_or_zip_is_refused(tmp_path):
    subs = tmp_path / "subs"
    put(subs, "bob/toy.ipynb", nb(SECRET))
    (subs / "bob.zip").symlink_to(tmp_path / "nowhere")
    outside = put(tmp_path, "outside/toy.ipynb", nb(SECRET))
    (subs / "eve").symlink_to(outside.parent)
    (subs / "zed.zip").write_bytes(make_zip({NB: nb("zed")}))
    (subs / "zlink.zip").symlink_to(subs / "zed.zip")
    r = run(subs, tmp_path / "staging")
    for origin in ("eve", "zlink.zip"):
        assert "is a symbolic link" in r[origin].problem and r[origin].notebooks == {NB: None}
    assert r["zed.zip"].notebooks[NB] is not None
    assert "collision" in r["bob"].problem  # bob/ and the link bob.zip: both named, neither graded


def test_symlink_members_of_zips_are_refused(tmp_path):
    subs = tmp_path / "subs"
    data = make_zip({NB: b"/etc/shadow", "other.txt": b"x"}, zipfile.ZIP_STORED)
    (subs).mkdir()
    (subs / "linky.zip").write_bytes(patch_member(data, NB, mode=0o120777))
    classzip = make_zip({"alice/toy.ipynb": b"../bob/toy.ipynb", "bob/toy.ipynb": nb("bob")})
    (tmp_path / "class.zip").write_bytes(patch_member(classzip, "alice/toy.ipynb", mode=0o120777))
    r = run(subs, tmp_path / "staging")
    assert "toy.ipynb is a symbolic link" in r["linky.zip"].problem and "shadow" not in r["linky.zip"].problem
    r = run(tmp_path / "class.zip", tmp_path / "staging2")
    assert "symbolic link" in r["alice"].problem and r["bob"].notebooks[NB] is not None


def test_special_files_are_refused_without_blocking(tmp_path):
    subs = tmp_path / "subs"
    (subs / "fifo").mkdir(parents=True)
    os.mkfifo(subs / "fifo/toy.ipynb")  # opening it for reading without O_NONBLOCK would hang
    put(subs, "bob/toy.ipynb", nb("bob"))
    t0 = time.perf_counter()
    r = run(subs, tmp_path / "staging")
    assert time.perf_counter() - t0 < 2
    assert r["fifo"].problem == "toy.ipynb is not a regular file"
    assert r["bob"].notebooks[NB] is not None


# -- bad zips stay one student's problem ---------------------------------------------------------

def _bad_zips() -> dict[str, tuple[bytes, str]]:
    good = make_zip({"hw/toy.ipynb": nb("x") * 50, "hw/readme.txt": b"hello"})
    stored = make_zip({"toy.ipynb": nb("x")}, zipfile.ZIP_STORED)
    return {
        "encrypted": (patch_member(good, "hw/toy.ipynb", flag=0x1), "is encrypted"),
        "method99": (patch_member(good, "hw/toy.ipynb", method=99), "compression method 99"),
        "bzip2": (make_zip({"toy.ipynb": nb("x")}, zipfile.ZIP_BZIP2), "compression method 12"),
        "lzma": (make_zip({"toy.ipynb": nb("x")}, zipfile.ZIP_LZMA), "compression method 14"),
        "inflate": (corrupt_deflate(good, "hw/toy.ipynb"), "cannot be read from the zip (zlib.error: Error -3"),
        "crc": (patch_member(stored, "toy.ipynb", crc=0xDEADBEEF), "BadZipFile: Bad CRC-32"),
        "eof": (patch_member(stored, "toy.ipynb", size=len(stored) + 1000), "(EOFError)"),
        "version": (patch_member(stored, "toy.ipynb", version=99), "not a valid zip file (NotImplementedError"),
        "truncated": (good[: len(good) // 2], "not a valid zip file"),
        "garbage": (b"PK\x03\x04 not really a zip", "not a valid zip file"),
        "empty": (b"", "not a valid zip file"),
    }


@pytest.mark.parametrize("layout", ["folder", "class zip"])
def test_each_bad_zip_is_only_its_students_problem(tmp_path, layout):
    bad = _bad_zips()
    members = {f"{name}.zip": data for name, (data, _) in bad.items()}
    members |= {"honest.zip": make_zip({"toy.ipynb": nb("honest")}), "plain/toy.ipynb": nb("plain")}
    if layout == "folder":
        for rel, data in members.items():
            put(tmp_path / "subs", rel, data)
        path = tmp_path / "subs"
    else:
        path = tmp_path / "class.zip"
        path.write_bytes(make_zip({f"export/{rel}": data for rel, data in members.items()}))
    r = run(path, tmp_path / "staging")
    assert len(r) == len(bad) + 2
    for name, (_, message) in bad.items():
        assert message in r[f"{name}.zip"].problem, (name, r[f"{name}.zip"].problem)
    assert r["honest.zip"].notebooks[NB] is not None and r["plain"].notebooks[NB] is not None


def test_class_zip_member_failures_stay_with_their_student(tmp_path):
    data = make_zip({"alice/hw/toy.ipynb": nb("alice") * 20, "bob/toy.ipynb": nb("bob") * 20,
                     "carol/toy.ipynb": nb("carol") * 20, "dan/toy.ipynb": nb("dan")})
    data = corrupt_deflate(data, "bob/toy.ipynb")
    data = patch_member(data, "carol/toy.ipynb", flag=0x1)
    data = patch_member(data, "dan/toy.ipynb", method=99)
    (tmp_path / "class.zip").write_bytes(data)
    r = run(tmp_path / "class.zip", tmp_path / "staging")
    assert "cannot be read from the zip" in r["bob"].problem
    assert "is encrypted" in r["carol"].problem and "compression method 99" in r["dan"].problem
    assert r["alice"].notebooks[NB].read_bytes() == nb("alice") * 20


def test_class_zip_wrapper_folder_and_unusable_input(tmp_path):
    (tmp_path / "w.zip").write_bytes(make_zip({"export/": b"", "export/alice/toy.ipynb": nb("a"),
                                               "export/bob.zip": make_zip({NB: nb("b")}),
                                               "__MACOSX/export/._bob.zip": b"junk"}))
    r = run(tmp_path / "w.zip", tmp_path / "s1")
    assert sorted(r) == ["alice", "bob.zip"] and all(s.notebooks[NB] for s in r.values())
    (tmp_path / "one.zip").write_bytes(make_zip({"alice/toy.ipynb": nb("a")}))  # a notebook inside: no wrapper
    assert sorted(run(tmp_path / "one.zip", tmp_path / "s2")) == ["alice"]
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    for path in (tmp_path / "bad.zip", tmp_path / "missing"):
        with pytest.raises(CollectError):
            collect(path, tmp_path / "s3", [NB])


# -- bounded work ---------------------------------------------------------------------------

def test_folder_with_too_many_entries_is_refused_quickly(tmp_path):
    subs = tmp_path / "subs"
    many = subs / "many" / "junk"
    many.mkdir(parents=True)
    for i in range(20_000):
        (many / f"f{i}").touch()
    put(subs, "many/toy.ipynb", nb("x"))
    put(subs, "bob/toy.ipynb", nb("bob"))
    t0 = time.perf_counter()
    r = run(subs, tmp_path / "staging")
    assert time.perf_counter() - t0 < 2
    assert r["many"].problem == "many has more than 10000 files and folders"
    assert r["bob"].notebooks[NB] is not None


def test_folder_nested_too_deep_is_refused(tmp_path):
    subs = tmp_path / "subs"
    put(subs, "deep/" + "d/" * 20 + "toy.ipynb", nb("x"))
    put(subs, "ok/" + "d/" * 15 + "toy.ipynb", nb("x"))
    r = run(subs, tmp_path / "staging")
    assert r["deep"].problem == "deep has folders nested more than 16 deep"
    assert r["ok"].notebooks[NB] is not None


@pytest.fixture(scope="module")
def huge_zip() -> bytes:
    """100,000 empty members (zip64 end records) and a notebook."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(NB, nb("x"))
        for i in range(100_000):
            z.writestr(f"f{i}", b"")
    return buf.getvalue()


@pytest.mark.parametrize("layout", ["folder", "class zip"])
def test_zip_with_too_many_members_is_refused_unparsed(tmp_path, huge_zip, layout):
    if layout == "folder":
        put(tmp_path / "subs", "huge.zip", huge_zip)
        put(tmp_path / "subs", "bob/toy.ipynb", nb("bob"))
        path = tmp_path / "subs"
    else:
        path = tmp_path / "class.zip"
        path.write_bytes(make_zip({"huge.zip": huge_zip, "bob/toy.ipynb": nb("bob")}))
    t0 = time.perf_counter()
    r = run(path, tmp_path / "staging")
    assert time.perf_counter() - t0 < 3
    assert r["huge.zip"].problem == "huge.zip has more than 10000 files and folders"
    assert r["bob"].notebooks[NB] is not None


def test_zip_whose_end_record_understates_its_members_is_refused(tmp_path, monkeypatch):
    data = bytearray(make_zip({NB: nb("x"), **{f"f{i}": b"" for i in range(3_000)}}, zipfile.ZIP_STORED))
    struct.pack_into("<2H", data, len(data) - 22 + 8, 1, 1)  # the end record says: one member
    put(tmp_path / "subs", "liar.zip", bytes(data))
    parsed = []
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: parsed.append(1))
    r = run(tmp_path / "subs", tmp_path / "staging", limits=Limits(max_entries=1_000))
    assert r["liar.zip"].problem == "liar.zip has more than 1000 files and folders"
    assert not parsed, "zipfile parsed the central directory of an oversized zip"


def test_class_zip_groups_are_bounded_per_student(tmp_path):
    members = {f"many/f{i}": b"" for i in range(50)} | {"many/toy.ipynb": nb("m"), "bob/toy.ipynb": nb("b")}
    (tmp_path / "class.zip").write_bytes(make_zip(members))
    r = run(tmp_path / "class.zip", tmp_path / "staging", limits=Limits(max_entries=20))
    assert r["many"].problem == "many has more than 20 files and folders" and r["bob"].notebooks[NB]


def test_large_notebooks_are_refused_without_reading_them(tmp_path):
    subs = tmp_path / "subs"
    (subs / "sparse").mkdir(parents=True)
    with open(subs / "sparse/toy.ipynb", "wb") as f:
        f.truncate(200 * 2**20)  # a 200 MB file, sparse: reading it all would take a while
    zeros = make_zip({NB: bytes(64 * 2**20)})  # 64 MiB of zeros deflate to ~64 KB
    (subs / "bomb.zip").write_bytes(zeros)
    info = zipfile.ZipFile(io.BytesIO(zeros)).getinfo(NB)
    liar = bytearray(zeros)  # headers that understate the size: the stream is what counts
    central = zeros.rindex(b"PK\x01\x02")
    struct.pack_into("<L", liar, central + 24, 100)
    struct.pack_into("<L", liar, info.header_offset + 22, 100)
    (subs / "liar.zip").write_bytes(bytes(liar))
    put(subs, "ok/toy.ipynb", b"x" * (2**20))
    t0 = time.perf_counter()
    r = run(subs, tmp_path / "staging")
    assert time.perf_counter() - t0 < 2
    assert r["sparse"].problem == "toy.ipynb is larger than 20 MiB"
    assert r["bomb.zip"].problem == "toy.ipynb is larger than 20 MiB"
    assert "Bad CRC-32" in r["liar.zip"].problem  # the stream is cut at the claimed size, then its CRC fails
    assert r["ok"].notebooks[NB].stat().st_size == 2**20
    r = run(subs, tmp_path / "staging2", limits=Limits(notebook_bytes=1000))
    assert r["ok"].problem == "toy.ipynb is larger than 1000 bytes"


def test_read_stops_one_byte_past_the_limit(tmp_path, monkeypatch):
    class Endless:
        asked: list[int] = []

        def read(self, n: int = -1) -> bytes:
            assert n > 0
            self.asked.append(n)
            return b"x" * n

    with pytest.raises(Exception, match="larger than 20 MiB"):
        collect_mod._bounded(Endless(), 20 * 2**20, "toy.ipynb")
    assert sum(Endless.asked) == 20 * 2**20 + 1
    # a file whose fstat understates its size (it grows, or lies): the read decides
    put(tmp_path / "subs", "grow/toy.ipynb", b"x" * 5000)
    real_fstat = os.fstat

    def fstat(fd):
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 10,
                               int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    monkeypatch.setattr(os, "fstat", fstat)
    r = run(tmp_path / "subs", tmp_path / "staging", limits=Limits(notebook_bytes=1000))
    assert r["grow"].problem == "toy.ipynb is larger than 1000 bytes"


def test_nested_student_zip_is_bounded(tmp_path):
    inner = make_zip({NB: os.urandom(50_000)}, zipfile.ZIP_STORED)
    (tmp_path / "class.zip").write_bytes(make_zip({"big.zip": inner, "small.zip": make_zip({NB: nb("s")})}))
    r = run(tmp_path / "class.zip", tmp_path / "staging", limits=Limits(nested_zip_bytes=10_000))
    assert r["big.zip"].problem == "big.zip is larger than 10000 bytes"
    assert r["small.zip"].notebooks[NB] is not None


# -- ids ------------------------------------------------------------------------------------

def test_ids_keep_unicode_letters():
    assert student_id("Zoë") == "Zoë" and student_id("Zoé") == "Zoé"
    assert student_id(unicodedata.normalize("NFD", "Zoë")) == "Zoë"
    assert student_id("..a b/c") == "a_b_c" and student_id("...") == "student" and student_id("") == "student"
    assert student_id("jo.smith+1@uni-x.edu") == "jo.smith+1@uni-x.edu"
    assert len(student_id("x" * 300)) == 80


def test_distinct_names_stay_distinct_students(tmp_path):
    subs = tmp_path / "subs"
    put(subs, "Zoë/toy.ipynb", nb("zoë"))
    put(subs, "Zoé/toy.ipynb", nb("zoé"))
    r = run(subs, tmp_path / "staging")
    assert {s.student for s in r.values()} == {"Zoë", "Zoé"} and all(s.notebooks[NB] for s in r.values())


@pytest.mark.parametrize("a, b", [("alice", "Alice"), ("alice", "alice.zip"), ("a b", "a_b"),
                                  ("Zoë", unicodedata.normalize("NFD", "Zoë")), ("x" * 90, "x" * 85 + "y")])
def test_colliding_ids_refuse_both_students(tmp_path, a, b):
    subs = tmp_path / "subs"
    for name in (a, b):
        if name.endswith(".zip"):
            put(subs, name, make_zip({NB: nb(name)}))
        else:
            put(subs, f"{name}/toy.ipynb", nb(name))
    put(subs, "bob/toy.ipynb", nb("bob"))
    r = run(subs, tmp_path / "staging")
    assert len(r) == 3 and r["bob"].notebooks[NB] is not None
    for name in (a, b):
        why = r[name].problem
        assert why.startswith("student id collision: ") and why.endswith("; rename one and grade again"), why
        assert student_id(a)[:40] in why and r[name].notebooks == {NB: None}
        for raw in (a, b):  # both raw names, shortened to 60 characters, as code points where they look alike
            assert raw[:50] in why or ascii(raw)[1:51] in why, why
    if unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b):
        assert ascii(a) in r[a].problem and ascii(b) in r[a].problem


def test_collision_message_format():
    entries = [collect_mod._Entry(o, "alice", collect_mod._refuse("")) for o in ("alice.zip", "alice")]
    out = collect_mod._assign_ids(entries)
    assert [sid for _, sid, _ in out] == ["alice~1", "alice~2"]
    assert out[0][2] == "student id collision: 'alice' and 'alice.zip' both become 'alice'; rename one and grade again"
    out = collect_mod._assign_ids([collect_mod._Entry(o, o, collect_mod._refuse("")) for o in ("a b", "a_b", "A?b")])
    assert {sid for _, sid, _ in out} == {"A_b~1", "a_b~2", "a_b~3"}
    assert out[0][2] == ("student id collision: 'A?b', 'a b' and 'a_b' all become 'A_b' / 'a_b' (the same ignoring "
                         "case); rename one and grade again")


# -- zip slip ---------------------------------------------------------------------------------

@pytest.mark.parametrize("member", ["../../toy.ipynb", "/abs/toy.ipynb", "C:\\toy.ipynb", "C:/x/toy.ipynb",
                                    "hw/../../toy.ipynb", "..\\..\\toy.ipynb"])
def test_unsafe_member_paths_are_never_used(tmp_path, member):
    put(tmp_path / "subs", "evil.zip", make_zip({member: nb(SECRET), "readme.txt": b"hi"}))
    put(tmp_path / "subs", "fine.zip", make_zip({NB: nb("fine"), "../../escape.txt": b"x", "/etc/x": b"x"}))
    r = run(tmp_path / "subs", tmp_path / "staging")
    assert "unsafe path" in r["evil.zip"].problem and r["evil.zip"].notebooks == {NB: None}
    assert r["fine.zip"].notebooks[NB] is not None and not r["fine.zip"].problem
    assert not (tmp_path / "toy.ipynb").exists() and not (tmp_path / "escape.txt").exists()


def test_messages_are_short_even_for_long_names(tmp_path):
    subs = tmp_path / "subs"
    long = "n" * 200
    (subs / long / ("d" * 200)).mkdir(parents=True)
    (subs / long / ("d" * 200) / "toy.ipynb").symlink_to("/etc/passwd")
    put(subs, long + "\n.zip", make_zip({("e" * 250) + "/toy.ipynb": nb("x")}, zipfile.ZIP_BZIP2))
    r = run(subs, tmp_path / "staging")  # check_invariants: <= 300 chars
    assert all(s.problem and "\n" not in s.problem for s in r.values())
