"""The units RobustExecute is wired from, without a kernel: the output limits
(autograder.output_limits), the trusted check runner (autograder.checkrunner, driven
through the real grading agent run in-process) and the feedback's hidden-test stripping."""
from __future__ import annotations

import base64
import json
import marshal
import re
import sys
import types
import warnings

import pytest
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_code_cell, new_output
from traitlets.config import Config

from autograder import agent, checkrunner, release
from autograder.checkrunner import DiedInCheck, TrustedChecks, apply_verdict, is_test_cell
from autograder.output_limits import (
    MAX_REPLY_CHARS, AgentReplyOnly, OutputBudget, coerce_execution_count, output_size,
)
from autograder.preprocessors import HiddenTestsError, HideHiddenTests, RobustExecute
from autograder.trusted import CellVerdict, load_checks

import toy


def _stream(text: str) -> dict:
    return {"msg_type": "stream", "content": {"name": "stdout", "text": text}}


def _display(data: dict, msg_type: str = "display_data") -> dict:
    return {"msg_type": msg_type, "content": {"data": data, "metadata": {}}}


# -- the output budget --------------------------------------------------------------------------

def test_output_sizes():
    assert output_size(_stream("abc")) == 3
    assert output_size(_display({"text/plain": "12345", "text/html": "<b>"})) == 8
    assert output_size(_display({"text/plain": "xy"}, "execute_result")) == 2
    err = {"msg_type": "error", "content": {"ename": "E", "evalue": "v", "traceback": ["a", "b"]}}
    assert output_size(err) == len(str(["a", "b"]))
    assert output_size({"msg_type": "clear_output", "content": {"wait": False}}) == 0
    assert output_size({"msg_type": "status", "content": {}}) == 0


def test_budget_per_cell_cuts_a_cell_once_with_one_note():
    budget, outs = OutputBudget(per_cell=10, total=1000), []
    assert budget.admit(outs, _stream("x" * 6), 0)
    assert budget.admit(outs, _stream("x" * 4), 0)  # exactly at the limit: kept
    assert outs == []
    assert not budget.admit(outs, _stream("x"), 0)
    assert not budget.admit(outs, _stream(""), 0)  # nothing more of that cell, however small
    assert not budget.admit(outs, _stream("x" * 50), 0)
    assert len(outs) == 1 and outs[0].output_type == "stream" and outs[0].name == "stdout"
    assert "truncated" in outs[0].text and "10 characters in the cell" in outs[0].text
    assert "1000 in the notebook" in outs[0].text
    assert budget.truncated == {0}
    # dropped output still counts against the notebook
    assert budget.used_by_cell[0] == 61 and budget.used == 61
    other: list = []
    assert budget.admit(other, _stream("y" * 10), 1) and other == []  # other cells keep their own budget


def test_budget_whole_notebook():
    budget = OutputBudget(per_cell=100, total=150)
    assert budget.admit([], _stream("x" * 100), 0)
    outs1: list = []
    assert not budget.admit(outs1, _stream("x" * 51), 1)  # over the notebook's budget
    assert len(outs1) == 1 and "150 in the notebook" in outs1[0].text
    outs2: list = []
    assert not budget.admit(outs2, _stream(""), 2)  # once the notebook is over, every cell is cut
    assert len(outs2) == 1
    assert budget.truncated == {1, 2}


def test_budget_updates_of_displays():
    budget = OutputBudget(per_cell=10, total=100)
    update = _display({"text/plain": "x" * 10})
    from autograder.output_limits import update_size

    assert update_size(update) == 10
    assert budget.update_fits(10) and not budget.update_fits(11)
    assert budget.charge_update(10, copies=3)  # each rewritten copy counts
    assert budget.used == 30
    assert budget.charge_update(10, copies=7)  # 100: at the limit
    assert not budget.charge_update(1, copies=1)
    assert budget.used == 101
    assert not budget.admit([], _stream(""), 5)  # and later output of any cell is cut


# -- a hidden check's request: only the agent's reply -------------------------------------------

