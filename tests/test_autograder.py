"""The autograder on a tiny course (tests/toy.py, hidden checks in tests/toy_checks/).

One grading run of many submissions, honest and hostile. Every attack scores zero on
what it attacks, full marks on its honest parts, is reported on its own row, and leaves
every other student's grade unchanged. Kernels run in the bubblewrap sandbox and the
hidden checks in the trusted grader process.
"""
from __future__ import annotations

import csv
import html
import json
import re
import socket
import threading
import zipfile
from pathlib import Path

import nbformat
import pytest

import toy
from autograder.demo import fill
from autograder.grade import collect, grade
from autograder.release import generate_release, strip_for_solutions
from autograder.sandbox import check_available

FULL = 10.0  # autograded points of the toy notebook: add 4, mul 3, sq 3
HONEST_REST = 6.0  # mul + sq, for submissions that attack add
CHECKS_CANARY = "CHECKS-CANARY-91c2"
WRONG_ADD = "def add(a, b):\n    return 0\n"

pytestmark = pytest.mark.skipif(check_available() is not None, reason=f"no sandbox: {check_available()}")


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


class Listener:
    """A TCP server on the host's loopback that counts connections (none may arrive)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = toy.make_course(tmp_path_factory.mktemp("course"))
    db_path = root / "gradebook.db"
    db = f"sqlite:///{db_path}"
    generate_release(root, "toy", root / "assignments" / "toy", db)
    release = nbformat.read(root / "assignments/toy/toy.ipynb", as_version=4)
    source = nbformat.read(root / "source/toy/toy.ipynb", as_version=4)
    subs = root / "subs"
    listener = Listener()

    def put(sid, nb=None, text=None):
        (subs / sid).mkdir(parents=True)
        if text is not None:
            (subs / sid / "toy.ipynb").write_text(text)
        else:
            nbformat.write(nb, subs / sid / "toy.ipynb")

    def honest():
        return fill(release, source)

    def attack(sid, add_source):
        nb = honest()
        _cell(nb, "add").source = add_source
        put(sid, nb)

    put("a_honest", honest())
    put("z_honest", honest())
    put("blank", release)
    # -- robustness ------------------------------------------------------------------------
    attack("crash", "def add(a, b):\n    raise ValueError('oops')")
    attack("exit", "import os\nos._exit(3)")
    attack("loop", "while True:\n    pass\ndef add(a, b):\n    return a + b")
    attack("stubborn", "while True:\n    try:\n        while True:\n            pass\n"
                       "    except BaseException:\n        pass")
    nb = honest(); _cell(nb, "add").source += "\nfor i in range(200000):\n    print('flood' * 20)"; put("flood", nb)
    put("badjson", text='{"cells": [ this is not json')
    nb = honest(); nb.cells = [c for c in nb.cells
                               if c.metadata.get("nbgrader", {}).get("grade_id") != "add_test"]; put("deleted", nb)
    nb = honest(); _cell(nb, "add").source = WRONG_ADD; _cell(nb, "add_test").source = "pass"; put("edited", nb)
    nb = honest(); nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    put("kernel", nb)
    nb = honest(); _cell(nb, "add_test").metadata["nbgrader"]["points"] = 100; put("points", nb)
    (subs / "nothing").mkdir(); (subs / "nothing" / "notes.txt").write_text("forgot")
    zdir = root / "zsrc"; (zdir / "hw").mkdir(parents=True); nbformat.write(honest(), zdir / "hw" / "toy.ipynb")
    with zipfile.ZipFile(subs / "zipped.zip", "w") as z:
        z.write(zdir / "hw" / "toy.ipynb", "hw/toy.ipynb")
    (subs / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    # -- cheating: fool the checks ---------------------------------------------------------------
    attack("alwayseq", "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
                       "    __hash__ = int.__hash__\n"
                       "class Any:\n    def __eq__(self, other):\n        return True\n"
                       "def add(a, b):\n    return Any()")
    attack("patcher", WRONG_ADD + "import builtins, torch, numpy, course.testing\n"
                      "torch.isclose = lambda *a, **k: torch.tensor(True)\n"
                      "torch.allclose = lambda *a, **k: True\n"
                      "numpy.allclose = lambda *a, **k: True\n"
                      "course.testing.check_close = lambda *a, **k: None\n"
                      "builtins.isinstance = lambda *a: True\n"
                      "builtins.type = lambda *a: int\n")
    attack("transformer", WRONG_ADD + "def _swallow(lines):\n"
                          "    return ['try:\\n'] + ['    ' + l for l in lines] + ['\\nexcept BaseException:\\n    pass\\n']\n"
                          "get_ipython().input_transformers_post.append(_swallow)")
    attack("customexc", WRONG_ADD + "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)")
    # -- escaping: read or write what is not theirs ------------------------------------------------
    attack("reader", WRONG_ADD + "import glob, os\nfound = []\n"
                     f"for pattern in ['{root}/**/*', '{toy.CHECKS_DIR}/*', '../../../**/*.ipynb', '../../**/*',\n"
                     "                '/work/**/checks/*.py', '/tmp/**/toy_checks/*.py']:\n"
                     "    for p in glob.glob(pattern, recursive=True)[:200]:\n"
                     "        try:\n"
                     "            found.append(p + ': ' + open(p, errors='replace').read()[:2000])\n"
                     "        except Exception:\n"
                     "            pass\n"
                     "print('\\n'.join(found))")
    attack("writer", WRONG_ADD + "import sqlite3, os\n"
                     "for path in [" + repr(str(db_path)) + ", '../../../gradebook.db', '../../gradebook.db']:\n"
                     "    try:\n"
                     "        con = sqlite3.connect(path)\n"
                     "        con.execute('UPDATE grade SET auto_score = 100')\n"
                     "        con.commit()\n"
                     "        print('wrote', path)\n"
                     "    except Exception as e:\n"
                     "        print('refused', path, e)\n"
                     "try:\n"
                     f"    open('{subs}/a_honest/toy.ipynb', 'w').write('{{}}')\n"
                     "except Exception as e:\n"
                     "    print('refused', e)")
    attack("network", WRONG_ADD + "import socket\n"
                      f"for host in [('127.0.0.1', {listener.port}), ('1.1.1.1', 80)]:\n"
                      "    try:\n"
                      "        socket.create_connection(host, timeout=2).close()\n"
                      "        print('connected', host)\n"
                      "    except OSError as e:\n"
                      "        print('refused', host, e)")
    # -- exhausting the machine ---------------------------------------------------------------------
    attack("forkbomb", "import os, time\nn = 0\nfor i in range(2000):\n    try:\n        pid = os.fork()\n"
                       "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
                       "    n += 1\nprint('forked', n)")
    attack("membomb", "x = bytearray(10 * 2**30)")

    results = grade(subs, "toy", course_dir=root, db_url=db, cell_timeout=4, student_timeout=120,
                    checks_dir=toy.CHECKS_DIR, echo=False)
    listener.close()
    yield root, {r.student: r for r in results}, listener


def test_honest_students_get_full_marks(graded):
    _, r, _ = graded
    for sid in ("a_honest", "z_honest", "zipped", "kernel", "deleted", "points"):
        assert r[sid].status == "graded", r[sid]
        assert r[sid].auto_score == FULL and r[sid].auto_max == FULL, r[sid]
        assert not r[sid].review, r[sid]
    assert r["a_honest"].manual_pending == 2  # the written answer waits for a human


def test_blank_release_scores_zero(graded):
    assert graded[1]["blank"].status == "graded" and graded[1]["blank"].auto_score == 0


ATTACKS_ON_ADD = ["crash", "exit", "loop", "stubborn", "edited", "alwayseq", "patcher", "transformer",
                  "customexc", "reader", "writer", "network", "forkbomb", "membomb"]


@pytest.mark.parametrize("sid", ATTACKS_ON_ADD)
def test_attack_scores_zero_on_its_target_and_full_on_the_rest(graded, sid):
    r = graded[1][sid]
    assert r.status == "graded", r
    assert r.cells["add_test"] == 0, r.cells
    assert r.cells["mul_test"] == 3 and r.cells["sq_test"] == 3, r.cells
    assert r.auto_score == HONEST_REST


@pytest.mark.parametrize("sid", ["transformer", "alwayseq"])
def test_fooled_notebook_checks_are_flagged_for_review(graded, sid):
    r = graded[1][sid]
    assert "add_test" in r.review, f"{sid} fooled its own notebook but was not flagged: {r}"


def test_output_flood_is_capped_and_graded(graded):
    root, r, _ = graded
    assert r["flood"].status == "graded" and r["flood"].auto_score == FULL
    size = (root / "autograded/flood/toy/toy.ipynb").stat().st_size
    assert size < 2_000_000, f"autograded notebook is {size} bytes: output was not capped"


def test_invalid_and_missing_submissions_are_reported(graded):
    r = graded[1]
    assert r["badjson"].status == "invalid" and "not a valid notebook" in r["badjson"].message
    assert r["nothing"].status == "missing" and r["nothing"].auto_score == 0
    assert r["broken"].status == "invalid" and "zip" in r["broken"].message


def _outputs(root: Path, sid: str) -> str:
    nb = json.loads((root / "autograded" / sid / "toy" / "toy.ipynb").read_text())
    return json.dumps([c.get("outputs", []) for c in nb["cells"]])


def test_sandbox_hides_the_course_and_the_checks(graded):
    root, _, _ = graded
    out = _outputs(root, "reader")
    assert CHECKS_CANARY not in out, "the hidden checks were readable from the student's kernel"
    assert toy.CANARY not in out, "the source notebook was readable from the student's kernel"
    assert "gradebook" not in out and "a_honest" not in out and "BEGIN SOLUTION" not in out


def test_gradebook_and_other_students_cannot_be_written(graded):
    root, r, _ = graded
    assert "wrote" not in _outputs(root, "writer").replace("refused", "")
    assert r["writer"].cells["add_test"] == 0
    assert r["a_honest"].auto_score == FULL


def test_no_network(graded):
    root, _, listener = graded
    assert listener.connections == 0, "a submission reached a server on the grader's loopback"
    assert "connected" not in _outputs(root, "network")


def test_process_and_memory_limits(graded):
    root, _, _ = graded
    m = re.search(r"forked (\d+)", _outputs(root, "forkbomb"))
    assert m and int(m.group(1)) < 400, "the process limit did not stop the fork bomb"
    assert "MemoryError" in _outputs(root, "membomb")


def test_feedback_shows_check_names_never_code(graded):
    root, _, _ = graded
    pages = list((root / "feedback").rglob("*.html"))
    assert {p.parts[-3] for p in pages} >= {"a_honest", "crash", "exit", "blank", "reader"}
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert toy.CANARY not in text and CHECKS_CANARY not in text, f"hidden tests leaked into {page}"
        assert "def add_negative" not in text and "h.call" not in text
    crash = html.unescape(re.sub(r"<[^>]+>", "", (root / "feedback/crash/toy/toy.html").read_text()))
    assert "add on negative numbers" in crash and "your code raised ValueError: oops" in crash


def test_csv_gradebook(graded):
    root, r, _ = graded
    rows = {row["student"]: row for row in csv.DictReader(open(root / "grades-toy.csv"))}
    assert set(rows) == set(r)
    assert float(rows["a_honest"]["auto_score"]) == FULL
    assert rows["badjson"]["status"] == "invalid" and float(rows["badjson"]["auto_max"]) == FULL
    assert "add_test" in rows["transformer"]["review"]


def test_failed_submissions_leave_no_gradebook_entry(graded):
    from nbgrader.api import Gradebook

    root = graded[0]
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "attention-course") as gb:
        ids = {s.student.id for s in gb.find_assignment("toy").submissions}
    assert "badjson" not in ids and "nothing" not in ids and "a_honest" in ids


def test_grading_refuses_without_sandbox(tmp_path, monkeypatch):
    import autograder.sandbox as sb

    monkeypatch.setattr(sb, "check_available", lambda: "bubblewrap is not installed")
    with pytest.raises(SystemExit, match="refusing to grade") as e:
        grade(tmp_path, "toy", course_dir=tmp_path, echo=False)
    assert "--unsafe" in str(e.value) and "bubblewrap is not installed" in str(e.value)


def test_zip_slip_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../../escape.ipynb", "{}")
    students, problems = collect(tmp_path, tmp_path / "staging")
    assert "evil" in problems and "unsafe path" in problems["evil"]
    assert not (tmp_path.parent / "escape.ipynb").exists()


def test_solutions_keep_code_and_drop_hidden_tests():
    nb = strip_for_solutions(toy.toy_notebook())
    text = json.dumps(nb)
    assert "return a + b" in text
    assert toy.CANARY not in text and "BEGIN" not in text and "END HIDDEN" not in text
