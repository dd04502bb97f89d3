"""Running the trusted hidden checks (:mod:`autograder.trusted`) of one notebook.

:class:`TrustedChecks` is given the notebook and ``request``, a function that runs one
request of the grading agent (:func:`autograder.agent.request_code`) in the student's
kernel and returns what was kept of its outputs (:class:`RobustExecute` runs it aside,
keeping only the agent's reply: :class:`autograder.output_limits.AgentReplyOnly`). It

- keeps a snapshot of the kernel's names right after each grade cell that has hidden
  checks (:meth:`~TrustedChecks.snapshot`, called in phase 1 and again for each replayed
  cell after a restart);
- after the notebook's last cell, runs each such cell's checks against its snapshot
  (:meth:`~TrustedChecks.run_pending`): the reference modules the checks use in the kernel
  are sent in once, compiled (:func:`provide_references`: the kernel's ``course`` lacks
  them), the agent enters the snapshot, the checks run,
  then whatever they left behind is undone and the agent leaves it;
- makes each cell's verdict the one nbgrader scores (:func:`apply_verdict` rewrites the
  cell's outputs), keeps it by cell index (:attr:`~TrustedChecks.verdicts`) and, for the
  cells whose checks ran, by grade id in the report (:meth:`~TrustedChecks.write_report`).

A kernel that dies (or hangs) during a check scores that check and the cell's remaining
ones, and :class:`DiedInCheck` is raised once the cell's verdict is kept: the caller
restarts the kernel and goes on with the next grade cell.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils

from autograder import agent
from autograder.output_limits import error_output, strip_ansi
from autograder.trusted import Check, CellVerdict, Handle

#: Environment variable naming the report file when no ``report_path`` is configured.
REPORT_ENV = "AUTOGRADER_TRUSTED_REPORT"


class DiedInCheck(DeadKernelError):
    """The kernel died while a trusted check was talking to it."""


def is_test_cell(cell: NotebookNode) -> bool:
    """A grade cell that is not a solution cell: the instructor's tests (visible and hidden)."""
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


def apply_verdict(cell: NotebookNode, verdict: CellVerdict) -> None:
    """Make the trusted verdict the one nbgrader scores: the notebook's own errors and
    results become plain text, the hidden checks' outcome is appended (an error if any
    failed, so the cell scores 0; plain text if all passed)."""
    outs = []
    for o in cell.outputs:
        kind = o.get("output_type")
        if kind == "error":
            outs.append(NotebookNode(output_type="stream", name="stdout",
                                     text=f"[visible checks in your notebook] {o.get('ename')}: "
                                          f"{strip_ansi(str(o.get('evalue', '')))}\n"))
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
        outs.append(error_output("HiddenCheckFailed",
                                 f"{failed} of {len(verdict.results)} hidden checks failed\n" + "\n".join(lines)))
    cell.outputs = outs


#: Longest message of one failed check shown to the student (a cell's feedback has a few), and the most digits
#: it shows (a message's sizes, positions and values take ~40): numbers the student's code chose cannot carry
#: more than a few hundred digits out of a whole notebook.
MAX_MESSAGE_CHARS = 700
MAX_MESSAGE_DIGITS = 80
#: Files whose words a check's message may use: the messages are written there.
_MESSAGE_SOURCES = ("autograder/checkkit.py", "autograder/trusted.py", "autograder/delegation.py",
                    "course/testing.py", "course/device.py")