def test_only_the_first_agent_reply_is_kept():
    keep, outs = AgentReplyOnly(), []
    keep.keep(outs, _stream("a print of the student's"))
    keep.keep(outs, _display({"text/plain": "a display"}))
    keep.keep(outs, _display({"text/plain": "a result"}, "execute_result"))
    keep.keep(outs, _display({agent.MIME: ["not a string"]}))
    keep.keep(outs, _display({agent.MIME: "x" * (MAX_REPLY_CHARS + 1)}))
    assert outs == []
    keep.keep(outs, _display({agent.MIME: '{"ok": true}', "text/plain": "smuggled"}))
    keep.keep(outs, _display({agent.MIME: '{"ok": false}'}))
    keep.keep(outs, {"msg_type": "error", "content": {"ename": "E", "evalue": "after the reply"}})
    assert outs == [NotebookNode(output_type="display_data", metadata={}, data={agent.MIME: '{"ok": true}'})]


def test_errors_before_a_reply_keep_the_last_one_cut_short():
    keep, outs = AgentReplyOnly(), []
    keep.keep(outs, {"msg_type": "error", "content": {"ename": "First", "evalue": "one", "traceback": ["code"]}})
    keep.keep(outs, {"msg_type": "error", "content": {"ename": "N" * 300, "evalue": "v" * 900}})
    assert len(outs) == 1
    assert outs[0].ename == "N" * 100 and outs[0].evalue == "v" * 500
    assert outs[0].traceback == [f"{'N' * 100}: {'v' * 500}"]  # no frame of the code


@pytest.mark.parametrize("count, kept", [(3, 3), (None, None), ("3", None), (True, None), (3.0, None), ([1], None)])
def test_execution_count_is_an_int_or_none(count, kept):
    msg = {"msg_type": "execute_result", "content": {"execution_count": count}}
    coerce_execution_count(msg)
    assert msg["content"]["execution_count"] == kept and type(msg["content"]["execution_count"]) is type(kept)
    coerce_execution_count({"msg_type": "status", "content": None})  # no content: nothing to do


# -- RobustExecute's wiring ---------------------------------------------------------------------

def test_config_trait_names():
    c = Config()
    values = dict(max_output_chars=7, max_total_output_chars=70, max_restarts=1, trusted=False,
                  checks_dir="/x", check_timeout=5, report_path="/r.json", timeout=9,
                  interrupt_on_timeout=True, kernel_name="python3")
    for name, value in values.items():
        c.RobustExecute[name] = value
    ex = RobustExecute(config=c)
    assert {name: getattr(ex, name) for name in values} == values


def test_output_is_routed_by_what_runs():
    ex = RobustExecute()
    ex._budget, ex._reply = OutputBudget(10, 100), AgentReplyOnly()
    outs: list = []
    ex._aside = "replay"  # replaying after a restart: nothing
    assert ex.output(outs, _display({agent.MIME: "{}"}), None, 0) is None and outs == []
    ex._aside = "request"  # a check's request: the reply only
    ex.output(outs, _stream("print"), None, 0)
    ex.output(outs, _display({agent.MIME: "{}"}), None, 0)
    assert [o.output_type for o in outs] == ["display_data"]
    assert ex._budget.used == 0  # neither counts against the notebook's budget
    ex._aside = ""
    outs = []
    ex.output(outs, _stream("x" * 11), None, 3)  # the notebook's own cell: the budget decides
    assert len(outs) == 1 and "truncated" in outs[0].text
    ex._display_id_map = {"d": {3: [0, 1]}}
    ex._aside = "request"
    ex._update_display_id("d", _display({"text/plain": "y"}))  # never during a check or a replay
    assert ex._budget.used == 11


# -- verdicts ----------------------------------------------------------------------------------

