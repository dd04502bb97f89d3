"""What is kept of the output a student's kernel sends while their notebook is graded.

A kernel may send anything, as much as it likes, at any time. :class:`RobustExecute`
(:mod:`autograder.preprocessors`) hands every output message to one of these:

- :class:`OutputBudget`, for the notebook's own cells: each cell keeps at most ``per_cell``
  characters of output and the whole notebook at most ``total``, updates of earlier
  displays included (an update rewrites every output showing that display, and each
  copy counts). Past either limit a cell's later output is dropped, with one note saying so.
- :class:`AgentReplyOnly`, for one request of a hidden check (:mod:`autograder.trusted`):
  only the grading agent's reply is kept, or while there is none the last error, cut
  short. Whatever else the kernel sends (prints, displays, updates of earlier displays,
  widget messages) is dropped unread.

Also :func:`coerce_execution_count` (nbformat wants an int, a kernel may send anything).
Widget messages are never kept at all: :class:`RobustExecute` ignores them.
"""
from __future__ import annotations

import re
from typing import Any

from nbformat.notebooknode import NotebookNode

from autograder import agent, wire

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: The longest agent reply kept (characters): a reply of wire.MAX_BYTES, base64-encoded, and some room.
MAX_REPLY_CHARS = wire.MAX_BYTES * 4 // 3 + 1024


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (tracebacks carry them)."""
    return _ANSI.sub("", text)


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output with a one-line traceback (no code quoted)."""
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def output_size(msg: dict) -> int:
    """The characters an output message adds to a cell: a stream's text; the data and the
    traceback of a display, result or error; 0 for anything else."""
    content = msg.get("content", {})
    kind = msg.get("msg_type")
    if kind == "stream":
        return len(content.get("text", ""))
    if kind in ("display_data", "execute_result", "error"):
        return sum(len(str(v)) for v in content.get("data", {}).values()) + len(str(content.get("traceback", "")))
    return 0


def update_size(msg: dict) -> int:
    """The characters one copy of a display gets from an update message (its data)."""
    return sum(len(str(v)) for v in msg.get("content", {}).get("data", {}).values())


class OutputBudget:
    """The character budgets of one notebook's outputs: ``per_cell`` per cell, ``total`` for
    the whole notebook.

    Every output is charged when it arrives, kept or not, so a flood stays over budget once
    it got there: once a cell went over its budget nothing more of it is kept, and once the
    notebook went over its budget nothing more of any cell.
    """

    def __init__(self, per_cell: int, total: int):
        self.per_cell, self.total = per_cell, total
        self.used = 0  #: characters charged to the notebook, updates of displays included
        self.used_by_cell: dict[int, int] = {}
        self.truncated: set[int] = set()  #: cells whose output was cut (each got its note)

    def admit(self, outs: list, msg: dict, cell_index: int) -> bool:
        """Charge output message ``msg`` of cell ``cell_index`` and say whether it is kept.

        When it is not, and it is the cell's first output that is not, a note saying the
        output was truncated is appended to ``outs`` (the cell's outputs)."""
        size = output_size(msg)
        used = self.used_by_cell.get(cell_index, 0) + size
        self.used_by_cell[cell_index] = used
        self.used += size
        if used <= self.per_cell and self.used <= self.total:
            return True
        if cell_index not in self.truncated:
            self.truncated.add(cell_index)
            outs.append(self.note())
        return False

    def update_fits(self, size: int) -> bool:
        """Whether an update of an earlier display bringing ``size`` characters
        (:func:`update_size`) may be applied at all: not if it is larger than a cell's budget."""
        return size <= self.per_cell

    def charge_update(self, size: int, copies: int) -> bool:
        """Charge an update that :meth:`update_fits` and that rewrites ``copies`` outputs (each
        copy counts against the notebook's budget); say whether it is applied."""
        self.used += size * copies
        return self.used <= self.total

    def note(self) -> NotebookNode:
        """What a cell shows where its output was cut."""
        return NotebookNode(
            output_type="stream", name="stdout",
            text=f"\n[autograder] output of this cell truncated: more than {self.per_cell} "
                 f"characters in the cell or {self.total} in the notebook\n")


class AgentReplyOnly:
    """What is kept of the outputs of one request of a hidden check: the grading agent's
    first reply, if it is a string of at most :data:`MAX_REPLY_CHARS`; and, as long as no
    reply came, the last error (its name and message cut short, no traceback). Everything
    else is dropped unread. Use a new one for each request."""

    def __init__(self):
        self.replied = False

    def keep(self, outs: list, msg: dict) -> None:
        """Append to ``outs`` (the request's outputs) what is kept of output message ``msg``."""
        content = msg.get("content", {})
        kind = msg.get("msg_type")
        if kind == "display_data" and agent.MIME in content.get("data", {}):
            reply = content["data"][agent.MIME]
            if isinstance(reply, str) and len(reply) <= MAX_REPLY_CHARS and not self.replied:
                self.replied = True
                outs.append(NotebookNode(output_type="display_data", metadata={}, data={agent.MIME: reply}))
        elif kind == "error" and not self.replied:
            outs[:] = [o for o in outs if o.get("output_type") != "error"]
            outs.append(error_output(str(content.get("ename", "Error"))[:100], str(content.get("evalue", ""))[:500]))


def coerce_execution_count(msg: dict) -> None:
    """Set an ``execution_count`` of ``msg`` that is neither an int nor None to None: a kernel
    may send anything, nbformat wants an int."""
    content: Any = msg.get("content")
    if isinstance(content, dict) and "execution_count" in content \
            and not (type(content["execution_count"]) is int or content["execution_count"] is None):
        content["execution_count"] = None
