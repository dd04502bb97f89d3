"""Collect student submissions: only the expected notebooks ever leave a submission.

``collect(path, staging, notebook_names)`` takes a folder of student folders and/or
``<student>.zip`` files, or one class zip of such entries (optionally all under one wrapper
folder), and returns one :class:`Submission` per student entry, sorted by student id.

What it guarantees, whatever the submissions hold:

* Nothing is extracted by path. Each expected notebook is read (from a folder: opened with
  ``O_NOFOLLOW`` component by component and ``O_NONBLOCK``, and ``fstat`` must say regular
  file; from a zip: the member's stream) for at most ``notebook_bytes + 1`` bytes, whatever
  a header claims, and written by the grader as a new file ``staging/<student>/<name>``.
* Links are never followed: folders are walked with ``os.scandir`` without following links;
  a student folder or zip that is a link, a notebook that is a link and a zip member marked
  as a link are refused, and a link's target is never opened.
* An entry can only spoil its own row: whatever goes wrong reading it (not a zip, encrypted
  member, bzip2/lzma/unknown compression, corrupt data, CRC error, ...) becomes its
  ``problem``. Only an unusable ``path`` (missing, or a class zip that cannot be opened)
  raises :class:`CollectError`.
* Work is bounded per student: at most ``max_entries`` files and folders scanned (counted
  in a zip's central directory before :mod:`zipfile` parses it), folders at most
  ``max_depth`` deep, notebooks of at most ``notebook_bytes``, a student zip inside a class
  zip of at most ``nested_zip_bytes``. Time is linear in the entries looked at.
* Student ids never merge silently: entries whose ids are equal ignoring case (``casefold``)
  are all refused, with a problem naming every raw name; their ids get a ``~n`` suffix
  (a character no real id has) so that ids stay unique in the run.
* A zip member named with ``..``, an absolute path or a drive letter is never used.
* Problems are at most 300 characters, name the file and never quote its contents.

Matching (as before): an expected name anywhere in the student's tree, shallowest first;
else, when exactly one notebook is expected and the tree holds exactly one ``*.ipynb``,
that one. ``__MACOSX``, ``.ipynb_checkpoints``, ``__pycache__`` and dot-entries are skipped.
"""
from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import unicodedata
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SKIP = frozenset({"__MACOSX", ".ipynb_checkpoints", "__pycache__"})
MAX_MESSAGE = 300
_CD_BYTES_PER_ENTRY = 1024  # a central directory larger than max_entries * this is refused unparsed
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}  # zipfile inflates bzip2/lzma without an output bound


@dataclass(frozen=True)
class Limits:
    notebook_bytes: int = 20 * 2**20     # largest notebook accepted
    max_entries: int = 10_000            # files+folders scanned per student folder, members per student zip
    max_depth: int = 16                  # folder depth scanned
    nested_zip_bytes: int = 200 * 2**20  # a student zip inside a class zip is read up to this size


@dataclass
class Submission:
    student: str                          # id used by nbgrader: safe, unique in this run
    origin: str                           # the raw name as found (folder or zip name), for messages
    notebooks: dict[str, Path | None]     # expected notebook file name -> grader-owned copy in staging (None: not found)
    problem: str = ""                     # non-empty: not gradable; reported with this message, other students unaffected


class CollectError(Exception):
    """The instructor's input itself is unusable (path missing, class zip not a zip)."""


class _Refused(Exception):
    """This student's entry is not gradable; the message is its problem."""


@dataclass
class _Candidate:
    parts: tuple[str, ...]               # path inside the student's tree
    read: Callable[[int], bytes]         # the content, refusing more than the given number of bytes
    why: str = ""                        # non-empty: refused if chosen, never read


@dataclass
class _Entry:
    origin: str                          # as found: "alice", "bob.zip"
    raw: str                             # what the id is made of: "alice", "bob"
    scan: Callable[[ExitStack], list[_Candidate]]


def student_id(name: str) -> str:
    """NFC; letters, digits and ``_.@+-`` kept, anything else ``_``; no leading dot, ``-``, ``+``
    or ``@`` (an id never reads as a command-line option or a spreadsheet formula); 80 chars."""
    s = "".join(c if c.isalnum() or c in "_.@+-" else "_" for c in unicodedata.normalize("NFC", name))
    return s.lstrip(".-+@")[:80] or "student"


