"""The autograder on a tiny course (tests/toy.py, hidden checks in tests/toy_checks/).

One grading run of many submissions, honest and hostile. Every attack scores zero on
what it attacks, full marks on its honest parts, is reported on its own row, and leaves
every other student's grade unchanged. Kernels run in the bubblewrap sandbox and the
hidden checks in the trusted grader process.
"""
from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
import socket
import threading
import time
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

HOST_SECRET = "HOST-SECRET-3b8e"  # a 0600 file of the grader's: never in any student's output or feedback
HIDDEN_INPUT = "5713"  # only in tests/toy_checks/toy.py: an input of a hidden check
XSS_MARKDOWN = ("My answer <script>alert('xss-md')</script> <img src=x onerror=\"alert('xss-onerror')\"> "
                "[link](javascript:alert('xss-link')) <iframe src=\"javascript:alert('xss-iframe')\"></iframe> "
                "**bold** and $\\sqrt{d_k}$")

pytestmark = pytest.mark.skipif(check_available() is not None, reason=f"no sandbox: {check_available()}")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _zip_flag(data: bytes, offset_local: int, offset_central: int, fn) -> bytes:
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        i = b.find(sig)
        fn(b, i + off)
    return bytes(b)


def _encrypt_flag(data: bytes) -> bytes:
    """Mark the member as encrypted (general purpose flag bit 0) in both headers."""
    def setbit(b, i):
        b[i] |= 1
    return _zip_flag(data, 6, 8, setbit)


def _bad_method(data: bytes) -> bytes:
    """An unknown compression method (99) in both headers."""
    def method(b, i):
        b[i:i + 2] = (99).to_bytes(2, "little")
    return _zip_flag(data, 8, 10, method)


