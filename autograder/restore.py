"""Put a submission's locked cells back the way the release had them, before nbgrader sees it.

nbgrader (0.9.6) fails a whole submission (status ``failed``, 0 for everything) on cell
metadata a student can edit in any text editor or JupyterLab's property inspector: a
duplicated ``grade_id`` (a copy-pasted cell), a grade cell invented or its flags flipped
(``grade``, ``solution``), ``points`` that are not a number, an old ``schema_version``, a
removed ``grade_id``, nbgrader metadata that is not an object. It also trusts a
``skip-execution`` tag on a test cell (the test never runs, so it cannot fail). Other
edits (checksum, points, type, source, deletion, kernelspec) its sanitizer repairs, silently.
:func:`restore_locked` rewrites the submission from the release the student was given, so
that nbgrader grades the honest parts, and returns short notes naming every tampering
for the instructor (the grader turns them into a REVIEW flag).

The release is the student version written by nbgrader's ``generate_assignment``. Its
*tracked* cells are those with nbgrader metadata that marks them as a solution, grade,
locked or task cell and a ``grade_id``; they are matched to the submission's cells by
``grade_id``, and a tracked cell whose ``grade_id`` is gone (nbgrader metadata removed,
mangled or renamed) by its cell id. Positions prove nothing: students move, add and
delete cells. The rules:

1. **Locked cells** (locked, task, or grade cells without a solution: instructions,
   helper code, visible/hidden test cells, read-only markdown) appear in the result
   exactly as in the release: cell type, source, attachments, nbgrader metadata,
   ``editable``/``deletable`` and tags. Jupyter's display keys (``collapsed``,
   ``scrolled``, ``jupyter``, ``execution``, ``ExecuteTime``) and a code cell's outputs
   are kept; other cell metadata is dropped. Every difference in source, type,
   nbgrader metadata, lock flags or tags gives one note, e.g.
   ``"grade cell add_test: points changed 4 -> 1000 (restored)"``.
2. **Solution cells** (code answers, manually graded markdown answers) keep the student's
   source (and outputs, attachments, other metadata), but get the release's cell type,
   nbgrader metadata (points, grade/solution/locked flags, grade_id, schema version,
   checksum) and ``editable``/``deletable``. A changed type (a code answer turned into
   markdown or raw) or changed nbgrader metadata is noted.
3. **Missing tracked cells** are re-inserted (locked cells as released, solution cells
   with the release's stub) right after the nearest cell that precedes them in the
   release and is found in the result (a tracked cell, or a plain release cell by cell
   id); failing that, before the nearest following one; failing that, at the end. Note
   ``"restored deleted cell X"``.
4. **Duplicated grade_ids**: of the cells carrying a tracked ``grade_id``, the first whose
   type matches the release is the one restored (else the first); between copies of
   that type, one that sits in release order among the other tracked cells wins, so a
   test cell copy-pasted higher up does not replace the one in place. Every other copy
   keeps its source but loses its nbgrader metadata and lock flags, becoming a plain
   student cell. Noted.
5. **Added cells with nbgrader metadata**: a cell whose nbgrader metadata makes it a
   grade/solution/locked/task cell but whose ``grade_id`` the release does not know (or
   whose nbgrader metadata is malformed) keeps its source but loses that metadata.
   Noted. Inert nbgrader metadata (all flags false, as JupyterLab's "Create Assignment"
   leaves on ordinary cells) is dropped silently. Plain added cells are kept as they are,
   where they are, without notes: students may add cells.
6. **Order**: the student's order of cells is kept; a tracked cell moved out of the
   release order is noted (not moved back).
7. **Notebook**: ``kernelspec`` and ``language_info`` come from the release (absent if
   the release has none); a kernelspec naming another kernel is noted. ``nbformat`` and
   ``nbformat_minor`` are the release's; other notebook metadata is kept. Cell ids are
   made unique and valid (tracked cells claim theirs first); nbformat < 4.5 drops them.
8. **Malformed but parseable input never raises**: a cell that is not an object, a cell
   type that is not code/markdown/raw, metadata or nbgrader metadata that is not an
   object, a source that is a list of strings (joined, not noted) or neither, outputs or
   attachments that do not validate, an execution count that is not a count: each is
   normalised (invalid outputs cleared, odd types become raw) and noted.

Notes name cells by grade_id, or as ``cell N``: the 0-based index in the submission.
An untouched release, or an honest filled-in submission, gives no notes and comes back
unchanged apart from harmless normalisation (sources joined into strings, unknown cell
metadata of locked cells dropped, inert nbgrader metadata removed).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from nbformat.notebooknode import NotebookNode, from_dict
from nbformat.validator import isvalid

__all__ = ["restore_locked"]

#: Cell metadata kept from the student's copy of a locked cell: display state only.
_DISPLAY_KEYS = ("collapsed", "scrolled", "jupyter", "execution", "ExecuteTime")
#: Lock flags outside the nbgrader dict that the release sets.
_LOCK_KEYS = ("editable", "deletable")
#: nbgrader metadata compared for notes, in this order.
_NBGRADER_KEYS = ("grade", "solution", "locked", "task", "points", "grade_id", "checksum",
                  "cell_type", "schema_version")
_CELL_TYPES = ("code", "markdown", "raw")
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_SHOWN = 40  # characters of a value shown in a note


# -- small helpers ------------------------------------------------------------------------

def _short(value: Any) -> str:
    """A value as a note shows it: JSON-ish, at most ``_MAX_SHOWN`` characters."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError, RecursionError):
            text = type(value).__name__
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (4 == 4.0, but True != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    try:
        return a == b
    except Exception:
        return False


def _plain(obj: Any) -> Any:
    """A deep copy made of plain dicts and lists (NotebookNode is a dict subclass)."""
    return copy.deepcopy(obj) if not isinstance(obj, dict) else {k: _plain(v) for k, v in obj.items()}


def _source(cell: dict, where: str, notes: list[str]) -> str:
    src = cell.get("source", "")
    if isinstance(src, str):
        return src
    if isinstance(src, list) and all(isinstance(s, str) for s in src):
        return "".join(src)
    notes.append(f"{where}: source is not text ({type(src).__name__}), emptied")
    return ""


def _nbgrader(meta: dict) -> Any:
    return meta.get("nbgrader") if "nbgrader" in meta else None


def _role(nbg: Any) -> str | None:
    """'solution', 'locked' (grade/locked/task) or None (inert or no nbgrader metadata)."""
    if not isinstance(nbg, dict):
        return None
    if nbg.get("solution") is True:
        return "solution"
    if any(nbg.get(k) is True for k in ("grade", "locked", "task")):
        return "locked"
    return None


def _kind(release_cell: dict) -> str:
    nbg = release_cell["metadata"]["nbgrader"]
    if nbg.get("solution"):
        return "solution cell"
    if nbg.get("task"):
        return "task cell"
    if nbg.get("grade"):
        return "grade cell"
    return "locked cell"


def _valid(node: Any, ref: str) -> bool:
    try:
        return bool(isvalid(node, ref=ref, version=4, version_minor=5))
    except Exception:
        return False


def _outputs(cell: dict, where: str, notes: list[str]) -> tuple[list, int | None]:
    outs = cell.get("outputs", [])
    if not isinstance(outs, list) or not all(isinstance(o, dict) and _valid(o, "output") for o in outs):
        notes.append(f"{where}: invalid outputs cleared")
        outs = []
    count = cell.get("execution_count")
    if count is not None and not (type(count) is int and count >= 0):
        notes.append(f"{where}: invalid execution_count cleared")
        count = None
    return _plain(outs), count


def _attachments(cell: dict, where: str, notes: list[str]) -> dict | None:
    att = cell.get("attachments")
    if att is None:
        return None
    if isinstance(att, dict) and _valid(att, "misc/attachments"):
        return _plain(att)
    notes.append(f"{where}: invalid attachments dropped")
    return None


def _make_cell(cell_type: str, source: str, metadata: dict, cid: Any, *, outputs: list | None = None,
               execution_count: int | None = None, attachments: dict | None = None,
               where: str = "", notes: list[str] | None = None) -> dict:
    """A cell with only the keys nbformat allows; with ``notes``, metadata that nbformat's
    schema refuses (``jupyter``, ``collapsed``, ``tags``... of the wrong shape) is dropped."""
    cell: dict = {"cell_type": cell_type, "metadata": metadata, "source": source}
    if cell_type == "code":
        cell["outputs"] = outputs or []
        cell["execution_count"] = execution_count
    elif attachments:
        cell["attachments"] = attachments
    if notes is not None:
        ref = f"{cell_type}_cell"
        if not _valid({**cell, "id": "x"}, ref):
            bad = [k for k, v in metadata.items() if not _valid({**cell, "id": "x", "metadata": {k: v}}, ref)]
            for key in bad:
                del metadata[key]
            if bad:
                notes.append(f"{where}: invalid cell metadata {', '.join(_short(k) for k in bad)} dropped")
    if isinstance(cid, str):
        cell["id"] = cid
    return cell


# -- the submission, cell by cell ------------------------------------------------------------

class _Cell:
    """A submitted cell, normalised: what it was and what it becomes."""

    def __init__(self, index: int, raw: Any, notes: list[str]):
        self.index = index
        where = f"cell {index}"
        self.ok = isinstance(raw, dict)
        if not self.ok:
            notes.append(f"{where}: not a cell ({type(raw).__name__}), dropped")
            return
        ctype = raw.get("cell_type")
        if ctype not in _CELL_TYPES:
            notes.append(f"{where}: unknown cell type {_short(ctype)}, made raw")
            ctype = "raw"
        self.cell_type: str = ctype
        meta = raw.get("metadata", {})
        if not isinstance(meta, dict):
            notes.append(f"{where}: metadata is not an object ({type(meta).__name__}), cleared")
            meta = {}
        self.metadata: dict = _plain(meta)
        self.nbgrader = _nbgrader(self.metadata)
        gid = self.nbgrader.get("grade_id") if isinstance(self.nbgrader, dict) else None
        self.grade_id: str | None = gid if isinstance(gid, str) else None
        self.where = f"cell {index}" + (f" ({self.grade_id})" if self.grade_id else "")
        self.source = _source(raw, self.where, notes)
        self.raw = raw
        self.id = raw.get("id")
        self.result: dict | None = None  # the cell that goes into the result
        self.matched: str | None = None  # the release grade_id it stands for

    def as_plain(self, notes: list[str], *, unlock: bool) -> dict:
        """This cell as an ordinary student cell: nbgrader metadata removed, and the lock
        flags too where ``unlock`` (a copy or imitation of a tracked cell)."""
        drop = ("nbgrader", *_LOCK_KEYS) if unlock else ("nbgrader",)
        meta = {k: v for k, v in self.metadata.items() if k not in drop}
        outputs, count, att = [], None, None
        if self.cell_type == "code":
            outputs, count = _outputs(self.raw, self.where, notes)
        else:
            att = _attachments(self.raw, self.where, notes)
        return _make_cell(self.cell_type, self.source, meta, self.id, outputs=outputs,
                          execution_count=count, attachments=att, where=self.where, notes=notes)


def _diff_nbgrader(theirs: Any, ours: dict, old_checksums: Collection[str] = ()) -> list[str]:
    if theirs is None:
        return ["nbgrader metadata removed (cell found by its id)"]
    if not isinstance(theirs, dict):
        return [f"nbgrader metadata replaced by {type(theirs).__name__} (cell found by its id)"]
    if theirs.get("grade_id") != ours.get("grade_id"):
        what = (f"grade_id changed {_short(ours.get('grade_id'))} -> {_short(theirs['grade_id'])}"
                if "grade_id" in theirs else "grade_id removed")
        return [what + " (cell found by its id)"] + _diff_nbgrader({**theirs, "grade_id": ours.get("grade_id")}, ours,
                                                                   old_checksums)
    out = []
    for key in _NBGRADER_KEYS:
        if key in ours and key not in theirs:
            out.append(f"{key} removed")
        elif key not in ours and key in theirs:
            out.append(f"{key} {_short(theirs[key])} added")
        elif key in ours and not _same(theirs[key], ours[key]):
            if key == "checksum":
                if theirs[key] not in old_checksums:  # else: the checksum of an earlier release of the cell
                    out.append("checksum changed")
            else:
                out.append(f"{key} changed {_short(ours[key])} -> {_short(theirs[key])}")
    extra = sorted(str(k) for k in theirs if k not in _NBGRADER_KEYS)
    if extra:
        out.append("unknown nbgrader keys " + ", ".join(_short(k) for k in extra))
    return out


def _changes(sub: _Cell, rel: dict, known: Mapping[str, Collection[str]]) -> list[str]:
    """What differs in type, nbgrader metadata and lock flags (the solution cell's rules)."""
    changes = []
    if sub.cell_type != rel["cell_type"]:
        changes.append(f"type changed {rel['cell_type']} -> {sub.cell_type}")
    changes += _diff_nbgrader(sub.nbgrader, rel["metadata"]["nbgrader"], known.get("checksum", ()))
    for key in _LOCK_KEYS:
        if not _same(sub.metadata.get(key), rel["metadata"].get(key)):
            changes.append(f"{key} changed {_short(rel['metadata'].get(key))} -> {_short(sub.metadata.get(key))}")
    return changes


def source_digest(source: str) -> str:
    """What :func:`restore_locked`'s ``earlier`` holds of a cell's source."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _restore_locked_cell(sub: _Cell, rel: dict, notes: list[str], known: Mapping[str, Collection[str]]) -> dict:
    changes = _changes(sub, rel, known)
    if sub.source != rel["source"] and source_digest(sub.source) not in known.get("source", ()):
        changes.insert(1 if sub.cell_type != rel["cell_type"] else 0, "source edited")
    if not _same(sub.metadata.get("tags") or None, rel["metadata"].get("tags") or None):
        changes.append(f"tags changed to {_short(sub.metadata.get('tags'))}")
    if changes:
        notes.append(f"{_kind(rel)} {rel['metadata']['nbgrader']['grade_id']}: " + ", ".join(changes) + " (restored)")
    meta = _plain(rel["metadata"])
    for key in _DISPLAY_KEYS:
        if key in sub.metadata and key not in meta:
            meta[key] = sub.metadata[key]
    outputs, count = [], None
    if rel["cell_type"] == "code" and sub.cell_type == "code":
        outputs, count = _outputs(sub.raw, sub.where, notes)
    return _make_cell(rel["cell_type"], rel["source"], meta, sub.id, outputs=outputs, execution_count=count,
                      attachments=_plain(rel.get("attachments")), where=sub.where, notes=notes)


def _restore_solution_cell(sub: _Cell, rel: dict, notes: list[str], known: Mapping[str, Collection[str]]) -> dict:
    changes = _changes(sub, rel, known)
    if changes:
        notes.append(f"solution cell {rel['metadata']['nbgrader']['grade_id']}: "
                     + ", ".join(changes) + " (restored, answer kept)")
    meta = {k: v for k, v in sub.metadata.items() if k not in ("nbgrader", *_LOCK_KEYS)}
    meta["nbgrader"] = _plain(rel["metadata"]["nbgrader"])
    for key in _LOCK_KEYS:
        if key in rel["metadata"]:
            meta[key] = rel["metadata"][key]
    outputs, count, att = [], None, None
    if rel["cell_type"] == "code":
        if sub.cell_type == "code":
            outputs, count = _outputs(sub.raw, sub.where, notes)
    elif sub.cell_type != "code":
        att = _attachments(sub.raw, sub.where, notes)
    return _make_cell(rel["cell_type"], sub.source, meta, sub.id, outputs=outputs,
                      execution_count=count, attachments=att, where=sub.where, notes=notes)


def _from_release(rel: dict) -> dict:
    cell = _plain(rel)
    cell.setdefault("metadata", {})
    return _make_cell(cell["cell_type"], cell["source"], cell["metadata"], cell.get("id"),
                      outputs=cell.get("outputs"), execution_count=cell.get("execution_count"),
                      attachments=cell.get("attachments"))


# -- the release ---------------------------------------------------------------------------

def _release_cells(release: Any) -> list[dict]:
    """The release's cells, normalised (the release is trusted, but be forgiving)."""
    out = []
    for raw in (release.get("cells") if isinstance(release, dict) else None) or []:
        if not isinstance(raw, dict) or raw.get("cell_type") not in _CELL_TYPES:
            continue
        cell = _plain(raw)
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {}
        cell["source"] = _source(cell, "release", [])
        out.append(cell)
    return out


def _tracked_id(cell: dict) -> str | None:
    nbg = _nbgrader(cell["metadata"])
    if _role(nbg) is None:
        return None
    gid = nbg.get("grade_id")
    return gid if isinstance(gid, str) and gid else None


# -- the whole notebook --------------------------------------------------------------------------

def _notebook_metadata(submitted: Any, release: Any, notes: list[str]) -> dict:
    meta = submitted.get("metadata", {}) if isinstance(submitted, dict) else {}
    if not isinstance(meta, dict):
        notes.append("notebook metadata is not an object, replaced")
        meta = {}
    meta = _plain(meta)
    rmeta = release.get("metadata", {}) if isinstance(release, dict) else {}
    rmeta = rmeta if isinstance(rmeta, dict) else {}
    theirs, ours = meta.get("kernelspec"), rmeta.get("kernelspec")
    if theirs is not None and ours is not None:
        name = theirs.get("name") if isinstance(theirs, dict) else theirs
        if not isinstance(theirs, dict) or not _same(name, ours.get("name")):
            notes.append(f"kernelspec changed {_short(ours.get('name'))} -> {_short(name)} (restored)")
    for key in ("kernelspec", "language_info"):
        meta.pop(key, None)
        if key in rmeta:
            meta[key] = _plain(rmeta[key])
    return meta


def _assign_ids(cells: list[dict], tracked: set[int], minor: int) -> None:
    if minor < 5:
        for cell in cells:
            cell.pop("id", None)
        return
    taken: set[str] = set()
    for pass_tracked in (True, False):
        for i, cell in enumerate(cells):
            if (i in tracked) != pass_tracked:
                continue
            cid = cell.get("id")
            if not (isinstance(cid, str) and _ID.match(cid)) or cid in taken:
                cid = None
            cell["_id"] = cid
            if cid:
                taken.add(cid)
    for cell in cells:
        cid = cell.pop("_id")
        while cid is None:
            cid = uuid.uuid4().hex[:8]
            cid = None if cid in taken else cid
        taken.add(cid)
        cell["id"] = cid


def restore_locked(submitted: NotebookNode, release: NotebookNode,
                   earlier: Mapping[str, Mapping[str, Collection[str]]] | None = None) -> tuple[NotebookNode, list[str]]:
    """A copy of ``submitted`` that nbgrader can autograde, and notes naming every tampering found.

    ``release`` is the student version written by ``generate_assignment``; ``earlier`` (by grade_id:
    ``{"source": digests, "checksum": checksums}``, :func:`autograder.release.release_history`) what earlier
    releases of the notebook had: a cell as an earlier release had it is restored without a note (the
    instructor changed the release after handing it out). Neither notebook is modified. See the module
    docstring for the rules.
    """
    notes: list[str] = []
    rcells = _release_cells(release)
    tracked = {gid: i for i, c in enumerate(rcells) if (gid := _tracked_id(c))}

    raw_cells = submitted.get("cells") if isinstance(submitted, dict) else None
    if not isinstance(raw_cells, list):
        notes.append("notebook has no list of cells")
        raw_cells = []
    subs = [c for c in (_Cell(i, raw, notes) for i, raw in enumerate(raw_cells)) if c.ok]

    # which submitted cell stands for each tracked release cell: by grade_id; of several
    # copies, the first of the release's type that sits in release order among the others
    chosen: dict[str, _Cell] = {}
    copies = {gid: [s for s in subs if s.grade_id == gid] for gid in tracked}
    unique = {gid: c[0] for gid, c in copies.items() if len(c) == 1}

    def disorder(s: _Cell, gid: str) -> int:
        return sum((u.index < s.index) != (tracked[g] < tracked[gid]) for g, u in unique.items() if g != gid)

    for gid, candidates in copies.items():
        if candidates:
            same_type = [s for s in candidates if s.cell_type == rcells[tracked[gid]]["cell_type"]]
            chosen[gid] = min(same_type or candidates, key=lambda s: (disorder(s, gid), s.index))
            chosen[gid].matched = gid
    # a tracked cell whose grade_id is gone (nbgrader metadata removed or mangled): by cell id
    for gid, ri in tracked.items():
        rid = rcells[ri].get("id")
        if gid in chosen or not isinstance(rid, str):
            continue
        hits = [s for s in subs if s.id == rid and s.matched is None and s.grade_id not in tracked]
        if len(hits) == 1:
            chosen[gid] = hits[0]
            hits[0].matched = gid

    for s in subs:
        rel = rcells[tracked[s.matched]] if s.matched else None
        if rel is not None:
            restore = _restore_solution_cell if _role(rel["metadata"]["nbgrader"]) == "solution" \
                else _restore_locked_cell
            s.result = restore(s, rel, notes, (earlier or {}).get(s.matched, {}))
            continue
        unlock = s.grade_id in tracked or _role(s.nbgrader) is not None
        if s.grade_id in tracked:
            notes.append(f"duplicate of {_kind(rcells[tracked[s.grade_id]])} {s.grade_id} at cell {s.index}: "
                         "nbgrader metadata removed, kept as a plain cell")
        elif "nbgrader" in s.metadata:
            nbg = s.nbgrader
            if not isinstance(nbg, dict):
                notes.append(f"{s.where}: malformed nbgrader metadata ({type(nbg).__name__}) removed")
            elif _role(nbg) is not None:
                what = ", ".join(f"{k}: {_short(nbg[k])}" for k in ("grade", "solution", "locked", "task", "points")
                                 if k in nbg and nbg[k] not in (False, None))
                notes.append(f"added cell {s.index} claims grade_id {_short(nbg.get('grade_id'))} ({what}): "
                             "nbgrader metadata removed")
        s.result = s.as_plain(notes, unlock=unlock)

    # tracked cells out of release order
    order = [s.matched for s in subs if s.matched]
    for a, b in zip(order, order[1:]):
        if tracked[a] > tracked[b]:
            notes.append(f"cell {a} moved before {b} (order kept)")

    # the result, then missing tracked cells at their release position
    out: list[dict] = [s.result for s in subs]
    # what each result cell stands for in the release, to find where a missing one goes
    origin: list[tuple] = [("gid", s.matched) if s.matched else ("id", s.id) for s in subs]

    def anchor(j: int) -> int | None:
        gid = _tracked_id(rcells[j])
        key = ("gid", gid) if gid else ("id", rcells[j].get("id"))
        if key[1] is None:
            return None
        hits = [k for k, o in enumerate(origin) if o == key]
        return hits[0] if len(hits) == 1 else None

    def position(ri: int) -> int:
        for j in range(ri - 1, -1, -1):
            k = anchor(j)
            if k is not None:
                return k + 1
        for j in range(ri + 1, len(rcells)):
            k = anchor(j)
            if k is not None:
                return k
        return len(out)

    for gid, ri in sorted(tracked.items(), key=lambda kv: kv[1]):
        if gid in chosen:
            continue
        stub = " (solution stub)" if _role(rcells[ri]["metadata"]["nbgrader"]) == "solution" else ""
        notes.append(f"restored deleted cell {gid}{stub}")
        k = position(ri)
        out.insert(k, _from_release(rcells[ri]))
        origin.insert(k, ("gid", gid))

    nbformat_major = release.get("nbformat", 4) if isinstance(release, dict) else 4
    minor = release.get("nbformat_minor", 5) if isinstance(release, dict) else 5
    minor = minor if type(minor) is int else 5
    _assign_ids(out, {k for k, o in enumerate(origin) if o[0] == "gid"}, minor)
    nb = {"cells": out, "metadata": _notebook_metadata(submitted, release, notes),
          "nbformat": nbformat_major, "nbformat_minor": minor}
    return from_dict(nb), notes