def collect(path: Path, staging: Path, notebook_names: list[str], limits: Limits = Limits()) -> list[Submission]:
    """One :class:`Submission` per student entry under ``path``, sorted by student id."""
    path, staging, names = Path(path), Path(staging), list(notebook_names)
    if any(os.sep in n or n in ("", ".", "..") for n in names):
        raise ValueError(f"notebook names must be plain file names: {names}")
    wanted = frozenset(unicodedata.normalize("NFC", n) for n in names)
    out: list[Submission] = []
    with ExitStack() as stack:
        if path.is_dir():
            try:
                entries = _folder_entries(path, wanted, limits)
            except OSError as e:
                raise CollectError(f"{path}: cannot list the folder ({e})") from None
        elif path.is_file():
            try:
                z = stack.enter_context(zipfile.ZipFile(path))
            except Exception as e:  # noqa: BLE001 - whatever zipfile raises, the class zip is unusable
                raise CollectError(f"{path}: not a readable zip file ({type(e).__name__}: {e})") from None
            entries = _class_zip_entries(z, wanted, limits)
        else:
            raise CollectError(f"{path}: expected a folder of student folders or zip files, or a zip file")
        staging.mkdir(parents=True, exist_ok=True)
        for entry, sid, problem in _assign_ids(entries):
            found: dict[str, Path | None] = dict.fromkeys(names)
            if not problem:
                try:
                    data = _load(entry, names, limits)
                except _Refused as e:
                    problem = str(e)
                except Exception as e:  # noqa: BLE001 - one submission never stops the class
                    problem = f"{_show(entry.origin)} cannot be read ({_error(e)})"
                else:
                    found = _stage(staging / sid, data)
            out.append(Submission(sid, entry.origin, found, problem[:MAX_MESSAGE]))
    return sorted(out, key=lambda s: s.student)


# -- ids ----------------------------------------------------------------------------------

def _assign_ids(entries: list[_Entry]) -> list[tuple[_Entry, str, str]]:
    groups: dict[str, list[tuple[_Entry, str]]] = {}
    for e in sorted(entries, key=lambda e: e.origin):
        sid = student_id(e.raw)
        groups.setdefault(sid.casefold(), []).append((e, sid))
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append((group[0][0], group[0][1], ""))
            continue
        shown = [_show(e.origin, 60) for e, _ in group]
        quote = ascii if len({_nfc(s) for s in shown}) < len(shown) else repr  # NFC/NFD twins: code points
        raw = [quote(s) for s in shown[:3]] + ([f"{len(group) - 3} more"] if len(group) > 3 else [])
        ids = sorted({sid for _, sid in group})
        become = ("both become " if len(group) == 2 else "all become ") + " / ".join(repr(i) for i in ids[:3])
        if len(ids) > 1:
            become += " (the same ignoring case)"
        why = (f"student id collision: {', '.join(raw[:-1])} and {raw[-1]} {become}; "
               "rename one and grade again")
        out += [(e, f"{sid}~{i}", why) for i, (e, sid) in enumerate(group, 1)]
    return out


# -- choosing and copying the notebooks ---------------------------------------------------

def _load(entry: _Entry, names: list[str], limits: Limits) -> dict[str, bytes | None]:
    with ExitStack() as stack:
        cands = entry.scan(stack)
        chosen: dict[str, _Candidate | None] = {}
        for name in names:
            hits = [c for c in cands if _nfc(c.parts[-1]) == _nfc(name)]
            chosen[name] = min(hits, key=lambda c: (len(c.parts), c.parts), default=None)
        if len(names) == 1 and chosen[names[0]] is None and len(cands) == 1:
            chosen[names[0]] = cands[0]
        data: dict[str, bytes | None] = {}
        for name, c in chosen.items():
            if c is not None and c.why:
                raise _Refused(c.why)
            data[name] = None if c is None else c.read(limits.notebook_bytes)
        return data


def _stage(folder: Path, data: dict[str, bytes | None]) -> dict[str, Path | None]:
    out: dict[str, Path | None] = dict.fromkeys(data)
    if any(v is not None for v in data.values()):
        folder.mkdir()  # a fresh folder of the grader's; an existing one is a grader bug
    for name, content in data.items():
        if content is None:
            continue
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        out[name] = folder / name
    return out


# -- folders ------------------------------------------------------------------------------

def _folder_entries(base: Path, wanted: frozenset[str], limits: Limits) -> list[_Entry]:
    entries = []
    with os.scandir(base) as it:
        for e in it:
            if _skipped(e.name):
                continue
            is_zip = e.name.lower().endswith(".zip")
            raw = e.name[:-4] if is_zip else e.name
            if e.is_symlink():
                entries.append(_Entry(e.name, raw, _refuse(
                    f"{_show(e.name)} is a symbolic link: submit the folder or zip file itself")))
            elif e.is_dir(follow_symlinks=False):
                entries.append(_Entry(e.name, e.name, _folder_scanner(Path(e.path), wanted, limits)))
            elif is_zip:
                entries.append(_Entry(e.name, raw, _zip_file_scanner(Path(e.path), e.name, wanted, limits)))
    return entries


