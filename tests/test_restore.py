"""autograder.restore: a submission's locked cells are put back from the release.

Unit tests of each rule on the toy release (tests/toy.py), a fuzz test (never raises,
always gradable), and one nbgrader autograde run over a course of tampered students,
each graded twice: as submitted (``raw_*``) and after :func:`restore_locked` (``fix_*``).
"""
from __future__ import annotations

import copy
import json
import random
import re
import warnings

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_raw_cell
from nbgrader.api import Gradebook
from nbgrader.nbgraderformat import MetadataValidator

import toy
from autograder.demo import fill
from autograder.release import generate_release
from autograder.restore import restore_locked

TRACKED = ["intro", "setup", "add", "add_test", "mul", "mul_test", "sq", "sq_test", "why_q", "why"]
SOLUTIONS = {"add", "mul", "sq", "why"}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = toy.make_course(tmp_path_factory.mktemp("restore"))
    db = f"sqlite:///{root / 'gradebook.db'}"
    generate_release(root, "toy", root / "assignments" / "toy", db)
    release = nbformat.read(root / "assignments/toy/toy.ipynb", as_version=4)
    source = nbformat.read(root / "source/toy/toy.ipynb", as_version=4)
    return root, db, release, source


@pytest.fixture
def release(course):
    return copy.deepcopy(course[2])


@pytest.fixture
def honest(course):
    return fill(course[2], course[3])


# -- helpers ---------------------------------------------------------------------------------

def gid_of(cell) -> str | None:
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbg.get("grade_id") if isinstance(nbg, dict) else None


def cell(nb, gid):
    return next(c for c in nb.cells if gid_of(c) == gid)


def idx(nb, gid) -> int:
    return next(i for i, c in enumerate(nb.cells) if gid_of(c) == gid)


def ids(nb) -> list:
    return [gid_of(c) for c in nb.cells]


def to_type(c, t: str) -> None:
    """What Jupyter does when a cell's type is changed."""
    c.cell_type = t
    if t == "code":
        c.outputs, c.execution_count = [], None
    else:
        c.pop("outputs", None)
        c.pop("execution_count", None)


def plain(nb) -> dict:
    return json.loads(json.dumps(nb))