def _corrupt_deflate(data: bytes) -> bytes:
    """Garbage in the middle of the deflate stream."""
    b = bytearray(data)
    start = b.find(b"PK\x03\x04") + 30 + len("toy.ipynb")
    for i in range(start + 20, start + 60):
        b[i] ^= 0xA5
    return bytes(b)


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
    attack("answers", WRONG_ADD + "import course, glob, os, re\n"
                      "for p in sorted(glob.glob(os.path.dirname(course.__file__) + '/**/*.py', recursive=True)):\n"
                      "    print(p, re.findall(r'^(?:def|class) \\w+', open(p).read(), re.M))\n"
                      "try:\n"
                      "    from course.local_attention import LocalAttention2d\n"
                      "    import inspect\n"
                      "    print(inspect.getsource(LocalAttention2d))\n"
                      "except Exception as e:\n"
                      "    print('refused:', e)")
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

    # -- the grading boundary (links, hidden inputs, HTML, tampering, resources, identities) ---------
    secret = root / "host-secret.txt"
    secret.write_text(HOST_SECRET)
    secret.chmod(0o600)
    checks_file = toy.CHECKS_DIR / "toy.py"
    targets = {"checks": checks_file, "gradebook": db_path, "secret": secret,
               "source": root / "source/toy/toy.ipynb", "other": root / "submitted/a_honest/toy/toy.ipynb"}
    attack("linker", WRONG_ADD + "import os\n"
                     f"targets = {[str(t) for t in targets.values()]!r}\n"
                     "rel = ['../../../gradebook.db', '../../../source/toy/toy.ipynb', '../../../submitted/a_honest/toy/toy.ipynb']\n"
                     "for i, t in enumerate(targets + rel):\n"
                     "    for name in (f'leak{i}.html', f'leak{i}.ipynb', f'leak{i}.txt'):\n"
                     "        try:\n"
                     "            os.symlink(t, name)\n"
                     "        except OSError as e:\n"
                     "            print('refused', e)\n"
                     "for nb in ('toy.ipynb', '../toy.ipynb'):\n"
                     "    try:\n"
                     "        if os.path.exists(nb):\n"
                     "            os.remove(nb)\n"
                     "        os.symlink(targets[1], nb)\n"
                     "    except OSError as e:\n"
                     "        print('refused', e)\n"
                     "try:\n"
                     "    os.symlink(targets[0], 'feedback')\n"
                     "except OSError as e:\n"
                     "    print('refused', e)\n")
    nb = honest()
    _cell(nb, "add").source = ("_LOG = []\ndef add(a, b):\n    _LOG.append((a, b))\n    return a + b\n")
    _cell(nb, "mul").source = ("def mul(a, b):\n    if len(_LOG) > 1:\n        raise ValueError(f'leaked {_LOG}')\n"
                               "    return a * b\n")
    _cell(nb, "sq").source = ("def sq(x):\n    print('seen', _LOG)\n    from IPython.display import display, HTML\n"
                              "    display(HTML(f'<b>{_LOG}</b>'))\n    return x * x\n")
    nb.cells.append(nbformat.v4.new_code_cell("print('at the end', _LOG)"))
    put("recorder", nb)
    nb = honest()
    _cell(nb, "why").source = XSS_MARKDOWN
    _cell(nb, "sq").source += ("\nfrom IPython.display import display, HTML, Javascript\n"
                               "display(HTML(\"<script>alert('xss-html')</script><b onmouseover=alert('xss-b')>hi</b>\"))\n"
                               "display(Javascript(\"alert('xss-js')\"))\n"
                               "display({'text/html': '<img src=x onerror=alert(\"xss-img\")>', 'text/plain': 'img'}, raw=True)\n")
    put("xss", nb)
    nb = honest(); _cell(nb, "add_test").metadata["nbgrader"]["checksum"] = "0" * 32; put("t_checksum", nb)
    nb = honest(); c = _cell(nb, "mul_test"); c.cell_type = "markdown"; c.pop("outputs", None)
    c.pop("execution_count", None); put("t_markdown", nb)
    nb = honest(); _cell(nb, "sq_test").metadata["nbgrader"]["points"] = 1000; put("t_points", nb)
    nb = honest(); nb.cells.append(nbformat.from_dict(json.loads(json.dumps(_cell(nb, "add_test"))))); put("t_dup", nb)
    attack("filler", WRONG_ADD + "import os\nfor where in ('.', '/tmp', os.path.expanduser('~'), '/dev/shm'):\n"
                     "    try:\n"
                     "        with open(os.path.join(where, 'fill.bin'), 'wb') as f:\n"
                     "            for _ in range(2048):\n"
                     "                f.write(b'x' * 2**20)\n"
                     "    except OSError as e:\n"
                     "        print('stopped', where, e.errno)\n"
                     "    for i in range(3000):\n"
                     "        try:\n"
                     "            open(os.path.join(where, f'f{i}'), 'w').close()\n"
                     "        except OSError:\n"
                     "            break\n")
    nb = honest()
    _cell(nb, "add").source = "def add(a, b):\n    print('flood-in-check ' * 400_000)\n    return a + b\n"
    put("checkflood", nb)
    leak_first = "def add(a, b):\n    if (a, b) == (1, 2):\n        return 3\n"
    attack("leakshape", leak_first + "    raise RuntimeError(f'The size of tensor a ({abs(a)}) must match the size of "
                                     "tensor b (1) at non-singleton dimension 0')\n")
    attack("leakline", "open('/tmp/s.py', 'w').write('pass\\n' * 100000)\n" + leak_first
           + "    exec(compile('\\n' * (abs(a) - 1) + 'raise ValueError(1)', '/tmp/s.py', 'exec'))\n")
    attack("leakname", "# " + " ".join(f"N{i}" for i in range(6000)) + "\n" + leak_first
           + "    raise type(f'N{abs(a)}', (Exception,), {})()\n")
    attack("leakwire", "import IPython.display as _d, json as _j\n_LOG = []\n_orig = _d.publish_display_data\n"
                       "def add(a, b):\n    _LOG.append((a, b))\n    return 0\n"
                       "def _pub(data, *args, **kw):\n    m = 'application/x-course-grader+json'\n"
                       "    if m in data and _LOG:\n"
                       "        data = {m: _j.dumps({'ok': True, 'value': {'__tensor__': {'dtype': 'L%r' % (_LOG[-1],), "
                       "'shape': [abs(_LOG[-1][0]), 2], 'data': ''}}})}\n"
                       "    return _orig(data, *args, **kw)\n_d.publish_display_data = _pub\n")
    attack("leakwords", "import sys as _s\n_W = ['abs','all','any','ascii','bin','bool','chr','dict','dir','divmod']\n"
                        "def add(a, b):\n    if a != 1:\n"
                        "        raise TypeError('add() got an unexpected keyword argument ' + "
                        "' '.join(repr(_W[int(c)]) for c in str(abs(a))))\n    return a + b\n")
    put("-2+3", honest())  # an id that looks like an option (and a formula)
    nb = honest()
    nb.cells.append(nbformat.v4.new_code_cell(
        "from IPython.display import display\nfor i in range(1500):\n"
        "    display({'text/plain': 'x'}, raw=True, display_id=f'd{i}')"))
    nb.cells.append(nbformat.v4.new_code_cell(
        "from IPython.display import update_display\nfor i in range(1500):\n"
        "    update_display({'text/plain': 'y' * 99000}, raw=True, display_id=f'd{i}')"))
    put("displayflood", nb)
    put("Zoë", honest())
    put("Zoé", honest())
    put("Bob", honest())
    put("bob", honest())
    (subs / "nblink").mkdir()
    os.symlink(subs / "a_honest" / "toy.ipynb", subs / "nblink" / "toy.ipynb")
    (subs / "hostlink").mkdir()
    os.symlink(secret, subs / "hostlink" / "toy.ipynb")
    for sid, patch in (("encrypted", _encrypt_flag), ("badmethod", _bad_method), ("corrupt", _corrupt_deflate)):
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("toy.ipynb", nbformat.writes(honest()))
        (subs / f"{sid}.zip").write_bytes(patch(data.getvalue()))
    big = honest()
    big.cells.append(nbformat.v4.new_markdown_cell("x" * (25 * 2**20)))
    put("bignb", big)
    (subs / "manyfiles").mkdir()
    nbformat.write(honest(), subs / "manyfiles" / "toy.ipynb")
    for i in range(20_000):
        (subs / "manyfiles" / f"junk{i}.txt").touch()
    protected = {name: _digest(path) for name, path in targets.items() if name not in ("other", "gradebook")}
    modes = {name: path.stat().st_mode for name, path in targets.items() if name != "other"}

    t0 = time.perf_counter()
    results = grade(subs, "toy", course_dir=root, db_url=db, cell_timeout=4, student_timeout=120,
                    checks_dir=toy.CHECKS_DIR, echo=False)
    elapsed = time.perf_counter() - t0
    listener.close()
    yield root, {r.student: r for r in results}, listener
    # after the fixture's users: the host files the linker aimed at are untouched
    assert {name: _digest(path) for name, path in targets.items() if name not in ("other", "gradebook")} == protected
    assert {name: path.stat().st_mode for name, path in targets.items() if name != "other"} == modes
    assert elapsed < 600, f"grading the toy class took {elapsed:.0f} s"


