"""Cost of safe grading: autograding time per notebook with and without the sandbox and
the trusted pass, same machine, same run.

    python benchmarks/grading_cost.py [--repeats 3] [--assignment 02_transformer_blocks]

Grades the full solution of each assignment (built from the release like ``make demo``)
in three modes, interleaved so that machine load hits all alike:

- ``plain``:    kernel unsandboxed (``--unsafe``), no trusted checks (the in-kernel cells only)
- ``sandbox``:  kernel in bubblewrap, no trusted checks
- ``trusted``:  kernel in bubblewrap, hidden checks in the grader process (the default)

and prints seconds per notebook (mean ± sd over the repeats) and the overhead of each mode
over ``plain``. Writes the numbers to ``benchmarks/grading_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
import torch  # noqa: E402

from autograder import config as cfg  # noqa: E402
from autograder.demo import fill  # noqa: E402
from autograder.grade import grade  # noqa: E402
from autograder.release import assignments, generate_release  # noqa: E402

MODES = {  # name: (unsafe, use checks)
    "plain": (True, False),
    "sandbox": (False, False),
    "trusted": (False, True),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--assignment", action="append")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "grading_cost.json")
    a = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="grading-cost-"))
    empty_checks = work / "no-checks"
    empty_checks.mkdir()
    (work / cfg.SOURCE).symlink_to(ROOT / cfg.SOURCE)
    db = f"sqlite:///{work / 'gradebook.db'}"
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "repeats": a.repeats, "assignments": {}}
    try:
        for aid in a.assignment or assignments(work):
            generate_release(work, aid, work / cfg.RELEASE / aid, db)
            for nb_path in sorted((work / cfg.RELEASE / aid).glob("*.ipynb")):
                src = nbformat.read(ROOT / cfg.SOURCE / aid / nb_path.name, as_version=4)
                student = fill(nbformat.read(nb_path, as_version=4), src)
                times: dict[str, list[float]] = {m: [] for m in MODES}
                for rep in range(a.repeats):
                    for mode, (unsafe, checks) in MODES.items():
                        subs = work / "subs" / f"{mode}{rep}"
                        (subs / "solution").mkdir(parents=True)
                        nbformat.write(student, subs / "solution" / nb_path.name)
                        [r] = grade(subs, aid, course_dir=work, db_url=db, unsafe=unsafe,
                                    checks_dir=None if checks else empty_checks, echo=False, workers=1,
                                    cell_timeout=cfg.CELL_TIMEOUT_S, student_timeout=1800, force=True)
                        if r.status != "graded" or r.auto_score != r.auto_max:
                            raise SystemExit(f"{mode}: the solution got {r.auto_score}/{r.auto_max} ({r.status} {r.message})")
                        times[mode].append(r.seconds)
                        print(f"{aid} {mode:8s} run {rep + 1}: {r.seconds:5.1f} s", flush=True)
                base = statistics.mean(times["plain"])
                summary = {}
                for mode, ts in times.items():
                    mean = statistics.mean(ts)
                    summary[mode] = {"seconds": ts, "mean_s": mean,
                                     "sd_s": statistics.stdev(ts) if len(ts) > 1 else 0.0,
                                     "overhead_vs_plain": mean / base - 1}
                report["assignments"][aid] = summary
                for mode, s in summary.items():
                    print(f"{aid} {mode:8s} {s['mean_s']:6.1f} ± {s['sd_s']:.1f} s per notebook "
                          f"({s['overhead_vs_plain']:+.0%} vs plain)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