def _folder_scanner(root: Path, wanted: frozenset[str], limits: Limits) -> Callable[[ExitStack], list[_Candidate]]:
    def scan(stack: ExitStack) -> list[_Candidate]:
        cands, seen, todo = [], 0, [()]
        while todo:
            rel = todo.pop()
            with os.scandir(os.path.join(root, *rel)) as it:
                for e in it:
                    seen += 1
                    if seen > limits.max_entries:
                        raise _Refused(f"{_show(root.name)} has more than {limits.max_entries} files and folders")
                    if _skipped(e.name):
                        continue
                    parts = (*rel, e.name)
                    if e.is_dir(follow_symlinks=False):
                        if len(parts) > limits.max_depth:
                            raise _Refused(f"{_show(root.name)} has folders nested more than {limits.max_depth} deep")
                        todo.append(parts)
                    elif _is_notebook(e.name, wanted):
                        shown = _show("/".join(parts))
                        why = ("" if e.is_file(follow_symlinks=False) else
                               f"{shown} is a symbolic link: submit the notebook file itself" if e.is_symlink() else
                               f"{shown} is not a regular file")
                        cands.append(_Candidate(parts, _path_reader(root, parts, shown), why))
        return cands
    return scan


def _path_reader(root: Path, parts: tuple[str, ...], shown: str) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(root, flags | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
            f = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a link since the scan
                raise _Refused(f"{shown} is a symbolic link: submit the notebook file itself") from None
            raise
        finally:
            os.close(fd)
        with open(f, "rb", buffering=0, closefd=True) as fh:
            st = os.fstat(f)
            if not stat.S_ISREG(st.st_mode):
                raise _Refused(f"{shown} is not a regular file")
            if st.st_size > limit:
                raise _Refused(f"{shown} is larger than {_size(limit)}")
            return _bounded(fh, limit, shown)
    return read


def _zip_file_scanner(path: Path, origin: str, wanted: frozenset[str],
                      limits: Limits) -> Callable[[ExitStack], list[_Candidate]]:
    def scan(stack: ExitStack) -> list[_Candidate]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        fp = stack.enter_context(open(fd, "rb", closefd=True))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused(f"{_show(origin)} is not a regular file")
        return _zip_scan(fp, origin, wanted, limits, stack)
    return scan


# -- zips ---------------------------------------------------------------------------------

def _zip_scan(fp: BinaryIO, origin: str, wanted: frozenset[str], limits: Limits, stack: ExitStack) -> list[_Candidate]:
    count, cd_bytes = _central_directory(fp, limits.max_entries)
    if count > limits.max_entries or cd_bytes > limits.max_entries * _CD_BYTES_PER_ENTRY:
        raise _Refused(f"{_show(origin)} has more than {limits.max_entries} files and folders")
    fp.seek(0)
    try:
        z = stack.enter_context(zipfile.ZipFile(fp))
    except Exception as e:  # noqa: BLE001 - BadZipFile, NotImplementedError, OSError, ...
        raise _Refused(f"{_show(origin)} is not a valid zip file ({_error(e)})") from None
    return _member_candidates(z, [(i, _parts(i.filename)) for i in z.infolist()], origin, wanted, limits)


def _member_candidates(z: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]], origin: str,
                       wanted: frozenset[str], limits: Limits) -> list[_Candidate]:
    if len(members) > limits.max_entries:
        raise _Refused(f"{_show(origin)} has more than {limits.max_entries} files and folders")
    cands = []
    for info, parts in members:
        if info.is_dir() or not parts or not _is_notebook(parts[-1], wanted):
            continue
        shown = _show(info.filename)
        if _unsafe(info.filename):
            why = f"{shown}: unsafe path (absolute, drive letter or '..'): refused"
        elif any(_skipped(p) for p in parts):
            continue
        else:
            why = _member_problem(info, shown) or ""
        cands.append(_Candidate(parts, _member_reader(z, info, shown), why))
    return cands


def _member_problem(info: zipfile.ZipInfo, shown: str) -> str | None:
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return f"{shown} is a symbolic link: submit the notebook file itself"
    if info.flag_bits & 0x1:
        return f"{shown} is encrypted: zip it again without a password"
    if info.compress_type not in _METHODS:
        return f"{shown} uses compression method {info.compress_type}: zip it again with a standard zip tool (deflate)"
    return None