def test_honest_students_get_full_marks(graded):
    _, r, _ = graded
    for sid in ("a_honest", "z_honest", "zipped", "kernel", "Zoë", "Zoé"):
        assert r[sid].status == "graded", r[sid]
        assert r[sid].auto_score == FULL and r[sid].auto_max == FULL, r[sid]
        assert not r[sid].review, r[sid]
    assert r["a_honest"].manual_pending == 2  # the written answer waits for a human


def test_blank_release_scores_zero(graded):
    assert graded[1]["blank"].status == "graded" and graded[1]["blank"].auto_score == 0


ATTACKS_ON_ADD = ["crash", "exit", "loop", "stubborn", "edited", "alwayseq", "patcher", "transformer",
                  "customexc", "reader", "answers", "writer", "network", "forkbomb", "membomb"]


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


def test_the_kernel_course_has_no_answers_to_print(graded):
    """The course package the kernel imports lacks the definitions that answer open assignments: a cell that
    reads its files or imports them cannot print them into the feedback (the checks send their references in
    compiled, after the last cell)."""
    root, _, _ = graded
    out = _outputs(root, "answers")
    page = "".join(p.read_text() for p in (root / "feedback" / "answers").rglob("*.html"))
    assert "def check_close" in out and "class DeviceLoader" in out, "the attack read nothing: the test proves nothing"
    assert "refused: cannot import name 'LocalAttention2d'" in out
    for answer in ("def scaled_dot_product_attention", "class MultiHeadAttention", "def masked_softmax",
                   "class LocalAttention2d", "def local_attention_naive", "class Encoder"):
        assert answer not in out and answer not in page, f"{answer!r} reached the student's output"


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
    assert "add on negative numbers" in crash, crash[-3000:]
    assert "your code raised ValueError (in add)" in crash, crash[-3000:]


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
    (evil,) = collect(tmp_path, tmp_path / "staging", ["toy.ipynb"])
    assert evil.student == "evil" and evil.problem, evil
    assert not (tmp_path.parent / "escape.ipynb").exists() and not (tmp_path / "escape.ipynb").exists()


