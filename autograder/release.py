"""Build the student release (``assignments/``) and the solutions (``solutions/``).

``assignments/`` is nbgrader's release folder, made by ``generate_assignment``: solutions
replaced by stubs, hidden tests removed, grade cells locked and check-summed.
``solutions/`` keeps the solutions but drops the hidden tests and every nbgrader marker,
for publication after the deadline.

``check()`` rebuilds both into a temporary folder and compares them with the committed
ones, so CI fails when someone edits ``source/`` and forgets to release.

Both carry the class's package URL (``PACKAGE_URL`` in :mod:`autograder.classroom`) in each
notebook's install cell (the line ``COURSE_PACKAGE_URL = ...``, which installs ``course``
where it is missing, e.g. on Colab): the release, the gradebook and the student copy hold
the same locked cell, so a submitted notebook matches what grading regenerates.
"""
from __future__ import annotations

import filecmp
import json
import re
import shutil
import tempfile
from pathlib import Path

import nbformat

from autograder import classroom
from autograder import config as cfg
from autograder.nbgrader_api import make_api


class ReleaseError(RuntimeError):
    pass


def assignments(course_dir: Path) -> list[str]:
    """Assignment ids: the folders of ``source/`` holding at least one notebook."""
    src = Path(course_dir) / cfg.SOURCE
    return sorted(p.name for p in src.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts)