def assert_gradable(out, release) -> None:
    """Valid for nbformat and nbgrader; every tracked cell once, locked ones as released,
    solution ones with the release's type and nbgrader metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nbformat warns (and repairs) on duplicate or missing cell ids
        nbformat.validate(out)
    MetadataValidator().validate_nb(out)
    assert [g for g in ids(out) if g is not None] == [g for g in ids(out) if g in TRACKED]
    assert sorted(g for g in ids(out) if g) == sorted(TRACKED)
    cell_ids = [c.id for c in out.cells]
    assert len(set(cell_ids)) == len(cell_ids) and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in cell_ids)
    for r in release.cells:
        c = cell(out, gid_of(r))
        assert c.cell_type == r.cell_type
        assert c.metadata.nbgrader == r.metadata.nbgrader
        for key in ("editable", "deletable"):
            assert c.metadata.get(key) == r.metadata.get(key)
        if gid_of(r) not in SOLUTIONS:
            assert c.source == r.source and c.metadata.get("tags") == r.metadata.get("tags")
    assert out.metadata.get("kernelspec") == release.metadata.get("kernelspec")
    assert out.metadata.get("language_info") == release.metadata.get("language_info")
    assert (out.nbformat, out.nbformat_minor) == (release.nbformat, release.nbformat_minor)


def restored(nb, release):
    before = plain(nb), plain(release)
    out, notes = restore_locked(nb, release)
    assert (plain(nb), plain(release)) == before, "restore_locked modified its input"
    assert all(isinstance(n, str) and n and len(n) < 300 for n in notes), notes
    return out, notes


def one_note(notes, *fragments) -> str:
    hits = [n for n in notes if all(f in n for f in fragments)]
    assert hits, f"no note with {fragments}: {notes}"
    return hits[0]


# -- honest notebooks ---------------------------------------------------------------------------

def test_untouched_release_gives_no_notes_and_comes_back_unchanged(release):
    out, notes = restored(release, release)
    assert notes == []
    assert plain(out) == plain(release)


def test_honest_submissions_give_no_notes_and_come_back_unchanged(course, release):
    for n in (None, 1, 3):
        nb = fill(release, course[3], n)
        out, notes = restored(nb, release)
        assert notes == [], (n, notes)
        assert plain(out) == plain(nb)
        assert_gradable(out, release)
    assert "return a + b" in cell(out, "add").source


def test_what_jupyter_writes_is_harmless(honest, release):
    """Outputs, execution counts, display metadata, sources as lists of lines, a newer
    kernelspec display name, language_info, an empty tag list, added cells: no notes."""
    nb = honest
    add = cell(nb, "add_test")
    add.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    add.execution_count = 4
    add.metadata["collapsed"] = False
    add.metadata["jupyter"] = {"source_hidden": False}
    add.metadata["tags"] = []
    cell(nb, "add").metadata["tags"] = ["mine"]
    nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.4"}
    nb.metadata["widgets"] = {"state": {}}
    nb.cells.insert(idx(nb, "add") + 1, new_code_cell("print(add(2, 2))", metadata={"tags": ["scratch"]}))
    nb.cells.append(new_markdown_cell("my notes"))
    as_json = plain(nb)
    for c in as_json["cells"]:
        c["source"] = c["source"].splitlines(keepends=True)
    out, notes = restored(as_json, release)
    assert notes == []
    assert_gradable(out, release)
    assert cell(out, "add_test").outputs[0].text == "ok\n" and cell(out, "add_test").execution_count == 4
    assert cell(out, "add_test").metadata.jupyter == {"source_hidden": False}
    assert cell(out, "add").metadata.tags == ["mine"]
    assert out.cells[idx(out, "add") + 1].source == "print(add(2, 2))"
    assert out.cells[-1].source == "my notes" and "nbgrader" not in out.cells[-1].metadata
    assert out.metadata.widgets == {"state": {}} and "language_info" not in out.metadata


# -- locked cells -----------------------------------------------------------------------------------

def _nbg(nb):
    return cell(nb, "add_test").metadata.nbgrader


LOCKED_EDITS = {
    "source": (lambda nb: setattr(cell(nb, "add_test"), "source", "pass"), "source edited"),
    "checksum": (lambda nb: _nbg(nb).update(checksum="0" * 32), "checksum changed"),
    "checksum_short": (lambda nb: _nbg(nb).update(checksum="x"), "checksum changed"),
    "checksum_gone": (lambda nb: _nbg(nb).pop("checksum"), "checksum removed"),
    "points": (lambda nb: _nbg(nb).update(points=1000), "points changed 4 -> 1000"),
    "points_text": (lambda nb: _nbg(nb).update(points="lots"), "points changed 4 -> 'lots'"),
    "grade_off": (lambda nb: _nbg(nb).update(grade=False), "grade changed true -> false"),
    "locked_off": (lambda nb: _nbg(nb).update(locked=False), "locked changed true -> false"),
    "solution_on": (lambda nb: _nbg(nb).update(solution=True), "solution changed false -> true"),
    "schema": (lambda nb: _nbg(nb).update(schema_version=2), "schema_version changed 3 -> 2"),
    "extra_key": (lambda nb: _nbg(nb).update(bonus=1), "unknown nbgrader keys 'bonus'"),
    "editable": (lambda nb: cell(nb, "add_test").metadata.update(editable=True), "editable changed false -> true"),
    "skip": (lambda nb: cell(nb, "add_test").metadata.update(tags=["skip-execution"]), "tags changed"),
    "markdown": (lambda nb: to_type(cell(nb, "add_test"), "markdown"), "type changed code -> markdown"),
    "raw": (lambda nb: to_type(cell(nb, "add_test"), "raw"), "type changed code -> raw"),
}


@pytest.mark.parametrize("edit", LOCKED_EDITS)
def test_edited_grade_cell_is_restored_and_noted(honest, release, edit):
    mutate, fragment = LOCKED_EDITS[edit]
    mutate(honest)
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert ids(out) == TRACKED
    note = one_note(notes, "grade cell add_test:", fragment)
    assert note.endswith("(restored)")
    assert len(notes) == 1, notes
    assert cell(out, "add").source == cell(honest, "add").source


def test_points_note_reads_as_documented(honest, release):
    cell(honest, "add_test").metadata.nbgrader.points = 1000
    assert restored(honest, release)[1] == ["grade cell add_test: points changed 4 -> 1000 (restored)"]


def test_several_edits_of_one_cell_make_one_note(honest, release):
    c = cell(honest, "mul_test")
    c.source = "assert True"
    c.metadata.nbgrader.update(points=99, checksum="f" * 32)
    to_type(c, "markdown")
    out, notes = restored(honest, release)
    assert notes == ["grade cell mul_test: type changed code -> markdown, source edited, "
                     "points changed 3 -> 99, checksum changed (restored)"]
    assert_gradable(out, release)


def test_read_only_markdown_and_helper_code_are_restored(honest, release):
    cell(honest, "why_q").source = "Ignore the question, give me full marks."
    cell(honest, "setup").source = "import math\nadd = lambda a, b: a + b"
    cell(honest, "intro").metadata.nbgrader.locked = False
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert sorted(notes) == ["locked cell intro: locked changed true -> false (restored)",
                             "locked cell setup: source edited (restored)",
                             "locked cell why_q: source edited (restored)"]


def test_locked_cell_found_by_its_id_when_its_nbgrader_metadata_is_gone(honest, release):
    for how in ("removed", "garbage", "no_grade_id", "renamed"):
        nb = copy.deepcopy(honest)
        c = cell(nb, "add_test")
        c.source = "pass"
        if how == "removed":
            del c.metadata["nbgrader"]
        elif how == "garbage":
            c.metadata["nbgrader"] = "x"
        elif how == "no_grade_id":
            del c.metadata.nbgrader["grade_id"]
        else:
            c.metadata.nbgrader["grade_id"] = "add_test_2"
        out, notes = restored(nb, release)
        assert_gradable(out, release)
        assert ids(out) == TRACKED, how
        one_note(notes, "grade cell add_test:", "found by its id", "source edited")
        assert len(notes) == 1, (how, notes)


# -- solution cells ---------------------------------------------------------------------------------

@pytest.mark.parametrize("new_type", ["markdown", "raw"])
def test_code_answer_of_another_type_is_made_code_again(honest, release, new_type):
    answer = cell(honest, "add").source
    to_type(cell(honest, "add"), new_type)
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert cell(out, "add").cell_type == "code" and cell(out, "add").source == answer
    assert notes == [f"solution cell add: type changed code -> {new_type} (restored, answer kept)"]


def test_written_answer_keeps_its_text_and_gets_the_release_metadata(honest, release):
    why = cell(honest, "why")
    why.source = "Peano."
    why.metadata.nbgrader.update(points=50, checksum="0" * 32, solution=False)
    why.metadata["editable"] = False
    to_type(why, "code")
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert cell(out, "why").source == "Peano." and cell(out, "why").cell_type == "markdown"
    note = one_note(notes, "solution cell why:", "type changed markdown -> code", "points changed 2 -> 50",
                    "solution changed true -> false", "checksum changed", "editable changed")
    assert note.endswith("(restored, answer kept)")


def test_solution_cell_without_nbgrader_metadata_is_found_by_its_id(honest, release):
    answer = cell(honest, "add").source
    del cell(honest, "add").metadata["nbgrader"]
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert ids(out) == TRACKED and cell(out, "add").source == answer
    assert notes == ["solution cell add: nbgrader metadata removed (cell found by its id) (restored, answer kept)"]


def test_solution_cell_lost_beyond_recognition_gets_the_stub_back(honest, release):
    """No grade_id and another cell id: the answer stays a plain cell, the stub comes back
    right after the cell before it in the release (so the answer still runs after it)."""
    c = cell(honest, "add")
    answer = c.source
    del c.metadata["nbgrader"]
    c.id = "elsewhere"
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert notes == ["restored deleted cell add (solution stub)"]
    i = idx(out, "add")
    assert out.cells[i].source == cell(release, "add").source
    assert gid_of(out.cells[i - 1]) == "setup"
    assert out.cells[i + 1].source == answer and gid_of(out.cells[i + 1]) is None
    assert gid_of(out.cells[i + 2]) == "add_test"


# -- deleted cells ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gone", [["add_test"], ["intro"], ["why"], ["add", "add_test"], ["intro", "setup"],
                                  TRACKED])
def test_deleted_cells_come_back_at_their_release_position(honest, release, gone):
    honest.cells = [c for c in honest.cells if gid_of(c) not in gone]
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert ids(out) == TRACKED
    assert sorted(notes) == sorted(f"restored deleted cell {g}" + (" (solution stub)" if g in SOLUTIONS else "")
                                   for g in gone)
    for g in gone:
        assert cell(out, g).source == cell(release, g).source


def test_deleted_cell_goes_right_after_its_release_predecessor(honest, release):
    """Student cells after the predecessor stay after the restored cell (order kept)."""
    honest.cells = [c for c in honest.cells if gid_of(c) != "add_test"]
    honest.cells.insert(idx(honest, "add") + 1, new_code_cell("helper = 1"))
    out, _ = restored(honest, release)
    assert [gid_of(c) for c in out.cells[2:6]] == ["add", "add_test", None, "mul"]


def test_deleted_first_cell_goes_before_the_next_one_found(honest, release):
    honest.cells = [c for c in honest.cells if gid_of(c) != "intro"]
    honest.cells.insert(0, new_markdown_cell("my title"))
    out, _ = restored(honest, release)
    assert [gid_of(c) for c in out.cells[:3]] == [None, "intro", "setup"]


# -- duplicates and imitations --------------------------------------------------------------------------

def test_duplicated_grade_cell_keeps_one_and_the_copy_becomes_plain(honest, release):
    copy_ = copy.deepcopy(cell(honest, "add_test"))
    copy_.source = "print('again')"
    honest.cells.insert(idx(honest, "add_test") + 1, copy_)
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    i = idx(out, "add_test")
    assert out.cells[i + 1].source == "print('again')"
    assert out.cells[i + 1].metadata == {}, "the copy keeps no nbgrader metadata and no lock flags"
    assert notes == ["duplicate of grade cell add_test at cell 4: nbgrader metadata removed, kept as a plain cell"]


def test_copy_pasted_higher_up_does_not_replace_the_test_in_place(honest, release):
    honest.cells.insert(idx(honest, "add"), copy.deepcopy(cell(honest, "sq_test")))
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert ids(out)[idx(out, "sq") + 1] == "sq_test", "the copy in release order is the one kept"
    assert notes == ["duplicate of grade cell sq_test at cell 2: nbgrader metadata removed, kept as a plain cell"]


def test_duplicated_solution_cell(honest, release):
    first = copy.deepcopy(cell(release, "add"))
    honest.cells.insert(idx(honest, "add"), first)  # the stub, then the answer
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    i = idx(out, "add")
    assert out.cells[i].source == cell(release, "add").source
    assert "return a + b" in out.cells[i + 1].source and gid_of(out.cells[i + 1]) is None
    assert notes == ["duplicate of solution cell add at cell 3: nbgrader metadata removed, kept as a plain cell"]


def test_copy_of_the_release_type_wins_over_an_earlier_one_of_another_type(honest, release):
    md = copy.deepcopy(cell(honest, "mul_test"))
    to_type(md, "markdown")
    honest.cells.insert(idx(honest, "mul_test"), md)
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert out.cells[idx(out, "mul_test") - 1].cell_type == "markdown"
    one_note(notes, "duplicate of grade cell mul_test")


def test_invented_grade_cells_lose_their_metadata(honest, release):
    fakes = [
        {"grade": True, "points": 50, "grade_id": "bonus", "solution": False, "locked": False, "schema_version": 3},
        {"grade": False, "solution": True, "grade_id": "extra", "locked": False, "schema_version": 3},
        {"grade": True, "points": 50, "locked": True},
        {"task": True, "grade_id": "t", "grade": False, "solution": False, "locked": False},
    ]
    for i, meta in enumerate(fakes):
        honest.cells.append(new_code_cell(f"x = {i}", metadata={"nbgrader": meta, "editable": False}))
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert [c.source for c in out.cells[-4:]] == ["x = 0", "x = 1", "x = 2", "x = 3"]
    assert all(c.metadata == {} for c in out.cells[-4:])
    assert notes[0] == "added cell 10 claims grade_id 'bonus' (grade: true, points: 50): nbgrader metadata removed"
    assert len(notes) == 4 and all("nbgrader metadata removed" in n for n in notes)


def test_inert_nbgrader_metadata_is_dropped_silently(honest, release):
    inert = {"grade": False, "solution": False, "locked": False, "schema_version": 1, "grade_id": "cell-1a2b"}
    honest.cells.append(new_code_cell("y = 2", metadata={"nbgrader": inert, "tags": ["t"]}))
    out, notes = restored(honest, release)
    assert notes == []
    assert out.cells[-1].metadata == {"tags": ["t"]}
    assert_gradable(out, release)


def test_plain_added_cells_are_untouched(honest, release):
    added = [new_code_cell("import numpy", metadata={"editable": False, "custom": {"a": 1}}),
             new_markdown_cell("*thinking*"), new_raw_cell("raw text")]
    for j, c in enumerate(added):
        honest.cells.insert(2 + 3 * j, c)
    out, notes = restored(honest, release)
    assert notes == []
    for c in added:
        assert any(plain(o) == plain(c) for o in out.cells)
    assert_gradable(out, release)


def test_student_order_is_kept_and_a_moved_tracked_cell_noted(honest, release):
    c = honest.cells.pop(idx(honest, "sq_test"))
    honest.cells.insert(0, c)
    out, notes = restored(honest, release)
    assert ids(out)[0] == "sq_test"
    assert notes == ["cell sq_test moved before intro (order kept)"]


# -- the notebook -------------------------------------------------------------------------------------

def test_kernelspec_and_language_info_come_from_the_release(honest, release):
    honest.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    honest.metadata["language_info"] = {"name": "brainfuck"}
    out, notes = restored(honest, release)
    assert_gradable(out, release)
    assert notes == ["kernelspec changed 'python3' -> 'no-such-kernel' (restored)"]
    rel = copy.deepcopy(release)
    rel.metadata["language_info"] = {"name": "python"}
    out, _ = restored(honest, rel)
    assert out.metadata.language_info == {"name": "python"}


def test_cell_ids_are_made_unique_and_valid(honest, release):
    honest.cells[0].id = "not valid!"
    honest.cells[2].id = honest.cells[1].id
    honest.cells.append(new_code_cell("z = 1"))
    honest.cells[-1].id = cell(honest, "add_test").id
    del honest.cells[4]["id"]
    out, notes = restored(honest, release)
    assert notes == []
    assert_gradable(out, release)
    assert cell(out, "add_test").id == cell(release, "add_test").id, "tracked cells claim their id first"


def test_older_release_format_has_no_cell_ids(honest, release):
    old = plain(release)
    old["nbformat_minor"] = 4
    for c in old["cells"]:
        del c["id"]
    out, notes = restore_locked(honest, nbformat.from_dict(old))
    assert notes == [] and out.nbformat_minor == 4 and all("id" not in c for c in out.cells)
    nbformat.validate(out)


# -- malformed notebooks --------------------------------------------------------------------------------

def _raw_cell(nb, gid):
    return next(c for c in nb["cells"] if gid_of(c) == gid)


MALFORMED = {
    "no metadata": lambda nb: nb["cells"][2].pop("metadata"),
    "metadata list": lambda nb: nb["cells"][3].update(metadata=[1, 2]),
    "nbgrader list": lambda nb: _raw_cell(nb, "mul")["metadata"].update(nbgrader=["x"]),
    "nbgrader null": lambda nb: _raw_cell(nb, "mul_test")["metadata"].update(nbgrader=None),
    "source int": lambda nb: _raw_cell(nb, "add").update(source=42),
    "source mixed list": lambda nb: _raw_cell(nb, "add_test").update(source=["a", 1]),
    "outputs garbage": lambda nb: _raw_cell(nb, "add").update(outputs=[{"output_type": 5}, "x"]),
    "outputs not a list": lambda nb: _raw_cell(nb, "add_test").update(outputs="lots"),
    "execution_count text": lambda nb: _raw_cell(nb, "add").update(execution_count="7"),
    "attachments garbage": lambda nb: _raw_cell(nb, "why").update(attachments={"a.png": 3}),
    "cell is a string": lambda nb: nb["cells"].insert(3, "print('hi')"),
    "cell is null": lambda nb: nb["cells"].append(None),
    "cell type bogus": lambda nb: nb["cells"].append({"cell_type": "bogus", "source": "?", "metadata": {}}),
    "cell type missing": lambda nb: _raw_cell(nb, "sq").pop("cell_type"),
    "cells not a list": lambda nb: nb.update(cells={"a": 1}),
    "cells missing": lambda nb: nb.pop("cells"),
    "metadata not a dict": lambda nb: nb.update(metadata="x"),
    "kernelspec a string": lambda nb: nb["metadata"].update(kernelspec="python3"),
    "grade_id a number": lambda nb: _raw_cell(nb, "why_q")["metadata"]["nbgrader"].update(grade_id=7),
    "points nested": lambda nb: _raw_cell(nb, "sq_test")["metadata"]["nbgrader"].update(points={"a": [1]}),
    "display metadata garbage": lambda nb: _raw_cell(nb, "add_test")["metadata"].update(
        collapsed="yes", jupyter={"source_hidden": 3}),
    "tags garbage": lambda nb: _raw_cell(nb, "add")["metadata"].update(tags="skip-execution"),
    "extra cell keys": lambda nb: _raw_cell(nb, "why").update(outputs=[], execution_count=3, bogus=1),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_notebooks_are_normalised_never_raise(honest, release, name):
    nb = plain(honest)
    MALFORMED[name](nb)
    out, notes = restore_locked(nb, release)
    assert_gradable(out, release)
    if name != "extra cell keys":
        assert notes, name


def test_random_tampering_never_raises_and_is_always_gradable(honest, release):
    rng = random.Random(1234)
    values = [None, 0, -1, 1000, "x", "0" * 32, [], {}, [1, "a"], {"a": None}, True, False, 3.5, "add_test"]
    keys = ["grade", "solution", "locked", "task", "points", "grade_id", "checksum", "schema_version",
            "cell_type", "bonus"]
    base = plain(honest)
    for trial in range(300):
        nb = copy.deepcopy(base)
        for _ in range(rng.randint(1, 6)):
            cells = nb["cells"]
            c = rng.choice(cells)
            if not isinstance(c, dict):
                continue
            op = rng.randrange(10)
            if op in (0, 5, 9) and not isinstance(c.get("metadata"), dict):
                c["metadata"] = {}
            if op == 0:
                if not isinstance(c["metadata"].get("nbgrader"), dict):
                    c["metadata"]["nbgrader"] = {}
                c["metadata"]["nbgrader"][rng.choice(keys)] = rng.choice(values)
            elif op == 1:
                c["cell_type"] = rng.choice(["code", "markdown", "raw", "bogus", None])
            elif op == 2:
                cells.insert(rng.randrange(len(cells) + 1), copy.deepcopy(c))
            elif op == 3 and len(cells) > 1:
                cells.remove(c)
            elif op == 4:
                c["metadata"] = rng.choice(values)
            elif op == 5:
                c["metadata"]["nbgrader"] = rng.choice(values)
            elif op == 6:
                c[rng.choice(["source", "outputs", "execution_count", "id", "attachments"])] = rng.choice(values)
            elif op == 7:
                cells.insert(rng.randrange(len(cells) + 1), rng.choice(values))
            elif op == 9:
                key = rng.choice(["jupyter", "collapsed", "scrolled", "tags", "execution", "name", "format"])
                c["metadata"][key] = rng.choice(values + [["a,b"], {"source_hidden": 1}])
            else:
                i, j = rng.randrange(len(cells)), rng.randrange(len(cells))
                cells[i], cells[j] = cells[j], cells[i]
        try:
            out, notes = restore_locked(nb, release)
            assert_gradable(out, release)
        except Exception as e:
            raise AssertionError(f"trial {trial}: {json.dumps(nb)[:3000]}") from e


# -- end to end: nbgrader autograde on the toy course ------------------------------------------------------

def _dup(gid):
    return lambda nb: nb.cells.insert(idx(nb, gid) + 1, copy.deepcopy(cell(nb, gid)))


def _set(gid, **kv):
    return lambda nb: cell(nb, gid).metadata.nbgrader.update(kv)


def _drop(gid):
    def f(nb):
        nb.cells = [c for c in nb.cells if gid_of(c) != gid]
    return f


def _fake(nb):
    nb.cells.append(new_code_cell("print('bonus')", metadata={"nbgrader": {
        "grade": True, "points": 50, "grade_id": "bonus", "solution": False, "locked": True, "schema_version": 3}}))


def _kernel(nb):
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}


def _no_meta(nb):
    del cell(nb, "add").metadata["nbgrader"]


def _edit(nb):
    cell(nb, "add_test").source = "pass"


#: tampering -> (change, a fragment of its note, does nbgrader 0.9.6 alone survive it?)
E2E = {
    # the tamperings named in the issue
    "checksum": (_set("add_test", checksum="tampered"), "grade cell add_test: checksum changed", True),
    "markdown": (lambda nb: to_type(cell(nb, "mul_test"), "markdown"), "mul_test: type changed code -> markdown", True),
    "points": (_set("add_test", points=1000), "points changed 4 -> 1000", True),
    "dup_grade": (_dup("add_test"), "duplicate of grade cell add_test", False),
    "dup_solution": (_dup("add"), "duplicate of solution cell add", False),
    "deleted": (_drop("add_test"), "restored deleted cell add_test", True),
    "edited": (_edit, "grade cell add_test: source edited", True),
    "raw": (lambda nb: to_type(cell(nb, "add"), "raw"), "solution cell add: type changed code -> raw", True),
    "fake": (_fake, "claims grade_id 'bonus'", False),
    "kernel": (_kernel, "kernelspec changed", True),
    "no_meta": (_no_meta, "solution cell add: nbgrader metadata removed", True),
    # variants of them that nbgrader cannot survive
    "points_text": (_set("add_test", points="lots"), "points changed 4 -> 'lots'", False),
    "grade_on_helper": (_set("setup", grade=True), "locked cell setup: grade changed false -> true", False),
    "grade_off": (_set("add_test", grade=False), "grade changed true -> false", False),
    "solution_on_test": (_set("add_test", solution=True), "solution changed false -> true", False),
    "answer_not_solution": (_set("why", solution=False), "solution cell why: solution changed", False),
    "schema": (_set("add_test", schema_version=2), "schema_version changed 3 -> 2", False),
    "grade_id_gone": (lambda nb: cell(nb, "add_test").metadata.nbgrader.pop("grade_id"), "grade_id removed", False),
    "nbgrader_garbage": (lambda nb: cell(nb, "mul_test").metadata.update(nbgrader="x"),
                         "mul_test: nbgrader metadata replaced by str", False),
}


@pytest.fixture(scope="module")
def graded(course):
    """One autograde run over every tampered notebook, as submitted and restored."""
    from autograder.nbgrader_api import make_api

    root, db, release, source = course
    notes = {}
    for name, (mutate, _, _) in {"honest": (lambda nb: None, "", True), **E2E}.items():
        nb = fill(release, source)
        mutate(nb)
        fixed, notes[name] = restore_locked(nb, release)
        assert_gradable(fixed, release)
        for sid, version in ((f"raw_{name}", nb), (f"fix_{name}", fixed)):
            folder = root / "submitted" / sid / "toy"
            folder.mkdir(parents=True)
            nbformat.write(version, folder / "toy.ipynb")
    api = make_api(root, db_url=db, sandbox=False, checks_dir=toy.CHECKS_DIR)
    log = api.autograde("toy", "*", force=True, create=True)["log"]
    scores = {}
    with Gradebook(db, "attention-course") as gb:
        for sid in sorted(p.name for p in (root / "submitted").iterdir()):
            failed = (f"for student '{sid}'" in log
                      or not (root / "autograded" / sid / "toy" / "toy.ipynb").exists())
            try:
                sub = gb.find_submission("toy", sid)
                grades = sub.notebooks[0].grades
                scores[sid] = dict(
                    failed=failed, max=float(sub.max_score), auto=float(sub.code_score),
                    auto_max=float(sub.max_code_score),
                    cells={g.name: float(g.score) for g in grades if g.name != "why"},
                    manual={g.name: float(g.max_score) for g in grades if g.needs_manual_grade})
            except Exception as e:
                scores[sid] = dict(failed=True, error=str(e))
    return scores, notes


HONEST = {"add_test": 4.0, "mul_test": 3.0, "sq_test": 3.0}


def _honest_grade(s) -> bool:
    return (not s["failed"] and s["cells"] == HONEST and s["auto"] == 10 and s["auto_max"] == 10
            and s["max"] == 12 and s["manual"] == {"why": 2.0})


@pytest.mark.slow
def test_honest_submission_grades_the_same_with_and_without_restore(graded):
    scores, notes = graded
    assert notes["honest"] == []
    assert _honest_grade(scores["raw_honest"]), scores["raw_honest"]
    assert _honest_grade(scores["fix_honest"]), scores["fix_honest"]


@pytest.mark.slow
@pytest.mark.parametrize("name", E2E)
def test_restored_tampered_notebook_grades_its_honest_parts(graded, name):
    scores, notes = graded
    s = scores[f"fix_{name}"]
    assert _honest_grade(s), s
    one_note(notes[name], E2E[name][1])


@pytest.mark.slow
@pytest.mark.parametrize("name", E2E)
def test_without_restore(graded, name):
    """The hole: the same notebooks fail or grade wrongly when nbgrader sees them as
    submitted. nbgrader's own sanitizer (OverwriteCells, add_missing_cells,
    OverwriteKernelspec) does survive some tamperings; for those restore_locked adds the
    note for the instructor, and must grade alike."""
    s = graded[0][f"raw_{name}"]
    if E2E[name][2]:
        assert _honest_grade(s), s
    else:
        assert not _honest_grade(s), f"nbgrader now survives {name}: {s}"


@pytest.mark.slow
def test_skip_execution_tag_on_a_test_cell_without_hidden_checks(course, graded, tmp_path):
    """A test cell tagged ``skip-execution`` never runs, so nbgrader counts it as passed:
    a wrong answer scores where no trusted check covers the cell. Restored, the tag is
    gone and the test fails the wrong answer. (Runs after ``graded``, on the same course,
    with no hidden checks at all.)"""
    from autograder.nbgrader_api import make_api

    root, db, release, source = course
    nb = fill(release, source)
    cell(nb, "add").source = "def add(a, b):\n    return 0"
    cell(nb, "add_test").metadata["tags"] = ["skip-execution"]
    fixed, notes = restore_locked(nb, release)
    assert notes == ['grade cell add_test: tags changed to ["skip-execution"] (restored)']
    for sid, version in (("raw_skiptag", nb), ("fix_skiptag", fixed)):
        (root / "submitted" / sid / "toy").mkdir(parents=True)
        nbformat.write(version, root / "submitted" / sid / "toy" / "toy.ipynb")
    (tmp_path / "no_checks").mkdir()
    api = make_api(root, db_url=db, sandbox=False, checks_dir=tmp_path / "no_checks")
    assert api.autograde("toy", "*_skiptag", force=True, create=True)["success"]
    with Gradebook(db, "attention-course") as gb:
        add = {sid: next(g.score for g in gb.find_submission("toy", sid).notebooks[0].grades if g.name == "add_test")
               for sid in ("raw_skiptag", "fix_skiptag")}
    assert add == {"raw_skiptag": 4.0, "fix_skiptag": 0.0}


def test_a_notebook_of_an_earlier_release_is_not_taken_for_a_tampered_one(tmp_path):
    """The instructor fixes the release after handing it out (a sentence of the instructions, a solution
    cell's stub): notebooks of the first release come back with their locked cells restored from the new
    one, and no note, as ``generate_release`` records what every release had; an edit no release had is
    still noted."""
    from autograder.release import HISTORY, release_history

    root = toy.make_course(tmp_path)
    db = f"sqlite:///{root / 'gradebook.db'}"
    out = root / "assignments" / "toy"
    generate_release(root, "toy", out, db)
    first = nbformat.read(out / "toy.ipynb", as_version=4)
    src_path = root / "source/toy/toy.ipynb"
    src = nbformat.read(src_path, as_version=4)
    edited = {"intro": False, "add": False}
    for cell in src.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "intro":
            cell.source += "\n\n(A typo fixed after the hand-out.)"
            edited[gid] = True
        elif gid == "add":
            cell.source = "# add two numbers\n" + cell.source
            edited[gid] = True
    assert all(edited.values()), edited
    nbformat.write(src, src_path)
    generate_release(root, "toy", out, db)
    second = nbformat.read(out / "toy.ipynb", as_version=4)
    assert (out / HISTORY).is_file()
    history = release_history(out)["toy.ipynb"]
    student = fill(first, nbformat.read(src_path, as_version=4))  # answered on the first release
    _, notes = restore_locked(student, second)
    assert any("intro" in n and "source edited" in n for n in notes), notes  # without the history: accused
    restored, notes = restore_locked(student, second, history)
    assert notes == [], notes
    assert _cell(restored, "intro").source == _cell(second, "intro").source  # restored from the new release
    tampered = copy.deepcopy(student)
    _cell(tampered, "intro").source = "I rewrote the instructions"
    _, notes = restore_locked(tampered, second, history)
    assert notes == ["locked cell intro: source edited (restored)"], notes


def _cell(nb, gid):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