def test_solutions_keep_code_and_drop_hidden_tests():
    nb = strip_for_solutions(toy.toy_notebook())
    text = json.dumps(nb)
    assert "return a + b" in text
    assert toy.CANARY not in text and "BEGIN" not in text and "END HIDDEN" not in text


# -- the grading boundary ----------------------------------------------------------------------------
def _tree(root: Path) -> list[Path]:
    return [Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files]


def test_links_planted_by_student_code_are_never_followed(graded):
    root, r, _ = graded
    assert r["linker"].status == "graded" and r["linker"].cells["add_test"] == 0, r["linker"]
    assert r["linker"].cells["mul_test"] == 3 and r["linker"].cells["sq_test"] == 3
    for top in ("autograded", "feedback", "submitted"):
        for path in _tree(root / top):
            assert not path.is_symlink(), f"{path} is a link: something the kernel wrote was followed or copied"
    for path in _tree(root / "feedback" / "linker"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert HOST_SECRET not in text and CHECKS_CANARY not in text and toy.CANARY not in text, path
            assert "SQLite format" not in text, f"the gradebook was copied into {path}"
    assert sorted(p.name for p in (root / "feedback/linker/toy").iterdir()) == ["toy.html"]
    # the gradebook still works and every honest student kept their grade
    assert r["z_honest"].auto_score == FULL and r["a_honest"].auto_score == FULL


def test_hidden_inputs_never_reach_the_student(graded):
    root, r, _ = graded
    rec = r["recorder"]
    assert rec.status == "graded" and rec.cells["add_test"] == 4 and rec.cells["sq_test"] == 3, rec
    assert rec.cells["mul_test"] == 0, "mul raised during its hidden check"
    page = (root / "feedback/recorder/toy/toy.html").read_text()
    assert HIDDEN_INPUT not in page, "a hidden input reached the student's feedback"
    assert "at the end [(1, 2)]" in html.unescape(page), "the notebook's own outputs are kept"
    assert "your code raised ValueError" in html.unescape(page)
    assert HIDDEN_INPUT not in _outputs(root, "recorder")


def test_feedback_html_is_inert(graded):
    from lxml import html as lhtml

    root, r, _ = graded
    assert r["xss"].status == "graded" and r["xss"].auto_score == FULL, r["xss"]
    for page in (root / "feedback/xss/toy/toy.html", ):
        text = page.read_text()
        doc = lhtml.fromstring(text)
        for el in doc.iter():
            if not isinstance(el.tag, str):
                continue
            assert el.tag.lower() not in ("iframe", "object", "embed", "base"), f"<{el.tag}> in {page.name}"
            if el.tag.lower() == "script":
                assert "xss" not in (el.text or "") and "xss" not in el.get("src", ""), "a student's script survived"
            for name, value in el.attrib.items():
                assert not (name.lower().startswith("on") and "xss" in value), f"{name}={value!r} survived"
                assert not value.strip().lower().startswith("javascript:"), f"{name}={value!r} survived"
        assert "Content-Security-Policy" in text
        assert "bold" in text and "sqrt{d_k}" in text, "the written answer itself must survive"
    # what the formgrader renders for the instructor is the autograded notebook: inert too
    nb = json.loads((root / "autograded/xss/toy/toy.ipynb").read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not any("application/javascript" in o.get("data", {}) for o in outputs)
    blob = json.dumps([outputs, [c["source"] for c in nb["cells"] if c["cell_type"] != "code"]])
    assert "alert('xss-html')" not in blob and "onerror" not in blob and "<script" not in blob


@pytest.mark.parametrize("sid,what", [("t_checksum", "checksum"), ("t_markdown", "mul_test"),
                                      ("t_points", "points"), ("t_dup", "add_test"), ("points", "points"),
                                      ("deleted", "add_test"), ("edited", "add_test")])
def test_tampered_metadata_is_restored_and_flagged(graded, sid, what):
    r = graded[1][sid]
    assert r.status == "graded", r
    expected = FULL if sid not in ("edited",) else HONEST_REST
    assert r.auto_score == expected and r.auto_max == FULL, r
    assert what in r.review, f"{sid}: the review flag should name {what!r}: {r.review!r}"


def test_disk_and_file_floods_stay_in_the_sandbox(graded):
    root, r, _ = graded
    assert r["filler"].status == "graded" and r["filler"].cells["add_test"] == 0
    assert r["filler"].cells["mul_test"] == 3 and r["filler"].cells["sq_test"] == 3
    assert "stopped" in _outputs(root, "filler"), "writing 8 GB should have hit the sandbox's quota"
    total = sum(p.stat().st_size for p in _tree(root) if p.is_file() and not p.is_symlink())
    assert total < 200 * 2**20, f"the course folder grew to {total / 2**20:.0f} MiB"
    assert len(_tree(root / "autograded/filler")) <= 3


def test_output_sent_during_hidden_checks_is_dropped(graded):
    root, r, _ = graded
    assert r["checkflood"].status == "graded" and r["checkflood"].auto_score == FULL, r["checkflood"]
    assert (root / "autograded/checkflood/toy/toy.ipynb").stat().st_size < 2_000_000


def test_student_ids_never_merge(graded):
    r = graded[1]
    assert r["Zoë"].auto_score == FULL and r["Zoé"].auto_score == FULL, "two students, two grades"
    bobs = [x for sid, x in r.items() if sid.casefold().startswith("bob")]
    assert len(bobs) == 2, "Bob/ and bob/ are two rows"
    for x in bobs:
        assert x.status == "invalid" and "collision" in x.message, x
        assert "'Bob'" in x.message and "'bob'" in x.message, x.message


def test_linked_notebooks_are_refused_unread(graded):
    root, r, _ = graded
    for sid in ("nblink", "hostlink"):
        assert r[sid].status == "invalid" and "link" in r[sid].message, r[sid]
        assert HOST_SECRET not in r[sid].message
    assert HOST_SECRET not in (root / "grades-toy.csv").read_text()


def test_bad_zips_and_huge_submissions_affect_only_their_student(graded):
    r = graded[1]
    for sid in ("encrypted", "badmethod", "corrupt", "bignb", "manyfiles"):
        assert r[sid].status == "invalid" and r[sid].message, r[sid]
        assert r[sid].auto_score == 0
    assert "MiB" in r["bignb"].message
    assert r["zipped"].auto_score == FULL


def test_a_hostile_student_is_stopped_soon_after_the_time_limit(tmp_path):
    root = toy.make_course(tmp_path / "course")
    db = f"sqlite:///{root / 'gradebook.db'}"
    generate_release(root, "toy", root / "assignments" / "toy", db)
    release = nbformat.read(root / "assignments/toy/toy.ipynb", as_version=4)
    nb = fill(release, nbformat.read(root / "source/toy/toy.ipynb", as_version=4))
    _cell(nb, "add").source = ("import signal, subprocess\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                               "child = subprocess.Popen(['sleep', '987654'])\n"
                               "while True:\n    try:\n        pass\n    except BaseException:\n        pass\n")
    (tmp_path / "subs" / "stuck").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "stuck" / "toy.ipynb")
    t0 = time.perf_counter()
    (res,) = grade(tmp_path / "subs", "toy", course_dir=root, db_url=db, cell_timeout=300, student_timeout=20,
                   checks_dir=toy.CHECKS_DIR, echo=False)
    took = time.perf_counter() - t0
    assert res.status == "timeout", res
    assert took < 20 + 15, f"the student was stopped {took - 20:.0f} s after the limit"
    time.sleep(1)
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == b"sleep\x00987654\x00"]
    assert not leftover, "a process the student started survived the time limit"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("sid", ["leakshape", "leakline", "leakname", "leakwire", "leakwords"])