def _member_reader(z: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        if info.file_size > limit:
            raise _Refused(f"{shown} is larger than {_size(limit)}")
        try:
            with z.open(info) as f:
                return _bounded(f, limit, shown)
        except _Refused:
            raise
        except Exception as e:  # noqa: BLE001 - zlib.error, BadZipFile (CRC), EOFError, NotImplementedError, ...
            raise _Refused(f"{shown} cannot be read from the zip ({_error(e)})") from None
    return read


def _class_zip_entries(z: zipfile.ZipFile, wanted: frozenset[str], limits: Limits) -> list[_Entry]:
    items = [(i, p) for i in z.infolist() if (p := _parts(i.filename)) and not _skipped(p[0])]
    tops = {p[0] for _, p in items}
    if (len(tops) == 1 and all(len(p) > 1 or i.is_dir() for i, p in items)
            and not any(len(p) == 2 and not i.is_dir() and p[1].lower().endswith(".ipynb") for i, p in items)):
        items = [(i, p[1:]) for i, p in items if len(p) > 1 and not _skipped(p[1])]  # one wrapper folder
    groups: dict[str, list[tuple[zipfile.ZipInfo, tuple[str, ...]]]] = {}
    entries = []
    for info, parts in items:
        name = parts[0]
        if len(parts) > 1 or info.is_dir():
            groups.setdefault(name, []).append((info, parts[1:]))
            continue
        is_zip = name.lower().endswith(".zip")
        raw = name[:-4] if is_zip else name
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            entries.append(_Entry(name, raw, _refuse(
                f"{_show(name)} is a symbolic link: submit the folder or zip file itself")))
        elif is_zip:
            entries.append(_Entry(name, raw, _nested_zip_scanner(z, info, name, wanted, limits)))
    for name, members in groups.items():
        entries.append(_Entry(name, name, lambda stack, m=members, n=name: _member_candidates(z, m, n, wanted, limits)))
    return entries


def _nested_zip_scanner(z: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str, wanted: frozenset[str],
                        limits: Limits) -> Callable[[ExitStack], list[_Candidate]]:
    def scan(stack: ExitStack) -> list[_Candidate]:
        why = _member_problem(info, _show(origin))
        if why:
            raise _Refused(why)
        data = _member_reader(z, info, _show(origin))(limits.nested_zip_bytes)
        return _zip_scan(io.BytesIO(data), origin, wanted, limits, stack)
    return scan


def _central_directory(fp: BinaryIO, limit: int) -> tuple[int, int]:
    """(records, bytes) of the central directory, found as zipfile finds it; counting stops past ``limit``.

    zipfile parses every record on open, whatever the end record's count says; this walks
    the same records first, cheaply, so that an archive with too many is refused unparsed.
    """
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    start = max(size - 22 - 0xFFFF, 0)
    fp.seek(start)
    tail = fp.read()
    if len(tail) >= 22 and tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
        pos = len(tail) - 22
    else:
        pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return 0, 0  # not a zip: zipfile says so
    cd_bytes = struct.unpack_from("<L", tail, pos + 12)[0]
    cd_end = start + pos
    if cd_end >= 76:  # zip64: the locator, then the zip64 end record, precede the end record
        fp.seek(cd_end - 20)
        if fp.read(4) == b"PK\x06\x07":
            fp.seek(cd_end - 76)
            rec = fp.read(56)
            if rec[:4] == b"PK\x06\x06":
                cd_bytes, cd_end = struct.unpack_from("<Q", rec, 40)[0], cd_end - 76
    cd_start = cd_end - cd_bytes
    if cd_start < 0:
        return 0, cd_bytes
    fp.seek(cd_start)
    count = total = 0
    while total < cd_bytes and count <= limit:
        head = fp.read(46)
        if len(head) < 46 or head[:4] != b"PK\x01\x02":
            break
        skip = sum(struct.unpack_from("<3H", head, 28))
        fp.seek(skip, os.SEEK_CUR)
        total += 46 + skip
        count += 1
    return count, cd_bytes


# -- small helpers ------------------------------------------------------------------------

def _bounded(f: BinaryIO, limit: int, shown: str) -> bytes:
    chunks, total = [], 0
    while total <= limit:
        chunk = f.read(min(2**20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise _Refused(f"{shown} is larger than {_size(limit)}")
    return b"".join(chunks)


def _refuse(why: str) -> Callable[[ExitStack], list[_Candidate]]:
    def scan(stack: ExitStack) -> list[_Candidate]:
        raise _Refused(why)
    return scan


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def _unsafe(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or ".." in re.split(r"[/\\]", name)


def _skipped(name: str) -> bool:
    return name in SKIP or name.startswith(".")


def _is_notebook(name: str, wanted: frozenset[str]) -> bool:
    return _nfc(name) in wanted or name.lower().endswith(".ipynb")


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _show(s: str, n: int = 80) -> str:
    s = "".join(c if c.isprintable() else "?" for c in s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _error(e: BaseException) -> str:
    name = type(e).__name__ if type(e).__name__ != "error" else f"{type(e).__module__}.error"  # zlib.error
    return f"{name}: {_show(str(e), 100)}" if str(e) else name


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"
