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

from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Integer, Unicode

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


def _is_test_cell(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


class RobustExecute(Execute):
    """nbgrader's ``Execute`` that survives dead kernels and output floods."""

    max_output_chars = Integer(100_000, help="Characters of output kept per cell.").tag(config=True)
    max_restarts = Integer(3, help="Kernel restarts allowed per notebook before giving up.").tag(config=True)

    # -- output cap -------------------------------------------------------------------
    def output(self, outs: list, msg: dict, display_id: Any, cell_index: int) -> Any:
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream":
            size = len(content.get("text", ""))
        elif msg.get("msg_type") in ("display_data", "execute_result", "error"):
            size = sum(len(str(v)) for v in content.get("data", {}).values()) + len(str(content.get("traceback", "")))
        else:
            size = 0
        used = self._chars.get(cell_index, 0)
        if used + size > self.max_output_chars:
            if cell_index not in self._truncated:
                self._truncated.add(cell_index)
                outs.append(NotebookNode(
                    output_type="stream", name="stdout",
                    text=f"\n[autograder] output of this cell truncated after {self.max_output_chars} characters\n"))
            self._chars[cell_index] = used + size
            return None
        self._chars[cell_index] = used + size
        return super().output(outs, msg, display_id, cell_index)

    # -- execution with restarts ----------------------------------------------------------
    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None):
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._chars: dict[int, int] = {}
        self._truncated: set[int] = set()

        killers: list[int] = []  # cells that killed the kernel: never run again
        start = 0
        while start < len(nb.cells):
            current = start
            try:
                with self.setup_kernel():
                    info = self.wait_for_reply(self.kc.kernel_info())
                    if info is not None:
                        nb.metadata["language_info"] = info["content"]["language_info"]
                    # after a restart, rebuild the state the later cells rely on
                    for index in range(start):
                        current = index
                        cell = nb.cells[index]
                        if cell.cell_type == "code" and index not in killers:
                            self.execute_cell(copy.deepcopy(cell), index, store_history=False)
                    for index in range(start, len(nb.cells)):
                        current = index
                        self.preprocess_cell(nb.cells[index], resources, index)
                start = len(nb.cells)
            except DeadKernelError:
                if current < start:  # died while replaying: stop here
                    self._fail_rest(nb, start, f"not run: the kernel died again while replaying cell {current}")
                    break
                killers.append(current)
                nb.cells[current].outputs.append(_error(
                    "DeadKernelError",
                    "the kernel died while running this cell (os._exit, a crash or out of memory); "
                    "grading went on with a fresh kernel"))
                start = current + 1
                if len(killers) > self.max_restarts:
                    self._fail_rest(nb, start, "not run: the kernel died too many times")
                    break
                self.log.warning("Kernel died in cell %d; restarting and replaying cells 0..%d", current, current - 1)
        self.set_widgets_metadata()
        return self.nb, self.resources

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