def test_kernel_text_during_checks_cannot_carry_hidden_inputs(graded, sid):
    root, r, _ = graded
    assert r[sid].status == "graded" and r[sid].cells["add_test"] == 0, r[sid]
    if sid != "leakwire":  # a tampered agent spoils every later reply: its other cells score 0 too
        assert r[sid].cells["mul_test"] == 3 and r[sid].cells["sq_test"] == 3
    # the student's own code may contain the number (leakname lists N0..N5999): look at what ran
    assert HIDDEN_INPUT not in _outputs(root, sid), f"{sid}: a hidden input reached the feedback"
    assert HIDDEN_INPUT not in r[sid].message + r[sid].review
    page = html.unescape(re.sub(r"<[^>]+>", "", (root / f"feedback/{sid}/toy/toy.html").read_text()))
    assert "hidden check" in page and all(HIDDEN_INPUT not in line for line in page.splitlines()
                                          if "your code raised" in line or "could not be read" in line)


def test_updates_of_earlier_displays_count_against_the_output_budget(graded):
    root, r, _ = graded
    assert r["displayflood"].status == "graded" and r["displayflood"].auto_score == FULL, r["displayflood"]
    assert (root / "autograded/displayflood/toy/toy.ipynb").stat().st_size < 12_000_000
    assert (root / "feedback/displayflood/toy/toy.html").stat().st_size < 20_000_000


def test_words_chosen_by_the_student_are_not_shown(graded):
    root, r, _ = graded
    out = _outputs(root, "leakwords")
    assert "your code raised TypeError" in out and "'bool'" not in out and "'dict'" not in out


def test_ids_that_look_like_options_or_formulas_are_graded_as_text(graded, tmp_path):
    from autograder.grade import Result, write_csv

    root, r, _ = graded
    assert r["2+3"].status == "graded" and r["2+3"].auto_score == FULL, r["2+3"]
    write_csv([Result("x", message="=HYPERLINK(1)", review="+1+1"), Result("@SUM")], tmp_path / "g.csv", "toy")
    rows = {row["student"]: row for row in csv.DictReader(open(tmp_path / "g.csv"))}
    assert rows["x"]["message"] == "'=HYPERLINK(1)" and rows["x"]["review"] == "'+1+1" and "'@SUM" in rows
