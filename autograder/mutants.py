"""Mutation testing of an assignment's hidden checks: every check proven to catch a named mistake.

    python -m autograder mutants 02_transformer_blocks [--only NAME ...]

A *mutant* is a known-wrong solution: one typical student mistake, written as the
solution cells it replaces, in ``tests/mutants/<assignment>/<name>.py``::

    # mutant: no 1/sqrt(d_k): scores are q @ k^T
    # fails: grade_sdpa
    # hint: scal|sqrt
    # %% sdpa
    def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
        ...

- ``mutant:`` one line saying what the mistake is;
- ``fails:`` the grade cells that must score 0 (space separated), or ``none`` for a
  *correct variant* (odd but right code that must keep every point: einsum, fused
  projections, extra buffers ...);
- ``hint:`` (wrong mutants) a regular expression, searched case-insensitively in the first
  line of each message the student sees for those cells (the visible check's error in
  their notebook, the failed hidden checks): the feedback must name the mistake;
- ``# %% <grade_id>`` starts the full source of the solution cell ``grade_id``; every
  other solution cell keeps the solution's code.

:func:`run` grades mutants through the path that grades students: the release filled with
the solution, the named cells replaced, run by :class:`autograder.preprocessors.RobustExecute`
in a sandboxed kernel with the hidden checks of ``autograder/checks/<assignment>.py``,
scored as nbgrader scores a cell. To stay fast:

- many runs share one kernel: the session notebook holds one run after another (all its
  code cells, after deleting the names of the run before), and each grade cell is checked
  against the names as they were right after it ran in its own run;
- first the solution and one *poison* run per solution cell (the names it defines raise when
  used) find which grade cells use which solution cell; a mutant then re-checks the cells it
  names and the cells that use the cells it replaces. Every other grade cell never reaches
  the replaced code, so it keeps the solution's result (a poison run that fails more than its
  own cell shows the dependency, and then every mutant of that cell proves it costs nothing);
- code cells that are neither locked nor solution cells (data loading, training, plots) and
  the visible check cells (``check_*``) are left out: no grade cell uses them.

Each outcome says what is wrong with the checks (:attr:`Outcome.problems`):

- a wrong mutant whose named cells keep their points is *not killed*;
- a wrong mutant that costs points in another cell is a *double penalty* (each mistake
  must cost points once: a cell is graded with the reference for the other parts);
- a correct variant that loses points is a *false alarm*;
- any REVIEW flag (the notebook's own run and the trusted mirror disagree) on a mutant is
  a flag without tampering;
- a hint that no message matches is a *vague message*.
"""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

from autograder import config as cfg

MUTANTS_DIR = cfg.repo_root() / "tests" / "mutants"
_HEADER = re.compile(r"#\s*(mutant|fails|hint):\s*(.*)")
_CELL = re.compile(r"#\s*%%\s*(\S+)\s*$")


class MutantError(ValueError):
    """A mutant file that cannot be used (unknown cell, no description ...)."""


@dataclass
class Mutant:
    name: str
    description: str
    fails: tuple[str, ...]  # grade cells that must score 0; () for a correct variant
    hint: str | None
    cells: dict[str, str]  # solution grade_id -> replacement source

    @property
    def correct(self) -> bool:
        return not self.fails


def parse(path: Path) -> Mutant:
    """Read one mutant file (see the module docstring for the format)."""
    header: dict[str, str] = {}
    cells: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in Path(path).read_text().splitlines():
        m = _CELL.match(line)
        if m:
            if m.group(1) in cells:
                raise MutantError(f"{path.name}: cell {m.group(1)} given twice")
            current = cells[m.group(1)] = []
            continue
        if current is None:
            m = _HEADER.match(line)
            if m:
                header[m.group(1)] = m.group(2).strip()
            continue
        current.append(line)
    if not header.get("mutant"):
        raise MutantError(f"{path.name}: no '# mutant: <what is wrong>' line")
    if "fails" not in header:
        raise MutantError(f"{path.name}: no '# fails: <grade ids>|none' line")
    if not cells:
        raise MutantError(f"{path.name}: replaces no cell ('# %% <grade_id>' lines)")
    fails = tuple(header["fails"].split()) if header["fails"].strip().lower() != "none" else ()
    hint = header.get("hint") or None
    if fails and not hint:
        raise MutantError(f"{path.name}: a wrong mutant needs a '# hint: <regex>' its messages must match")
    if hint:
        re.compile(hint)
    return Mutant(Path(path).stem, header["mutant"], fails, hint,
                  {gid: "\n".join(src).strip("\n") for gid, src in cells.items()})


