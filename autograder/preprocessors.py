"""nbgrader preprocessors that make autograding robust and feedback safe.

- :class:`RobustExecute` runs a submission cell by cell like nbgrader's ``Execute``, but
  a dead kernel (``os._exit``, a segfault, the OOM killer) costs only the cell that
  killed it: the kernel is restarted, the cells before it are replayed silently, and
  grading goes on. Each cell's output is capped, and the kernel is pinned.
- :class:`StderrToStdout` keeps a warning printed by a correct answer from scoring 0
  (nbgrader scores any stderr output in a grade cell as a failure).
- :class:`HideHiddenTests` removes hidden tests, and the tracebacks that would quote
  them, from the feedback a student receives.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Integer, Unicode

from autograder import agent, wire
from autograder.trusted import CellVerdict, Handle, load_checks

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


def _is_test_cell(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


class _DiedInCheck(DeadKernelError):
    """The kernel died while a trusted check was talking to it."""


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

    # -- what the kernel sends ------------------------------------------------------------------
    def output(self, outs: list, msg: dict, display_id: Any, cell_index: int) -> Any:
        content = msg.get("content", {})
        kind = msg.get("msg_type")
        if self._aside == "replay":  # rebuilding state after a restart: nothing is kept
            return None
        if self._aside == "request":  # a hidden check's request: only the agent's reply counts
            if kind == "display_data" and agent.MIME in content.get("data", {}):
                reply = content["data"][agent.MIME]
                if isinstance(reply, str) and len(reply) <= wire.MAX_BYTES * 4 // 3 + 1024 and not self._replied:
                    self._replied = True
                    outs.append(NotebookNode(output_type="display_data", metadata={}, data={agent.MIME: reply}))
            elif kind == "error" and not self._replied:
                outs[:] = [o for o in outs if o.get("output_type") != "error"]
                outs.append(_error(str(content.get("ename", "Error"))[:100], str(content.get("evalue", ""))[:500]))
            return None
        if kind == "stream":
            size = len(content.get("text", ""))
        elif kind in ("display_data", "execute_result", "error"):
            size = sum(len(str(v)) for v in content.get("data", {}).values()) + len(str(content.get("traceback", "")))
        else:
            size = 0
        used = self._chars.get(cell_index, 0)
        self._chars[cell_index] = used + size
        self._total += size
        if used + size > self.max_output_chars or self._total > self.max_total_output_chars:
            if cell_index not in self._truncated:
                self._truncated.add(cell_index)
                outs.append(NotebookNode(
                    output_type="stream", name="stdout",
                    text=f"\n[autograder] output of this cell truncated: more than {self.max_output_chars} "
                         f"characters in the cell or {self.max_total_output_chars} in the notebook\n"))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _update_display_id(self, display_id: str, msg: dict) -> None:
        # an update of an earlier output: never during a check or a replay, and capped
        content = msg.get("content", {})
        size = sum(len(str(v)) for v in content.get("data", {}).values())
        if self._aside or size > self.max_output_chars:
            return
        # every output it rewrites counts against the notebook's budget
        copies = sum(len(ix) for ix in self._display_id_map.get(display_id, {}).values())
        self._total += size * copies
        if self._total <= self.max_total_output_chars:
            super()._update_display_id(display_id, msg)

    def process_message(self, msg: dict, cell: NotebookNode, cell_index: int):
        content = msg.get("content")
        if isinstance(content, dict) and "execution_count" in content \
                and not (type(content["execution_count"]) is int or content["execution_count"] is None):
            content["execution_count"] = None  # a kernel may send anything; nbformat wants an int
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
        self._chars: dict[int, int] = {}
        self._total = 0
        self._truncated: set[int] = set()
        self._aside = ""
        self._replied = False
        aid = ((resources or {}).get("nbgrader") or {}).get("assignment")
        self._checks = load_checks(aid, self.checks_dir or None) if (self.trusted and aid) else {}
        self._verdicts: dict[str, dict] = {}
        #: the trusted verdict of each grade cell, by cell index (read by autograder.mutants)
        self.cell_verdicts: dict[int, CellVerdict] = {}

        killers: list[int] = []  # cells that killed the kernel: never run again
        check_deaths = 0  # kernels lost during hidden checks (their cells are not killers)
        pending = [i for i, c in enumerate(nb.cells) if self._checks_of(c)]  # grade cells still to check
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
                            self._snapshot(nb, index)
                    for index in range(start, len(nb.cells)):
                        current = index
                        self.preprocess_cell(nb.cells[index], resources, index)
                        self._snapshot(nb, index)
                    start = current = len(nb.cells)
                    while pending:
                        index = pending.pop(0)
                        if index not in killers:
                            self._run_checks(nb, index)
                break
            except _DiedInCheck:
                # the checks of that cell are scored; go on with the next grade cell
                check_deaths += 1
                if check_deaths + len(killers) > self.max_restarts:
                    self._fail_checks(nb, pending, "not run: the kernel died too many times")
                    break
            except (DeadKernelError, CellTimeoutError) as exc:
                hung = isinstance(exc, CellTimeoutError)
                if current < start:  # died while replaying: stop here
                    why = f"not run: the kernel died again while replaying cell {current}"
                    self._fail_rest(nb, start, why)
                    self._fail_checks(nb, pending, why)
                    break
                killers.append(current)
                nb.cells[current].outputs.append(_error(
                    "CellTimeoutError" if hung else "DeadKernelError",
                    ("this cell did not finish within the time limit and ignored the interrupt"
                     if hung else "the kernel died while running this cell (os._exit, a crash or out of memory)")
                    + "; grading went on with a fresh kernel"))
                start = current + 1
                if len(killers) > self.max_restarts:
                    self._fail_rest(nb, start, "not run: the kernel died too many times")
                    self._fail_checks(nb, pending, "not run: the kernel died too many times")
                    break
                self.log.warning("Kernel died in cell %d; restarting and replaying cells 0..%d", current, current - 1)
        self._write_report()
        return self.nb, self.resources

    # -- trusted checks ---------------------------------------------------------------------
    def _checks_of(self, cell: NotebookNode) -> list:
        if not _is_test_cell(cell):
            return []
        return self._checks.get(cell.metadata["nbgrader"]["grade_id"], [])

    def _run_aside(self, cell: NotebookNode, timeout: int | None = None, mode: str = "request") -> list:
        """Execute ``cell`` in the kernel without recording it in the notebook (nbclient
        writes an executed cell back into ``self.nb`` at its index)."""
        scratch = NotebookNode(cells=[cell], metadata=self.nb.metadata, nbformat=4, nbformat_minor=5)
        nb, old_timeout = self.nb, self.timeout
        self.nb, self._aside, self._replied = scratch, mode, False
        if timeout is not None:
            self.timeout = timeout
        try:
            self.execute_cell(cell, 0, store_history=False)
        finally:
            self.nb, self.timeout, self._aside = nb, old_timeout, ""
            self.clear_before_next_output = False  # a clear_output(wait=True) sent aside stays aside
        return cell.outputs

    def _request(self, code: str) -> list:
        cell = NotebookNode(cell_type="code", source=code, metadata={}, outputs=[], execution_count=None)
        return self._run_aside(cell, self.check_timeout)

    def _snapshot(self, nb: NotebookNode, index: int) -> None:
        """Keep the kernel's names as they are right after grade cell ``index``."""
        if self._checks_of(nb.cells[index]):
            self._request(agent.request_code("snapshot", key=str(index)))

    def _run_checks(self, nb: NotebookNode, index: int) -> None:
        import torch

        cell = nb.cells[index]
        gid = cell.metadata["nbgrader"]["grade_id"]
        checks = self._checks_of(cell)
        import time

        t0 = time.perf_counter()
        verdict = CellVerdict(gid, in_kernel_ok=not any(o.get("output_type") == "error" for o in cell.outputs))
        handle = Handle(self._request, nb)
        died = False
        try:
            handle._request("enter", key=str(index))
        except (DeadKernelError, CellTimeoutError):
            died = True
        except Exception:
            pass  # a tampered agent: the checks will say what does not answer
        for chk in checks:
            if died:
                verdict.results.append((chk.name, False, "not run: the kernel died during an earlier check"))
                verdict.mirrored.append(chk.mirrors_visible)
                continue
            torch.manual_seed(0)
            try:
                chk.fn(handle)
                verdict.results.append((chk.name, True, ""))
            except (DeadKernelError, CellTimeoutError) as exc:
                died = True
                verdict.results.append((chk.name, False, "your code did not finish in time during this check"
                                        if isinstance(exc, CellTimeoutError) else
                                        "the kernel died while this check ran (os._exit, a crash or out of memory)"))
            except AssertionError as e:
                verdict.results.append((chk.name, False, str(e) or type(e).__name__))
            except Exception as e:  # the student's answer broke the check (wrong type, shape...)
                verdict.results.append((chk.name, False, f"{type(e).__name__}: {e}"[:1000]))
            verdict.mirrored.append(chk.mirrors_visible)
        if not died:
            for op in ("restore_all", "clear", "leave"):  # whatever a failed check left behind
                try:
                    handle._request(op)
                except (DeadKernelError, CellTimeoutError):
                    died = True
                    break
                except Exception:
                    pass
        self._apply_verdict(cell, verdict)
        self.cell_verdicts[index] = verdict
        self._verdicts[gid] = dict(verdict.as_dict(), seconds=round(time.perf_counter() - t0, 3))
        if died:
            raise _DiedInCheck("kernel died during a hidden check")

    def _fail_checks(self, nb: NotebookNode, pending: list[int], why: str) -> None:
        """Grade cells whose hidden checks could not run score 0, with ``why``."""
        for index in pending:
            cell = nb.cells[index]
            verdict = CellVerdict(cell.metadata["nbgrader"]["grade_id"], in_kernel_ok=True)
            verdict.results = [(chk.name, False, why) for chk in self._checks_of(cell)]
            verdict.mirrored = [False] * len(verdict.results)
            self._apply_verdict(cell, verdict)
            self.cell_verdicts[index] = verdict
        pending.clear()

    @staticmethod
    def _apply_verdict(cell: NotebookNode, verdict: CellVerdict) -> None:
        """Make the trusted verdict the one nbgrader scores: the notebook's own errors and
        results become plain text, the hidden checks' outcome is appended."""
        outs = []
        for o in cell.outputs:
            kind = o.get("output_type")
            if kind == "error":
                outs.append(NotebookNode(output_type="stream", name="stdout",
                                         text=f"[visible checks in your notebook] {o.get('ename')}: "
                                              f"{_ANSI.sub('', str(o.get('evalue', '')))}\n"))
            elif kind == "execute_result":
                text = o.get("data", {}).get("text/plain", "")
                outs.append(NotebookNode(output_type="stream", name="stdout", text=f"{text}\n"))
            else:
                outs.append(o)
        lines = [f"{'✔' if ok else '✘'} hidden check: {name}" + ("" if ok else f"\n    {msg}")
                 for name, ok, msg in verdict.results]
        if verdict.passed:
            outs.append(NotebookNode(output_type="stream", name="stdout", text="\n".join(lines) + "\n"))
        else:
            failed = sum(not ok for _, ok, _ in verdict.results)
            outs.append(_error("HiddenCheckFailed",
                               f"{failed} of {len(verdict.results)} hidden checks failed\n" + "\n".join(lines)))
        cell.outputs = outs

    def _write_report(self) -> None:
        import json
        import os

        path = self.report_path or os.environ.get("AUTOGRADER_TRUSTED_REPORT", "")
        if path:
            with open(path, "w") as f:
                json.dump(self._verdicts, f, indent=1)

    @staticmethod
    def _fail_rest(nb: NotebookNode, start: int, why: str) -> None:
        for cell in nb.cells[start:]:
            if cell.cell_type == "code":
                cell.outputs = [_error("NotRun", why)]


class StderrToStdout(NbGraderPreprocessor):
    """Turn stderr output of grade cells into stdout, marked, so warnings don't score 0."""

    prefix = Unicode("[stderr] ").tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        if _is_test_cell(cell):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    out["name"] = "stdout"
                    out["text"] = "".join(self.prefix + line for line in out["text"].splitlines(True))
        return cell, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Strip hidden-test regions and traceback frames from grade cells in feedback."""

    begin = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("END HIDDEN TESTS").tag(config=True)
    placeholder = Unicode("# (hidden tests: their results are shown below)").tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        if not _is_test_cell(cell):
            return cell, resources
        lines, hidden, kept = cell.source.split("\n"), False, []
        for line in lines:
            if self.begin in line:
                hidden = True
                kept.append(line[: len(line) - len(line.lstrip())] + self.placeholder)
            elif self.end in line:
                hidden = False
            elif not hidden:
                kept.append(line)
        cell.source = "\n".join(kept)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                # the traceback quotes the cell's code; keep only what went wrong
                evalue = _ANSI.sub("", str(out.get("evalue", "")))
                out["traceback"] = [f"{out.get('ename', 'Error')}: {evalue}"]
        return cell, resources