#: nbgrader's region markers (its default delimiters, which this course keeps), as pairs.
MARKERS = (("BEGIN SOLUTION", "END SOLUTION"), ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"))


def _cell_name(cell: nbformat.NotebookNode, index: int) -> str:
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {grade_id!r} (cell {index + 1})" if grade_id else f"cell {index + 1} (no grade_id)"


def marker_problems(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """Unbalanced region markers of ``nb``, one line each naming ``name`` and the cell:
    a BEGIN without its END, an END without a BEGIN, a BEGIN inside a region of the same
    kind, or two regions that cross. nbgrader would hide everything after an unclosed
    BEGIN (or fail with a message that names no cell); here it is an error up front."""
    problems = []
    for index, cell in enumerate(nb.cells):
        where = f"{name}: {_cell_name(cell, index)}"
        open_: list[tuple[str, int]] = []  # (kind, line number) of the regions still open
        for lineno, line in enumerate(cell.source.split("\n"), 1):
            for begin, end in MARKERS:
                if begin in line:
                    if any(kind == begin for kind, _ in open_):
                        problems.append(f"{where}: line {lineno}: {begin} inside another {begin} region")
                    open_.append((begin, lineno))
                elif end in line:
                    if not any(kind == begin for kind, _ in open_):
                        problems.append(f"{where}: line {lineno}: {end} without {begin}")
                        continue
                    if open_[-1][0] != begin:
                        problems.append(f"{where}: line {lineno}: {end} while the {open_[-1][0]} region "
                                        f"of line {open_[-1][1]} is still open (regions cross)")
                    last = max(i for i, (kind, _) in enumerate(open_) if kind == begin)
                    del open_[last]
        problems += [f"{where}: line {lineno}: {kind} without {dict(MARKERS)[kind]}" for kind, lineno in open_]
    return problems


def _raise_on(problems: list[str]) -> None:
    if problems:
        raise ReleaseError("unbalanced nbgrader markers (each BEGIN needs its END in the same cell, "
                           "no nesting):\n" + "\n".join("  " + p for p in problems))


def check_markers(course_dir: Path, aids: list[str]) -> None:
    """Raise :class:`ReleaseError` listing every unbalanced marker of ``source/<aid>/*.ipynb``
    for all ``aids`` together."""
    problems = []
    for aid in aids:
        for f in sorted((Path(course_dir) / cfg.SOURCE / aid).glob("*.ipynb")):
            problems += marker_problems(nbformat.read(f, as_version=4), f"{cfg.SOURCE}/{aid}/{f.name}")
    _raise_on(problems)


def strip_for_solutions(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Drop hidden-test regions and solution markers; keep the solution code; clear outputs.

    Raises :class:`ReleaseError` (naming ``name`` and the cell) on unbalanced markers."""
    _raise_on(marker_problems(nb, name))
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        kept, hidden = [], False
        for line in cell.source.split("\n"):
            if "BEGIN HIDDEN TESTS" in line:
                hidden = True
            elif "END HIDDEN TESTS" in line:
                hidden = False
            elif hidden or "BEGIN SOLUTION" in line or "END SOLUTION" in line:
                continue
            else:
                kept.append(line)
        cell.source = "\n".join(kept).rstrip("\n")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.get("nbgrader", {}).pop("checksum", None)
    return nb


#: The line of a notebook's install cell (its first code cell) that says where ``course`` is installed from.
INSTALL_LINE = re.compile(r"^COURSE_PACKAGE_URL = .*$", re.M)


def install_line(url: str | None) -> str:
    """The install line naming ``url`` (None: the notebook asks students to install ``course`` themselves)."""
    value = "None" if url is None else '"' + url.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"COURSE_PACKAGE_URL = {value}  # pip URL of the class repository"


def with_package_url(nb: nbformat.NotebookNode, url: str | None) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose install line names ``url``; a notebook without one is returned unchanged."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and INSTALL_LINE.search(cell.source):
            cell.source = INSTALL_LINE.sub(lambda _: install_line(url), cell.source)
    return nb


def _copy_source(course_dir: Path, aid: str, dest: Path) -> None:
    """``source/<aid>`` copied to ``dest``, each notebook with the class's package URL written in."""
    shutil.copytree(Path(course_dir) / cfg.SOURCE / aid, dest,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for f in sorted(dest.rglob("*.ipynb")):
        nb = nbformat.read(f, as_version=4)
        if any(c.cell_type == "code" and INSTALL_LINE.search(c.source) for c in nb.cells):
            nbformat.write(with_package_url(nb, classroom.PACKAGE_URL), f)


#: In each release folder: what every release written there had in its tracked cells (a digest of each
#: cell's source and nbgrader's checksum, by notebook and grade_id), so that a notebook handed out before
#: the instructor changed the release is not taken for a tampered one (:func:`autograder.restore.restore_locked`).
HISTORY = ".release-history.json"


def _add_to_history(history: dict, name: str, nb: nbformat.NotebookNode) -> None:
    from autograder.restore import source_digest

    cells = history.setdefault(name, {})
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if not isinstance(gid, str):
            continue
        known = cells.setdefault(gid, {"source": [], "checksum": []})
        for key, value in (("source", source_digest(cell.source)), ("checksum", meta.get("checksum"))):
            if isinstance(value, str) and value not in known[key]:
                known[key].append(value)


def release_history(release_dir: Path) -> dict[str, dict[str, dict[str, list[str]]]]:
    """``notebook -> grade_id -> {"source": digests, "checksum": checksums}``: the recorded history of the
    release folder ``release_dir`` and the notebooks it holds now ({} for a folder that does not exist)."""
    release_dir = Path(release_dir)
    history: dict = {}
    try:
        loaded = json.loads((release_dir / HISTORY).read_text())
        history = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    for path in sorted(release_dir.glob("*.ipynb")) if release_dir.is_dir() else []:
        try:
            _add_to_history(history, path.name, nbformat.read(path, as_version=4))
        except Exception:  # an unreadable old release: nothing to learn from it
            continue
    return history


def generate_release(course_dir: Path, aid: str, release_out: Path, db_url: str) -> None:
    """Run nbgrader's ``generate_assignment`` for ``aid``: record it in the gradebook at
    ``db_url`` (grade cells, checksums, locked sources) and write the student version to
    ``release_out``."""
    course_dir = Path(course_dir).resolve()
    check_markers(course_dir, [aid])  # before nbgrader sees the notebooks
    work = Path(tempfile.mkdtemp(prefix="release-"))
    try:
        _copy_source(course_dir, aid, work / cfg.SOURCE / aid)
        api = make_api(work, db_url=db_url)
        result = api.generate_assignment(aid, force=True, create=True)
        if not result.get("success"):
            raise ReleaseError(f"nbgrader generate_assignment failed for {aid}:\n"
                               f"{result.get('error', '')}\n{result.get('log', '')}")
        history = release_history(release_out)  # the earlier releases, before they are replaced
        if release_out.exists():
            shutil.rmtree(release_out)
        shutil.copytree(work / cfg.RELEASE / aid, release_out)
        for path in sorted(release_out.glob("*.ipynb")):
            _add_to_history(history, path.name, nbformat.read(path, as_version=4))
        (release_out / HISTORY).write_text(json.dumps(history, indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_solutions(course_dir: Path, aid: str, out: Path) -> None:
    """Copy ``source/<aid>`` to ``out`` with hidden tests and markers stripped."""
    src = Path(course_dir) / cfg.SOURCE / aid
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in _files(src):
        dest = out / f.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".ipynb":
            name = f"{cfg.SOURCE}/{aid}/{f.relative_to(src)}"
            nb = with_package_url(nbformat.read(f, as_version=4), classroom.PACKAGE_URL)
            nbformat.write(strip_for_solutions(nb, name), dest)
        else:
            shutil.copy2(f, dest)


def build(course_dir: Path, release_dir: Path, solutions_dir: Path, db_url: str | None = None) -> None:
    """Write the release and the solutions of every assignment of ``course_dir``."""
    course_dir = Path(course_dir).resolve()
    aids = assignments(course_dir)
    check_markers(course_dir, aids)  # every notebook, before anything is written
    for aid in aids:
        generate_release(course_dir, aid, Path(release_dir) / aid, db_url or cfg.default_db_url(course_dir))
        write_solutions(course_dir, aid, Path(solutions_dir) / aid)


def release(course_dir: Path | None = None) -> None:
    """Regenerate ``assignments/`` and ``solutions/`` in place."""
    course_dir = Path(course_dir or cfg.repo_root())
    build(course_dir, course_dir / cfg.RELEASE, course_dir / cfg.SOLUTIONS)


def diff_trees(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on either side or changed)."""
    fa = {p.relative_to(a) for p in _files(a) if p.name != HISTORY} if a.exists() else set()
    fb = {p.relative_to(b) for p in _files(b) if p.name != HISTORY} if b.exists() else set()
    out = [f"only in {a.name}: {p}" for p in sorted(fa - fb)]
    out += [f"only in rebuilt: {p}" for p in sorted(fb - fa)]
    out += [f"changed: {p}" for p in sorted(fa & fb) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return out


def check(course_dir: Path | None = None) -> list[str]:
    """Rebuild into a temp folder; return the differences with the committed folders."""
    course_dir = Path(course_dir or cfg.repo_root())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build(course_dir, tmp / cfg.RELEASE, tmp / cfg.SOLUTIONS, db_url=f"sqlite:///{tmp / 'gradebook.db'}")
        problems = []
        for name in (cfg.RELEASE, cfg.SOLUTIONS):
            problems += [f"{name}/: {d}" for d in diff_trees(course_dir / name, tmp / name)]
        return problems