def load(assignment: str, folder: Path | None = None) -> list[Mutant]:
    """The mutants of ``assignment`` (``tests/mutants/<assignment>/*.py``), sorted by name."""
    folder = Path(folder or MUTANTS_DIR / assignment)
    return [parse(p) for p in sorted(folder.glob("*.py"))]


# -- results ---------------------------------------------------------------------------------------
@dataclass
class CellResult:
    score: float
    max_score: float
    review: bool  # the notebook's own run and the trusted mirror disagree
    messages: list[str]  # first line of each message the student sees for this cell

    @property
    def full(self) -> bool:
        return self.score == self.max_score


@dataclass
class Outcome:
    mutant: Mutant
    cells: dict[str, CellResult] = field(default_factory=dict)  # graded cells of this run
    problems: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        """A wrong mutant loses every point of the cells it names."""
        return bool(self.mutant.fails) and all(
            g in self.cells and self.cells[g].score == 0 for g in self.mutant.fails)


def _judge(outcome: Outcome) -> None:
    m, got = outcome.mutant, outcome.cells
    for gid in m.fails:
        if gid not in got:
            outcome.problems.append(f"{gid} is not graded after the replaced cells: it cannot fail")
        elif got[gid].score > 0:
            outcome.problems.append(f"not killed: {gid} kept {got[gid].score:g}/{got[gid].max_score:g}")
    for gid, r in got.items():
        if gid in m.fails:
            continue
        if not r.full:
            shown = "; ".join(r.messages)[:300]
            outcome.problems.append(f"{'false alarm' if m.correct else 'double penalty'}: {gid} scored "
                                    f"{r.score:g}/{r.max_score:g} ({shown})")
    for gid, r in got.items():
        if r.review:
            outcome.problems.append(f"REVIEW flag on {gid} without tampering (notebook and trusted mirror disagree)")
    if m.hint:
        pattern = re.compile(m.hint, re.I)
        lines = [line for g in m.fails if g in got for line in got[g].messages]
        if lines and not any(pattern.search(line) for line in lines):
            outcome.problems.append(f"vague message: no first line matches /{m.hint}/: " + " | ".join(lines)[:400])


