"""nbgrader preprocessors that make autograding robust and feedback safe.

- :class:`RobustExecute` runs a submission cell by cell like nbgrader's ``Execute``, but
  a dead kernel (``os._exit``, a segfault, the OOM killer) costs only the cell that
  killed it: the kernel is restarted, the cells before it are replayed silently, and
  grading goes on. It wires two units of its own: the output limits
  (:mod:`autograder.output_limits`) and the trusted hidden checks
  (:mod:`autograder.checkrunner`). The kernel is pinned.
- :class:`StderrToStdout` keeps a warning printed by a correct answer from scoring 0
  (nbgrader scores any stderr output in a grade cell as a failure).
- :class:`HideHiddenTests` removes hidden tests, and the tracebacks that would quote
  them, from the feedback a student receives.
"""
from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Integer, Unicode

from autograder import agent
from autograder.checkrunner import DiedInCheck, TrustedChecks, is_test_cell
from autograder.output_limits import (
    AgentReplyOnly, OutputBudget, coerce_execution_count, error_output, strip_ansi, update_size,
)
from autograder.trusted import CellVerdict, load_checks

#: Environment variable naming the JSON file RobustExecute adds each notebook's cell times to.
TIMING_ENV = "AUTOGRADER_TIMING_REPORT"


class RobustExecute(Execute):
    """nbgrader's ``Execute`` that survives dead kernels and output floods, and runs the
    trusted hidden checks (:mod:`autograder.trusted`).

    Two phases in one kernel:

    1. every cell runs in order, as the student wrote them (their outputs are what the
       feedback shows); right after each grade cell that has hidden checks, the kernel's
       names are snapshotted;
    2. after the last cell, the hidden checks of each grade cell run against its snapshot.

    So no cell of the student's runs after hidden inputs entered their kernel: a function
    that records its arguments during a check has no later cell to print them in. While a
    check talks to the kernel only the agent's reply is kept; whatever else the kernel sends
    (prints, displays, updates of earlier displays, widget messages) is dropped unread.

    A cell that kills the kernel (or hangs past the timeout and ignores the interrupt) gets
    an error saying so and never runs again; the kernel is restarted and the cells before
    it are replayed without keeping any output (their snapshots are taken again). A kernel
    lost during a grade cell's hidden checks scores those checks and grading goes on with
    the next grade cell. Past ``max_restarts`` restarts, or when a replay dies, the cells
    not run yet and the checks not run yet score 0 with a note.

    This class is the execution and restart loop; what is kept of the kernel's output is
    decided by :class:`~autograder.output_limits.OutputBudget` (the notebook's cells) and
    :class:`~autograder.output_limits.AgentReplyOnly` (a check's requests), and the checks,
    their verdicts and the report are :class:`~autograder.checkrunner.TrustedChecks`'.
    """

    max_output_chars = Integer(100_000, help="Characters of output kept per cell.").tag(config=True)
    max_total_output_chars = Integer(
        5_000_000, help="Characters of output kept in the whole notebook (updates of earlier displays "
                        "included); past it, later output is dropped.").tag(config=True)
    max_restarts = Integer(3, help="Kernel restarts allowed per notebook before giving up.").tag(config=True)
    trusted = Bool(True, help="Run the hidden checks of autograder/checks/ in this process.").tag(config=True)
    checks_dir = Unicode("", help="Folder of <assignment>.py check files (default autograder/checks).").tag(config=True)
    check_timeout = Integer(30, help="Seconds one request of a hidden check may take.").tag(config=True)
    report_path = Unicode("", help="JSON file for the per-cell trusted verdicts.").tag(config=True)

    #: set by autograder.mutants (never by configuration): the cell ranges of the several runs one
    #: notebook holds; each grade cell's checks see only the cells of its own run
    runs: list[tuple[int, int]] | None = None

    # -- what the kernel sends: kept within the limits of autograder.output_limits ------------
    def output(self, outs: list, msg: dict, display_id: Any, cell_index: int) -> Any:
        if self._aside == "replay":  # rebuilding state after a restart: nothing is kept
            return None
        if self._aside == "request":  # a hidden check's request: only the agent's reply counts
            self._reply.keep(outs, msg)
            return None
        if not self._budget.admit(outs, msg, cell_index):
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _update_display_id(self, display_id: str, msg: dict) -> None:
        # an update of an earlier output: never during a check or a replay, and capped
        size = update_size(msg)
        if self._aside or not self._budget.update_fits(size):
            return
        # every output it rewrites counts against the notebook's budget
        copies = sum(len(ix) for ix in self._display_id_map.get(display_id, {}).values())
        if self._budget.charge_update(size, copies):
            super()._update_display_id(display_id, msg)

    def process_message(self, msg: dict, cell: NotebookNode, cell_index: int):
        coerce_execution_count(msg)  # a kernel may send anything; nbformat wants an int
        return super().process_message(msg, cell, cell_index)

    def handle_comm_msg(self, outs: list, msg: dict, cell_index: int) -> None:
        """Widget messages are ignored: nothing renders them while grading, and their state
        would grow without bound."""

    def set_widgets_metadata(self) -> None:
        """No widget state is written into the graded notebook (see :meth:`handle_comm_msg`)."""

    # -- execution with restarts ----------------------------------------------------------
    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None):
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._budget = OutputBudget(self.max_output_chars, self.max_total_output_chars)
        self._aside = ""  # "replay" or "request" while a cell runs aside (see _run_aside)
        self._reply = AgentReplyOnly()
        aid = ((resources or {}).get("nbgrader") or {}).get("assignment")
        checks = load_checks(aid, self.checks_dir or None) if (self.trusted and aid) else {}
        trusted = TrustedChecks(checks, self._request, nb, runs=self.runs)
        #: the trusted verdict of each grade cell, by cell index (read by autograder.mutants)
        self.cell_verdicts: dict[int, CellVerdict] = trusted.verdicts
        #: by grade id: the verdict of each grade cell whose checks ran, with the seconds they took
        self.trusted_report: dict[str, dict] = trusted.report

        #: seconds each cell took in phase 1 (the cells that completed), by cell index
        self.cell_seconds: dict[int, float] = {}
        killers: list[int] = []  # cells that killed the kernel: never run again
        check_deaths = 0  # kernels lost during hidden checks (their cells are not killers)
        start = 0  # first cell not yet run; len(nb.cells) once phase 1 is over
        while True:
            current = start
            try:
                with self.setup_kernel():
                    info = self.wait_for_reply(self.kc.kernel_info())
                    if info is not None:
                        nb.metadata["language_info"] = info["content"]["language_info"]
                    # after a restart, rebuild the state (and the snapshots) the rest relies on
                    for index in range(start):
                        current = index
                        if nb.cells[index].cell_type == "code" and index not in killers:
                            self._run_aside(copy.deepcopy(nb.cells[index]), mode="replay")
                            trusted.snapshot(index)
                    for index in range(start, len(nb.cells)):  # phase 1
                        current = index
                        t0 = time.perf_counter()
                        self.preprocess_cell(nb.cells[index], resources, index)
                        self.cell_seconds[index] = time.perf_counter() - t0
                        trusted.snapshot(index)
                    start = current = len(nb.cells)
                    trusted.run_pending(skip=killers)  # phase 2
                break
            except DiedInCheck:
                # the checks of that cell are scored; go on with the next grade cell
                check_deaths += 1
                if check_deaths + len(killers) > self.max_restarts:
                    trusted.fail_pending("not run: the kernel died too many times")
                    break
            except (DeadKernelError, CellTimeoutError) as exc:
                hung = isinstance(exc, CellTimeoutError)
                if current < start:  # died while replaying: stop here
                    why = f"not run: the kernel died again while replaying cell {current}"
                    self._fail_rest(nb, start, why)
                    trusted.fail_pending(why)
                    break
                killers.append(current)
                nb.cells[current].outputs.append(error_output(
                    "CellTimeoutError" if hung else "DeadKernelError",
                    ("this cell did not finish within the time limit and ignored the interrupt"
                     if hung else "the kernel died while running this cell (os._exit, a crash or out of memory)")
                    + "; grading went on with a fresh kernel"))
                start = current + 1
                if len(killers) > self.max_restarts:
                    self._fail_rest(nb, start, "not run: the kernel died too many times")
                    trusted.fail_pending("not run: the kernel died too many times")
                    break
                self.log.warning("Kernel died in cell %d; restarting and replaying cells 0..%d", current, current - 1)
        trusted.write_report(self.report_path)
        self._write_timing(resources)
        return self.nb, self.resources

    def _write_timing(self, resources: Any) -> None:
        """Add this notebook's cell times to the JSON file named by ``$AUTOGRADER_TIMING_REPORT``
        (if set): ``{notebook: {"cells": {index: seconds}}}`` (read by :func:`autograder.scale.slowest_cell`)."""
        path = os.environ.get(TIMING_ENV, "")
        if not path:
            return
        name = ((resources or {}).get("nbgrader") or {}).get("notebook") or "notebook"
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
        data[name] = {"cells": {str(i): round(s, 4) for i, s in sorted(self.cell_seconds.items())}}
        with open(path, "w") as f:
            json.dump(data, f)

    def _run_aside(self, cell: NotebookNode, timeout: int | None = None, mode: str = "request") -> list:
        """Execute ``cell`` in the kernel without recording it in the notebook (nbclient
        writes an executed cell back into ``self.nb`` at its index). ``mode`` says what of
        its output is kept: "replay" nothing, "request" only the grading agent's reply."""
        scratch = NotebookNode(cells=[cell], metadata=self.nb.metadata, nbformat=4, nbformat_minor=5)
        nb, old_timeout = self.nb, self.timeout
        self.nb, self._aside, self._reply = scratch, mode, AgentReplyOnly()
        if timeout is not None:
            self.timeout = timeout
        try:
            self.execute_cell(cell, 0, store_history=False)
        finally:
            self.nb, self.timeout, self._aside = nb, old_timeout, ""
            self.clear_before_next_output = False  # a clear_output(wait=True) sent aside stays aside
        return cell.outputs

    def _request(self, code: str) -> list:
        """Run one request of the grading agent aside, within ``check_timeout``; its outputs
        (only the agent's reply, or an error)."""
        cell = NotebookNode(cell_type="code", source=code, metadata={}, outputs=[], execution_count=None)
        outputs = self._run_aside(cell, self.check_timeout)
        if agent.is_missing(outputs):  # a fresh (or emptied) kernel: install the agent, ask again
            self._run_aside(NotebookNode(cell_type="code", source=agent.install_code(), metadata={}, outputs=[],
                                         execution_count=None), self.check_timeout)
            cell = NotebookNode(cell_type="code", source=code, metadata={}, outputs=[], execution_count=None)
            outputs = self._run_aside(cell, self.check_timeout)
        return outputs

    @staticmethod
    def _fail_rest(nb: NotebookNode, start: int, why: str) -> None:
        """The code cells from ``start`` on were not run: each shows ``why`` as an error."""
        for cell in nb.cells[start:]:
            if cell.cell_type == "code":
                cell.outputs = [error_output("NotRun", why)]