def _cell_with_outputs() -> NotebookNode:
    cell = new_code_cell("assert f() == 1", metadata={"nbgrader": {"grade": True, "grade_id": "g",
                                                                   "solution": False, "locked": True}})
    cell.outputs = [
        new_output("stream", name="stdout", text="printed\n"),
        new_output("execute_result", data={"text/plain": "42", "text/html": "<b>42</b>"}, execution_count=1),
        new_output("error", ename="AssertionError", evalue="\x1b[31mwrong\x1b[0m", traceback=["\x1b[31mframe"]),
    ]
    return cell


def test_a_passing_verdict_scores_and_keeps_the_visible_outcome_as_text():
    cell = _cell_with_outputs()
    verdict = CellVerdict("g", in_kernel_ok=False, results=[("first", True, ""), ("second", True, "")])
    apply_verdict(cell, verdict)
    assert [o.output_type for o in cell.outputs] == ["stream"] * 4  # no error left: nbgrader gives the points
    assert cell.outputs[0].text == "printed\n"
    assert cell.outputs[1].text == "42\n"
    assert cell.outputs[2].text == "[visible checks in your notebook] AssertionError: wrong\n"
    assert cell.outputs[3].text == "✔ hidden check: first\n✔ hidden check: second\n"


def test_a_failing_verdict_is_an_error_naming_checks_and_messages():
    cell = _cell_with_outputs()
    verdict = CellVerdict("g", in_kernel_ok=True, results=[("first", True, ""), ("second", False, "f(2) should be 4")])
    apply_verdict(cell, verdict)
    *_, last = cell.outputs
    assert sum(o.output_type == "error" for o in cell.outputs) == 1
    assert last.output_type == "error" and last.ename == "HiddenCheckFailed"
    assert last.evalue == "1 of 2 hidden checks failed\n✔ hidden check: first\n✘ hidden check: second\n    f(2) should be 4"
    assert last.traceback == [f"HiddenCheckFailed: {last.evalue}"]


# -- the check runner, against the real agent run in-process ----------------------------------

def _op(code: str) -> dict:
    return json.loads(base64.b64decode(re.search(r"agent\.handle\('([^']+)'", code).group(1)))  # __grader_agent.handle


@pytest.fixture
def kernel(monkeypatch):
    """A namespace standing in for the student's kernel, and ``request(code)`` that runs a
    grading agent's request in it and returns what RobustExecute would keep of it."""
    import IPython.display

    keep = {"reply": AgentReplyOnly(), "outs": []}

    def publish(data, *a, **k):
        keep["reply"].keep(keep["outs"], {"msg_type": "display_data", "content": {"data": data}})

    monkeypatch.setattr(IPython.display, "publish_display_data", publish)
    # the reference modules the checks need: one stand-in (the real ones would replace this process's course)
    code = marshal.dumps(compile("ANSWER = 42\n", "<_course_test_reference>", "exec"))
    monkeypatch.setattr(checkrunner, "reference_code",
                        lambda: {"_course_test_reference": ("5eed", base64.b64encode(code).decode())})
    ns: dict = {"__name__": "__main__"}
    ns["get_ipython"] = lambda: types.SimpleNamespace(user_ns=ns)
    exec(agent.install_code(), ns)  # RobustExecute installs it on the first request
    log: list[dict] = []

    def request(code: str) -> list:
        log.append(_op(code))
        keep["reply"], keep["outs"] = AgentReplyOnly(), []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the toy's sq warns on purpose
            exec(code, ns)
        return keep["outs"]

    yield types.SimpleNamespace(ns=ns, request=request, log=log)
    sys.modules.pop("_course_grader_agent", None)
    sys.modules.pop("_course_test_reference", None)