# -- building the session notebook -----------------------------------------------------------------
def _nbg(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _kept(cell: NotebookNode) -> bool:
    """Cells a grade cell may depend on: everything with nbgrader metadata (setup, helpers,
    solutions, grade cells, the instructions whose words feedback may use), except the visible
    check cells (``check_*``: they only assert, and every grade cell makes its own inputs)."""
    md = _nbg(cell)
    return bool(md) and not (cell.cell_type == "code" and str(md.get("grade_id", "")).startswith("check_")
                             and not md.get("grade") and not md.get("solution"))


def solution_notebook(assignment: str, course_dir: Path, release_dir: Path, name: str) -> NotebookNode:
    """The release of ``name`` with every solution cell answered from ``source/``."""
    from autograder.demo import fill

    release_nb = nbformat.read(release_dir / name, as_version=4)
    source_nb = nbformat.read(course_dir / cfg.SOURCE / assignment / name, as_version=4)
    return fill(release_nb, source_nb)


def _segment(base: NotebookNode, mutant: Mutant | None, tag: str,
             only: set[str] | None = None) -> tuple[list[NotebookNode], list[str]]:
    """The cells of one run (the solution's when ``mutant`` is None); grade cells before the
    first replaced cell, and those not in ``only`` when given, are ungraded (see the module
    docstring). Returns (cells, graded ids)."""
    import copy

    solutions = {_nbg(c).get("grade_id"): c for c in base.cells if _nbg(c).get("solution") and c.cell_type == "code"}
    if mutant is not None:
        unknown = sorted(set(mutant.cells) - set(solutions))
        if unknown:
            raise MutantError(f"{mutant.name}: {', '.join(unknown)} is not a code solution cell of the notebook "
                              f"(known: {', '.join(g for g in solutions if g)})")
        same = [g for g, src in mutant.cells.items() if src.split() == solutions[g].source.split()]
        if same:
            raise MutantError(f"{mutant.name}: cell {', '.join(same)} is the solution's code (not a mutant)")
    # (through user_ns, not globals(): the checks' scan of every student cell refuses dynamic names)
    reset = NotebookNode(cell_type="code", source=f"# ---- {tag}: a fresh namespace (the setup cell imports again)\n"
                         "_ns = get_ipython().user_ns\n"
                         "for _name in [n for n in _ns if not n.startswith('_') and n not in "
                         "('In', 'Out', 'get_ipython', 'exit', 'quit')]:\n    del _ns[_name]",
                         metadata={}, outputs=[], execution_count=None)
    cells, graded, started = [reset], [], mutant is None
    for cell in base.cells:
        if not _kept(cell):
            continue
        cell = copy.deepcopy(cell)
        md = _nbg(cell)
        gid = md.get("grade_id")
        if mutant is not None and gid in mutant.cells:
            cell.source = mutant.cells[gid]
            started = True
        if cell.cell_type == "code" and md.get("grade") and not md.get("solution"):
            if started and (only is None or gid in only):
                graded.append(gid)
            else:  # its result is the solution's: not checked again
                cell.metadata["nbgrader"] = {"grade": False, "solution": False, "locked": True,
                                             "grade_id": f"{gid}~{tag}", "schema_version": md.get("schema_version", 3)}
        cells.append(cell)
    return cells, graded


def _cell_result(cell: NotebookNode, verdict) -> CellResult:
    from nbgrader.utils import determine_grade

    score, max_score = determine_grade(cell)
    lines = []
    for o in cell.get("outputs", []):
        text = str(o.get("text", ""))
        if o.get("output_type") == "stream" and text.startswith("[visible checks in your notebook]"):
            lines.append(text.split("]", 1)[1].strip().splitlines()[0] if text.split("]", 1)[1].strip() else "")
    if verdict is not None:
        lines += [(msg.strip().splitlines() or [""])[0] for _, ok, msg in verdict.results if not ok]
    review = bool(verdict is not None and verdict.disagrees)
    return CellResult(float(score or 0), float(max_score or 0), review, lines)


def _poison(name: str, source: str) -> Mutant | None:
    """A run in which the names solution cell ``name`` defines raise when used: the grade cells
    that fail then are the ones that use that cell (its dependents)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    defined += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    if not defined:
        return None
    poison = (f"{source}\n\n\nclass _Poisoned:\n    def __init__(self, name):\n        object.__setattr__(self, '_n', name)\n"
              f"    def __call__(self, *a, **k):\n        raise RuntimeError(f'{{self._n}} is poisoned')\n"
              f"    def __getattr__(self, attr):\n        raise RuntimeError(f'{{self._n}} is poisoned')\n"
              f"for _name in {defined!r}:\n    get_ipython().user_ns[_name] = _Poisoned(_name)\n")
    return Mutant(f"~poison {name}", f"the names of {name} raise", (), None, {name: poison})


def run(assignment: str, mutants: list[Mutant], *, course_dir: Path | None = None, sandbox: bool = True,
        per_kernel: int = 40, cell_timeout: int = 60, echo: bool = True) -> tuple[dict[str, CellResult], list[Outcome]]:
    """Grade the solution and every mutant; return (the solution's cells, one outcome per mutant).

    First the solution and one *poison* run per solution cell (its names raise when used) find
    which grade cells use which solution cell; then each mutant re-checks the cells it names and
    the cells that use the cells it replaces (every other cell keeps the solution's result: it
    never reaches the replaced code)."""
    from traitlets.config import Config

    from autograder.nbgrader_api import _venv_on_path
    from autograder.preprocessors import RobustExecute
    from autograder.release import generate_release

    course_dir = Path(course_dir or cfg.repo_root()).resolve()
    _venv_on_path()
    names = sorted(p.name for p in (course_dir / cfg.SOURCE / assignment).glob("*.ipynb"))
    if len(names) != 1:
        raise MutantError(f"{assignment}: mutants need exactly one notebook, found {names}")
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        tmp = Path(tmp)
        generate_release(course_dir, assignment, tmp / "release", f"sqlite:///{tmp / 'gradebook.db'}")
        base = solution_notebook(assignment, course_dir, tmp / "release", names[0])
        work = tmp / "work"  # the kernel's folder: the assignment's data files, read-only in the sandbox
        shutil.copytree(tmp / "release", work, ignore=shutil.ignore_patterns("*.ipynb"))
        c = cfg.apply(Config(), course_dir, cell_timeout_s=cell_timeout, sandbox=sandbox)
        c.RobustExecute.max_total_output_chars = 10 ** 9  # many runs in one notebook: the harness's own budget

        def grade_runs(runs: list[tuple[Mutant | None, set[str] | None]]) -> list[dict[str, CellResult]]:
            results: list[dict[str, CellResult]] = []
            for start in range(0, len(runs), per_kernel):
                batch = runs[start:start + per_kernel]
                cells, spans = [], []
                for i, (mutant, only) in enumerate(batch):
                    seg, graded = _segment(base, mutant, f"run{start + i}", only)
                    spans.append((len(cells), len(cells) + len(seg), graded))
                    cells += seg
                nb = nbformat.v4.new_notebook(metadata=base.metadata)
                nb.cells = cells
                t0 = time.perf_counter()
                ex = RobustExecute(config=c)
                ex.runs = [(lo, hi) for lo, hi, _ in spans]
                ex.preprocess(nb, {"nbgrader": {"assignment": assignment}, "metadata": {"path": str(work)}})
                for lo, hi, graded in spans:
                    found = {}
                    for index in range(lo, hi):
                        gid = _nbg(nb.cells[index]).get("grade_id")
                        if gid in graded:
                            found[gid] = _cell_result(nb.cells[index], ex.cell_verdicts.get(index))
                    results.append(found)
                if echo:
                    print(f"  graded {len(batch)} runs in one kernel: {time.perf_counter() - t0:.1f} s", flush=True)
            return results

        solutions = {_nbg(c)["grade_id"]: c.source for c in base.cells if c.cell_type == "code" and _nbg(c).get("solution")}
        poisons = {n: p for n, p in ((n, _poison(n, src)) for n, src in solutions.items()) if p is not None}
        first = grade_runs([(None, None)] + [(p, None) for p in poisons.values()])
        baseline = first[0]
        users = {n: {g for g, r in found.items() if not r.full} for n, found in zip(poisons, first[1:])}
        results = grade_runs([(m, set(m.fails).union(*(users.get(n, set()) for n in m.cells))) for m in mutants])
    global LAST_USERS
    LAST_USERS = users
    outcomes = []
    for mutant, found in zip(mutants, results):
        o = Outcome(mutant, found)
        _judge(o)
        outcomes.append(o)
    return baseline, outcomes


#: of the last :func:`run`: the grade cells that use each solution cell
LAST_USERS: dict[str, set[str]] = {}


def baseline_problems(baseline: dict[str, CellResult]) -> list[str]:
    """What is wrong with the solution's own run (it must get every point, with no REVIEW)."""
    out = [f"the solution loses points in {g}: {'; '.join(r.messages)[:300]}" for g, r in baseline.items() if not r.full]
    out += [f"REVIEW flag on the solution's {g}" for g, r in baseline.items() if r.review]
    return out


def report(assignment: str, baseline: dict[str, CellResult], outcomes: list[Outcome]) -> str:
    """A table of the outcomes and the mutation score (killed / wrong mutants)."""
    wrong = [o for o in outcomes if not o.mutant.correct]
    killed = sum(o.killed for o in wrong)
    lines = [f"{assignment}: mutation score {killed}/{len(wrong)} wrong solutions killed; "
             f"{sum(not o.problems for o in outcomes if o.mutant.correct)}/"
             f"{sum(o.mutant.correct for o in outcomes)} correct variants keep every point"]
    if LAST_USERS:
        lines.append("  grade cells that use each solution cell: " + "; ".join(
            f"{n} -> {', '.join(sorted(u)) or 'none'}" for n, u in LAST_USERS.items()))
    for p in baseline_problems(baseline):
        lines.append(f"  !! {p}")
    for o in outcomes:
        kind = "correct" if o.mutant.correct else ("killed " if o.killed else "SURVIVED")
        lines.append(f"  {'ok' if not o.problems else 'XX'} {kind:8} {o.mutant.name}: {o.mutant.description}")
        for p in o.problems:
            lines.append(f"       - {p}")
    return "\n".join(lines)


def main(assignment: str, only: list[str] | None = None, *, unsafe: bool = False, folder: Path | None = None) -> int:
    mutants = load(assignment, folder)
    if only:
        mutants = [m for m in mutants if m.name in only]
    if not mutants:
        print(f"no mutants for {assignment} in {MUTANTS_DIR / assignment}", file=sys.stderr)
        return 1
    baseline, outcomes = run(assignment, mutants, sandbox=not unsafe)
    print(report(assignment, baseline, outcomes))
    return 0 if not baseline_problems(baseline) and not any(o.problems for o in outcomes) else 1