class StderrToStdout(NbGraderPreprocessor):
    """Turn stderr output of grade cells into stdout, marked, so warnings don't score 0."""

    prefix = Unicode("[stderr] ").tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        if is_test_cell(cell):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    out["name"] = "stdout"
                    out["text"] = "".join(self.prefix + line for line in out["text"].splitlines(True))
        return cell, resources


class HiddenTestsError(ValueError):
    """A grade cell holds a hidden-test region without its end marker (see :class:`HideHiddenTests`)."""


class HideHiddenTests(NbGraderPreprocessor):
    """Strip hidden-test regions and traceback frames from grade cells in feedback.

    A region without its end marker is an error (:class:`HiddenTestsError`, naming the
    notebook, the cell and the line), not a cell whose rest is dropped from the feedback
    in silence: the release refuses such a source notebook
    (:func:`autograder.release.check_markers`), so a graded notebook holding one was not
    made from a release."""

    begin = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("END HIDDEN TESTS").tag(config=True)
    placeholder = Unicode("# (hidden tests: their results are shown below)").tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        if not is_test_cell(cell):
            return cell, resources
        kept: list[str] = []
        opened: int | None = None  # line number of the BEGIN of the region we are in
        for lineno, line in enumerate(cell.source.split("\n"), 1):
            if self.begin in line:
                opened = lineno
                kept.append(line[: len(line) - len(line.lstrip())] + self.placeholder)
            elif self.end in line:
                opened = None
            elif opened is None:
                kept.append(line)
        if opened is not None:
            name = ((resources or {}).get("metadata") or {}).get("name") or "notebook"
            grade_id = cell.metadata["nbgrader"].get("grade_id")
            raise HiddenTestsError(
                f"{name}: cell {grade_id!r} (cell {cell_index + 1}): line {opened}: {self.begin} without "
                f"{self.end}; the release refuses such a notebook, and its feedback would lose the rest of the cell")
        cell.source = "\n".join(kept)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                # the traceback quotes the cell's code; keep only what went wrong
                evalue = strip_ansi(str(out.get("evalue", "")))
                out["traceback"] = [f"{out.get('ename', 'Error')}: {evalue}"]
        return cell, resources