@functools.lru_cache(maxsize=16)
def _vocabulary(check_file: str) -> frozenset[str]:
    root = Path(__file__).resolve().parent.parent
    words: set[str] = set()
    for path in (check_file, *(str(root / f) for f in _MESSAGE_SOURCES)):
        try:
            words |= set(re.findall(r"[A-Za-z_]\w*", Path(path).read_text()))
        except OSError:
            continue
    import builtins  # the names of Python's exceptions ("your code raised IndexError"), not the student's to choose
    words |= {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    return frozenset(words)


def shown(message: str, chk: Check, handle: Handle) -> str:
    """A failed check's message as the student sees it. A check may quote what the student's code returned (a
    parameter name, a value), and that is the student's to choose: a word that is not one of the checks' own
    sources, of the notebook's locked cells or of PyTorch's parameter names is shown as "…", so is a run of more
    than 12 digits and every digit past :data:`MAX_MESSAGE_DIGITS`, and the message is cut at
    :data:`MAX_MESSAGE_CHARS`. Code of the references or hidden inputs cannot ride out on it, beyond a few
    hundred digits per notebook (``tests/test_autograder.py``)."""
    code = getattr(inspect.unwrap(chk.fn), "__code__", None)
    vocab = _vocabulary(code.co_filename if code is not None else "")
    known = handle._known  # is_word: the locked cells' names, the message templates', PyTorch's parameters'

    def word(m: re.Match) -> str:
        return m.group(0) if m.group(0) in vocab or known.is_word(m.group(0)) else "…"

    budget = [MAX_MESSAGE_DIGITS]

    def digits(m: re.Match) -> str:
        budget[0] -= len(m.group(0))
        return m.group(0) if budget[0] >= 0 and len(m.group(0)) <= 12 else "…"

    text = re.sub(r"\d+", digits, re.sub(r"[A-Za-z_]\w*", word, message))
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " …"


@functools.lru_cache(maxsize=None)
def reference_code() -> dict[str, tuple[str, str]]:
    """``module -> (sha, base64 of its marshalled code)`` for each reference module of ``course``
    (:data:`autograder.classroom.REFERENCE_MODULES`), compiled from the files this process imports."""
    import marshal
    from importlib.util import find_spec

    from autograder.classroom import REFERENCE_MODULES

    out = {}
    for name in REFERENCE_MODULES:
        spec = find_spec(name)
        source = Path(spec.origin).read_text()
        code = marshal.dumps(compile(source, f"<{name}>", "exec", dont_inherit=True))
        out[name] = (hashlib.sha256(code).hexdigest()[:16], base64.b64encode(code).decode("ascii"))
    return out


def provide_references(handle: Handle) -> None:
    """Send the reference modules the checks run in the kernel (``h.substituted``, ``h.library``,
    ``h.forbidden``), once per kernel: the ``course`` package of a sandboxed kernel lacks them
    (:func:`autograder.student_copy.kernel_package`), so that no cell of the student's can read and
    print them into its feedback. They arrive compiled (no source text), after the last cell ran. The
    student's code that a check calls can still read them: what it returns reaches the student only
    through :func:`shown`."""
    code = reference_code()
    shas = {name: sha for name, (sha, _) in code.items()}
    missing = handle._request("provide", modules=shas)
    if isinstance(missing, list) and missing:
        handle._request("provide", modules=shas, code={n: code[n][1] for n in missing if n in code})


class TrustedChecks:
    """The hidden checks of notebook ``nb`` (``checks``: by grade id, from
    :func:`autograder.trusted.load_checks`), run through ``request`` (see the module
    docstring)."""

    def __init__(self, checks: dict[str, list[Check]], request: Callable[[str], list], nb: NotebookNode,
                 runs: list[tuple[int, int]] | None = None):
        self.checks, self.request, self.nb = checks, request, nb
        #: where the notebook holds several runs of one assignment (autograder.mutants): the cell
        #: ranges [start, stop) of each; a check sees only its own run's cells (``h.source``)
        self.runs = runs
        #: grade cells whose checks are still to run, in notebook order
        self.pending: list[int] = [i for i, c in enumerate(nb.cells) if self.checks_of(c)]
        #: the verdict of each grade cell, by cell index (those that ran and those failed unrun)
        self.verdicts: dict[int, CellVerdict] = {}
        #: the report: the verdict of each grade cell whose checks ran, by grade id, with seconds taken
        self.report: dict[str, dict] = {}

    def _run_of(self, index: int) -> NotebookNode:
        for start, stop in self.runs or ():
            if start <= index < stop:
                return NotebookNode(cells=self.nb.cells[start:stop], metadata=self.nb.metadata,
                                    nbformat=self.nb.nbformat, nbformat_minor=self.nb.nbformat_minor)
        return self.nb

    def checks_of(self, cell: NotebookNode) -> list[Check]:
        """The hidden checks of ``cell`` ([] unless it is a test cell with checks)."""
        if not is_test_cell(cell):
            return []
        return self.checks.get(cell.metadata["nbgrader"]["grade_id"], [])

    def snapshot(self, index: int) -> None:
        """Keep the kernel's names as they are right after cell ``index``, if it is a grade
        cell with hidden checks (call it right after each cell ran or was replayed)."""
        if self.checks_of(self.nb.cells[index]):
            self.request(agent.request_code("snapshot", key=str(index)))

    def run_pending(self, skip: Iterable[int] = ()) -> None:
        """Run the checks of each pending grade cell, in order; cells in ``skip`` (they killed
        the kernel) are dropped unchecked. Raises :class:`DiedInCheck` when the kernel died
        during one cell's checks (that cell is done; the rest stay pending)."""
        while self.pending:
            index = self.pending.pop(0)
            if index not in skip:
                self.run(index)

    def run(self, index: int) -> None:
        """Run the checks of grade cell ``index`` against its snapshot and apply the verdict."""
        import torch

        cell = self.nb.cells[index]
        gid = cell.metadata["nbgrader"]["grade_id"]
        checks = self.checks_of(cell)
        t0 = time.perf_counter()
        verdict = CellVerdict(gid, in_kernel_ok=not any(o.get("output_type") == "error" for o in cell.outputs))
        handle = Handle(self.request, self._run_of(index))
        died = False
        try:
            provide_references(handle)
            handle._request("enter", key=str(index))
        except (DeadKernelError, CellTimeoutError):
            died = True
        except Exception:
            pass  # a tampered agent: the checks will say what does not answer
        times: list[float] = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the checks' references are tiny: on a busy machine a second thread only makes
        try:  # each small op wait for the first (~7 ms each: a grade cell's checks 5 s instead of 1 s)
            for chk in checks:
                times.append(time.perf_counter())
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
                    verdict.results.append((chk.name, False, shown(str(e) or type(e).__name__, chk, handle)))
                except Exception as e:  # the student's answer broke the check (wrong type, shape...)
                    verdict.results.append((chk.name, False, shown(f"{type(e).__name__}: {e}", chk, handle)))
                verdict.mirrored.append(chk.mirrors_visible)
        finally:
            torch.set_num_threads(threads)
        times.append(time.perf_counter())
        if not died:
            for op in ("restore_all", "clear", "leave"):  # whatever a failed check left behind
                try:
                    handle._request(op)
                except (DeadKernelError, CellTimeoutError):
                    died = True
                    break
                except Exception:
                    pass
        apply_verdict(cell, verdict)
        self.verdicts[index] = verdict
        report = verdict.as_dict()
        for c, a, b in zip(report["checks"], times, times[1:]):
            c["seconds"] = round(b - a, 3)  # where a slow grade cell spends its time
        self.report[gid] = dict(report, seconds=round(time.perf_counter() - t0, 3))
        if died:
            raise DiedInCheck("kernel died during a hidden check")

    def fail_pending(self, why: str) -> None:
        """Every pending grade cell scores 0: each of its checks failed with ``why``. These
        verdicts are kept in :attr:`verdicts`, not in the report."""
        for index in self.pending:
            cell = self.nb.cells[index]
            verdict = CellVerdict(cell.metadata["nbgrader"]["grade_id"], in_kernel_ok=True)
            verdict.results = [(chk.name, False, why) for chk in self.checks_of(cell)]
            verdict.mirrored = [False] * len(verdict.results)
            apply_verdict(cell, verdict)
            self.verdicts[index] = verdict
        self.pending.clear()

    def write_report(self, path: str = "") -> None:
        """Write the report as JSON to ``path``, or else to ``$AUTOGRADER_TRUSTED_REPORT``;
        nowhere when neither is set."""
        path = path or os.environ.get(REPORT_ENV, "")
        if path:
            with open(path, "w") as f:
                json.dump(self.report, f, indent=1)