def _phase1(kernel, checks: TrustedChecks, nb, overrides: dict) -> None:
    """Run the notebook's code cells in order, with the student's versions of ``overrides``."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(cell.source, kernel.ns)
            for name, fn in overrides.get(cell.metadata["nbgrader"]["grade_id"], {}).items():
                kernel.ns[name] = fn
        checks.snapshot(index)


def _index(nb, gid: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == gid)


def test_checks_run_against_each_cells_snapshot(kernel, tmp_path, monkeypatch):
    nb = toy.toy_notebook()
    trusted = TrustedChecks(load_checks("toy", toy.CHECKS_DIR), kernel.request, nb)
    assert trusted.pending == [_index(nb, g) for g in ("add_test", "mul_test", "sq_test")]
    assert not trusted.checks_of(nb.cells[_index(nb, "add")])  # a solution cell has none
    # a wrong mul, defined after its grade cell ran (the notebook's asserts passed) ...
    _phase1(kernel, trusted, nb, {"mul_test": {"mul": lambda a, b: 0}})
    assert [r["op"] for r in kernel.log] == ["snapshot"] * 3
    # ... and a later cell that breaks add after its grade cell: not what add's checks see
    kernel.ns["add"] = lambda a, b: 0
    trusted.run_pending()
    assert trusted.pending == []
    v = trusted.verdicts
    assert set(v) == {_index(nb, g) for g in ("add_test", "mul_test", "sq_test")}
    assert v[_index(nb, "add_test")].passed and v[_index(nb, "sq_test")].passed
    mul = v[_index(nb, "mul_test")]
    assert mul.results == [("mul(2, 3) == 6", False, "mul(2, 3) should be 6"),
                           ("mul with a negative factor", False, "mul(-2, 4) should be -8")]
    assert mul.mirrored == [True, False] and mul.in_kernel_ok
    assert mul.disagrees  # the cell's own asserts passed, their trusted mirror did not
    # the references reach the kernel once, compiled, before the first check
    provides = [r for r in kernel.log if r["op"] == "provide"]
    assert [bool(r.get("code")) for r in provides] == [False, True, False, False]
    assert sys.modules["_course_test_reference"].ANSWER == 42
    # each cell: enter its snapshot, the checks, then whatever they left is undone
    ops = [r["op"] for r in kernel.log[3:] if r["op"] != "provide"]
    assert ops[:1] == ["enter"] and ops[-3:] == ["restore_all", "clear", "leave"]
    assert ops.count("enter") == 3 and ops.count("leave") == 3
    assert kernel.ns["add"](1, 2) == 0  # the kernel is back where the notebook left it
    # the cells' outputs carry the verdicts
    assert nb.cells[_index(nb, "mul_test")].outputs[-1].ename == "HiddenCheckFailed"
    assert "✔ hidden check: add on negative numbers" in nb.cells[_index(nb, "add_test")].outputs[-1].text
    # the report, by grade id
    path = tmp_path / "report.json"
    trusted.write_report(str(path))
    report = json.loads(path.read_text())
    assert set(report) == {"add_test", "mul_test", "sq_test"}
    assert report["mul_test"]["passed"] is False and report["mul_test"]["disagrees"] is True
    second = dict(report["mul_test"]["checks"][1])
    assert second.pop("seconds") >= 0  # each check's time: where a slow grade cell spends it
    assert second == {"name": "mul with a negative factor", "passed": False, "message": "mul(-2, 4) should be -8"}
    assert isinstance(report["add_test"]["seconds"], float)
    env_path = tmp_path / "env.json"
    monkeypatch.setenv("AUTOGRADER_TRUSTED_REPORT", str(env_path))
    trusted.write_report("")  # no report_path: the environment names the file
    assert json.loads(env_path.read_text()) == report


def test_a_kernel_lost_in_a_check_scores_that_cells_checks(kernel):
    nb = toy.toy_notebook()
    trusted = TrustedChecks(load_checks("toy", toy.CHECKS_DIR), kernel.request, nb)
    _phase1(kernel, trusted, nb, {})

    def dying(code):
        op = _op(code)
        if op["op"] == "call" and op["name"] == "mul":
            raise DeadKernelError("gone")
        return kernel.request(code)

    trusted.request = dying
    with pytest.raises(DiedInCheck):
        trusted.run_pending()
    assert trusted.verdicts[_index(nb, "add_test")].passed
    mul = trusted.verdicts[_index(nb, "mul_test")]
    assert [ok for _, ok, _ in mul.results] == [False, False]
    assert "kernel died while this check ran" in mul.results[0][2]
    assert mul.results[1][2] == "not run: the kernel died during an earlier check"
    assert mul.mirrored == [True, False]
    assert kernel.log[-1]["op"] == "enter"  # nothing more was asked of the dead kernel
    assert trusted.pending == [_index(nb, "sq_test")]  # the rest goes on with a fresh kernel
    assert set(trusted.report) == {"add_test", "mul_test"}
    # out of restarts: what is left scores 0, in the verdicts but not the report
    trusted.fail_pending("not run: the kernel died too many times")
    sq = trusted.verdicts[_index(nb, "sq_test")]
    assert sq.results == [("sq on a few numbers", False, "not run: the kernel died too many times")]
    assert sq.mirrored == [False] and not sq.disagrees
    assert nb.cells[_index(nb, "sq_test")].outputs[-1].ename == "HiddenCheckFailed"
    assert trusted.pending == [] and set(trusted.report) == {"add_test", "mul_test"}


def test_a_check_that_times_out_and_cells_that_killed_the_kernel(kernel):
    nb = toy.toy_notebook()
    trusted = TrustedChecks(load_checks("toy", toy.CHECKS_DIR), kernel.request, nb)
    _phase1(kernel, trusted, nb, {})

    def hanging(code):
        if _op(code)["op"] == "call":
            raise CellTimeoutError("too slow")
        return kernel.request(code)

    trusted.request = hanging
    with pytest.raises(DiedInCheck):
        trusted.run_pending(skip=[_index(nb, "add_test")])  # a killer cell: never checked
    assert _index(nb, "add_test") not in trusted.verdicts
    mul = trusted.verdicts[_index(nb, "mul_test")]
    assert mul.results[0][2] == "your code did not finish in time during this check"


def test_a_tampered_agent_fails_the_checks_not_the_grader(kernel):
    nb = toy.toy_notebook()
    trusted = TrustedChecks(load_checks("toy", toy.CHECKS_DIR), lambda code: [], nb)  # no reply ever
    trusted.run_pending()
    assert set(trusted.verdicts) == {_index(nb, g) for g in ("add_test", "mul_test", "sq_test")}
    for v in trusted.verdicts.values():
        assert not v.passed and all("no answer came back" in msg for _, _, msg in v.results)


def test_no_checks_no_pending_empty_report(tmp_path):
    nb = toy.toy_notebook()
    trusted = TrustedChecks({}, lambda code: pytest.fail("no request without checks"), nb)
    assert trusted.pending == []
    for index in range(len(nb.cells)):
        trusted.snapshot(index)
    trusted.run_pending()
    trusted.write_report(str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == {}
    assert is_test_cell(nb.cells[_index(nb, "add_test")]) and not is_test_cell(nb.cells[_index(nb, "why")])


# -- feedback: hidden tests ------------------------------------------------------------------

def test_hidden_tests_are_replaced_by_a_placeholder():
    nb = toy.toy_notebook()
    cell = nb.cells[_index(nb, "add_test")]
    cell.outputs = [new_output("error", ename="AssertionError", evalue="\x1b[1mbad\x1b[0m",
                               traceback=["File cell, line 3", toy.CANARY])]
    HideHiddenTests().preprocess_cell(cell, {}, 3)
    assert toy.CANARY not in json.dumps(cell)
    assert cell.source == "assert add(1, 2) == 3, 'add(1, 2) should be 3'\n# (hidden tests: their results are shown below)"
    assert cell.outputs[0].traceback == ["AssertionError: bad"]


def test_a_hidden_region_without_its_end_is_an_error_naming_the_cell():
    nb = toy.toy_notebook()
    index = _index(nb, "mul_test")
    nb.cells[index].source = "assert mul(2, 3) == 6\n### BEGIN HIDDEN TESTS\nassert mul(5713, 1) == 5713\n"
    before = NotebookNode(json.loads(json.dumps(nb.cells[index])))
    # the release refuses such a source notebook ...
    assert release.marker_problems(nb, "toy.ipynb")
    # ... and feedback does not drop the rest of the cell in silence
    with pytest.raises(HiddenTestsError, match=r"toy\.ipynb: cell 'mul_test' \(cell 6\): line 2: "
                                               r"BEGIN HIDDEN TESTS without END HIDDEN TESTS"):
        HideHiddenTests().preprocess_cell(nb.cells[index], {"metadata": {"name": "toy.ipynb"}}, index)
    assert nb.cells[index] == before  # left as it was
    with pytest.raises(HiddenTestsError, match="notebook: cell 'mul_test'"):
        HideHiddenTests().preprocess_cell(nb.cells[index], {}, index)
    # a cell that is not a test cell is none of HideHiddenTests' business
    solution = nb.cells[_index(nb, "mul")]
    solution.source += "\n### BEGIN HIDDEN TESTS"
    HideHiddenTests().preprocess_cell(solution, {}, 4)


def test_a_check_message_cannot_carry_what_the_students_code_chose():
    """A check that quotes what the student's code returned (a parameter name, a value) must not hand the student
    arbitrary text: a reviewer's notebook made load_state_dict return the marshalled reference code as an
    "unexpected parameter", and the message carried 11 KB of it into the feedback."""
    import base64 as b64
    import zlib

    from autograder.checkrunner import MAX_MESSAGE_CHARS, MAX_MESSAGE_DIGITS, shown
    from autograder.trusted import Handle

    import nbformat

    from autograder import config as cfg

    aid = "03_local_attention"
    handle = Handle(lambda code: [], nbformat.read(cfg.repo_root() / cfg.RELEASE / aid / f"{aid}.ipynb", 4))
    chk = load_checks(aid)["grade_layer"][1]
    blob = b64.b64encode(zlib.compress(b"def local_attention(q, k, v): return F.unfold(k)" * 40)).decode()
    digits = " ".join(str(123456789012 + i) for i in range(60))  # code as groups of 12 digits
    message = (f"your LocalAttention2d has no parameter LEAKSTART {blob} 0.7797860503196716 {digits}: keep the "
               "parameter names and shapes of the notebook")
    out = shown(message, chk, handle)
    assert out.startswith("your LocalAttention2d has no parameter … …")  # the checks' own words stay
    assert out.endswith(": keep the parameter names and shapes of the notebook")
    assert "LEAKSTART" not in out and blob[:8] not in out and "7797860503196716" not in out
    assert sum(c.isdigit() for c in out) <= MAX_MESSAGE_DIGITS and len(out) <= MAX_MESSAGE_CHARS + 2
    # an honest message passes unchanged
    honest = ("naive: weights (B=1, N=1, D=2, H=1, W=4, K=3): neighbour row 1 differs (batch 0, head 0, row 0, "
              "column 1, neighbour column 2): got 0.0169, expected 0.6316; max abs error 6.1e-01 over 22/36 elements")
    assert shown(honest, chk, handle) == honest
    # Python's exception names are no one's choice: they stay (06's reviewer saw "your code raised …")
    assert shown("your code raised IndexError (in f)", chk, handle) == "your code raised IndexError (in f)"


def test_review_flags_a_disagreement_only_where_no_earlier_mistake_explains_it():
    from autograder.grade import disagreements

    def v(passed, in_kernel_ok, disagrees):
        return {"passed": passed, "in_kernel_ok": in_kernel_ok, "disagrees": disagrees}
    # part 1 wrong; part 3's asserts failed in the kernel (the student's part 1 ran there), its mirror passed
    assert disagreements({"p1": v(False, False, False), "p2": v(True, True, False), "p3": v(True, False, True)}) == []
    # every earlier part right: the kernel's failure has no explanation in the student's code
    assert disagreements({"p1": v(True, True, False), "p3": v(True, False, True)}) == ["p3"]
    # the asserts passed in the kernel but their trusted mirror failed: flagged whatever came before
    assert disagreements({"p1": v(False, False, False), "p3": v(False, True, True)}) == ["p3"]
    assert disagreements({"p1": v(True, True, False), "p2": "not a verdict"}) == []
