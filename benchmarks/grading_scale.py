"""Grading a class at scale: students per minute with 1 and with 2 workers, same machine,
same run (not a timed test).

    python benchmarks/grading_scale.py [--assignment 02_transformer_blocks] [--out benchmarks/grading_scale.json]

24 synthetic students of the assignment: 10 full solutions, 6 untouched releases, 6 wrong
solutions (the full solution with one known mistake of ``tests/mutants/<assignment>/``
each) and two hostile ones: a disk filler (writes 8 GiB to every writable place it finds)
and a loop that ignores interrupts (SIGINT ignored, a child process left behind, every
exception swallowed). The time limits are measured once from the reference solution (as
``grade`` does by default); the class is then graded with ``--workers 1`` and with
``--workers 2``, each in a fresh course directory with the same limits, in the order 1, 2, 2, 1
(a load that drifts during the benchmark weighs on both alike). Every run must give the same
rows. Writes students/minute of each run, the speed-up, the cost of each hostile
student over the median full solution, and a projection for 300 students x 6 notebooks to
``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402
import torch  # noqa: E402

from autograder import config as cfg  # noqa: E402
from autograder.demo import fill  # noqa: E402
from autograder.grade import grade  # noqa: E402
from autograder.mutants import load as load_mutants  # noqa: E402
from autograder.release import generate_release  # noqa: E402

FILLER = ("\nimport os\nfor _where in ('.', '/tmp', os.path.expanduser('~'), '/dev/shm'):\n    try:\n"
          "        with open(os.path.join(_where, 'fill.bin'), 'wb') as _f:\n            for _ in range(8192):\n"
          "                _f.write(b'x' * 2**20)\n    except OSError as _e:\n        print('stopped', _where, _e.errno)\n")
STUBBORN = ("\nimport signal, subprocess\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "_child = subprocess.Popen(['sleep', '987654'])\nwhile True:\n    try:\n        pass\n"
            "    except BaseException:\n        pass\n")


def _gid(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def students(aid: str, release: nbformat.NotebookNode, source: nbformat.NotebookNode, n_full: int = 10,
             n_blank: int = 6, n_wrong: int = 6) -> dict[str, nbformat.NotebookNode]:
    full = fill(release, source)
    first_solution = next(_gid(c) for c in full.cells if c.metadata.get("nbgrader", {}).get("solution"))
    out = {f"full_{i:02d}": full for i in range(n_full)}
    out.update({f"blank_{i:02d}": release for i in range(n_blank)})
    wrong, cells_seen = [], set()
    for m in load_mutants(aid):  # one known mistake each, in different exercises where possible
        if m.correct or set(m.cells) & cells_seen:
            continue
        if len(wrong) == n_wrong:
            break
        wrong.append(m)
        cells_seen |= set(m.cells)
    for i, m in enumerate(wrong):
        nb = nbformat.from_dict(json.loads(json.dumps(full)))
        for c in nb.cells:
            if _gid(c) in m.cells:
                c.source = m.cells[_gid(c)]
        out[f"wrong_{i:02d}_{m.name}"] = nb
    for name, code in (("hostile_filler", FILLER), ("hostile_stubborn", STUBBORN)):
        nb = nbformat.from_dict(json.loads(json.dumps(full)))
        next(c for c in nb.cells if _gid(c) == first_solution).source += code
        out[name] = nb
    return out


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.machine()}"


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assignment", default="02_transformer_blocks")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 2, 1],
                    help="worker counts of the runs, in order (default 1 2 2 1: each count twice, so that a load "
                         "that drifts during the benchmark weighs on both alike)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "grading_scale.json")
    ap.add_argument("--class", dest="mix", type=int, nargs=3, default=[10, 6, 6], metavar=("FULL", "BLANK", "WRONG"),
                    help="full solutions, blank releases, wrong solutions (plus the two hostile students)")
    ap.add_argument("--report", type=Path, default=None, metavar="DIR",
                    help="also write the class report of the last run to DIR (python -m autograder report)")
    a = ap.parse_args(argv)
    aid = a.assignment

    work = Path(tempfile.mkdtemp(prefix="grading-scale-"))
    report: dict = {"assignment": aid, "machine": machine(), "torch": torch.__version__,
                    "date": datetime.date.today().isoformat(), "load_1min_at_start": load(), "runs": {}}
    try:
        base = work / "base"
        (base / cfg.SOURCE).mkdir(parents=True)
        (base / cfg.SOURCE / aid).symlink_to(ROOT / cfg.SOURCE / aid)
        generate_release(base, aid, base / cfg.RELEASE / aid, f"sqlite:///{base / 'gradebook.db'}")
        names = sorted(p.name for p in (base / cfg.RELEASE / aid).glob("*.ipynb"))
        if len(names) != 1:
            raise SystemExit("this benchmark handles one-notebook assignments")
        release = nbformat.read(base / cfg.RELEASE / aid / names[0], as_version=4)
        source = nbformat.read(ROOT / cfg.SOURCE / aid / names[0], as_version=4)
        subs = work / "subs"
        cls = students(aid, release, source, *a.mix)
        for sid, nb in cls.items():
            (subs / sid).mkdir(parents=True)
            nbformat.write(nb, subs / sid / names[0])
        report["students"] = {"total": len(cls), "full": a.mix[0], "blank": a.mix[1],
                              "wrong": [s.split("_", 2)[2] for s in cls if s.startswith("wrong_")],
                              "hostile": ["disk filler (8 GiB to every writable place)",
                                          "loop ignoring SIGINT, child process left behind"]}

        # the limits, measured from the reference solution once (what `grade` does by default)
        calib = work / "calibrate"
        (calib / cfg.SOURCE).mkdir(parents=True)
        (calib / cfg.SOURCE / aid).symlink_to(ROOT / cfg.SOURCE / aid)
        (work / "empty").mkdir()
        t0 = time.perf_counter()
        grade(work / "empty", aid, course_dir=calib, db_url=f"sqlite:///{calib / 'gradebook.db'}", echo=True, workers=1)
        with sqlite3.connect(calib / "gradebook.db") as con:
            cell, student, slowest, ref_s = con.execute(
                "SELECT cell_timeout, student_timeout, slowest_cell_s, reference_s FROM autograder_limits").fetchone()
        report["limits"] = {"cell_timeout_s": cell, "student_timeout_s": student, "reference_slowest_cell_s": slowest,
                            "reference_graded_in_s": ref_s, "measured_in_s": time.perf_counter() - t0}
        print(f"limits: {cell} s per cell, {student} s per student", flush=True)

        rows: dict[int, dict] = {}
        runs: list[dict] = []
        for k, n in enumerate(a.workers):
            course = work / f"run{k}-w{n}"
            (course / cfg.SOURCE).mkdir(parents=True)
            (course / cfg.SOURCE / aid).symlink_to(ROOT / cfg.SOURCE / aid)
            print(f"== run {k + 1}/{len(a.workers)}: {n} worker(s), load {load()}", flush=True)
            load_before = load()
            t0 = time.perf_counter()
            results = grade(subs, aid, course_dir=course, db_url=f"sqlite:///{course / 'gradebook.db'}", echo=False,
                            workers=n, cell_timeout=cell, student_timeout=student)
            wall = time.perf_counter() - t0
            by = {r.student: r for r in results}
            full_s = statistics.median(by[s].seconds for s in by if s.startswith("full_"))
            run = {"workers": n, "wall_s": round(wall, 1), "students_per_min": round(len(results) / wall * 60, 2),
                   "median_full_solution_s": round(full_s, 1),
                   "hostile": {s: {"seconds": round(by[s].seconds, 1), "over_median_full_s": round(by[s].seconds - full_s, 1),
                                   "status": by[s].status, "auto": by[s].auto_score, "message": by[s].message[:120]}
                               for s in by if s.startswith("hostile_")},
                   "statuses": {st: sum(r.status == st for r in results) for st in sorted({r.status for r in results})},
                   "load_1min_before": load_before, "load_1min_after": load()}
            runs.append(run)
            now = {r.student: (r.status, r.auto_score, tuple(sorted(r.cells.items())), bool(r.review)) for r in results}
            rows.setdefault(n, now)
            report.setdefault("identical_rows", True)
            report["identical_rows"] &= all(now == other for other in rows.values())
            print(json.dumps(run, indent=1), flush=True)
            if a.report is not None:
                from autograder.report import write_report

                write_report(aid, course_dir=course, db_url=f"sqlite:///{course / 'gradebook.db'}", out=a.report)
            bad = [s for s in by if s.startswith("full_") and by[s].auto_score != by[s].auto_max]
            if bad:
                raise SystemExit(f"full solutions without every point: {bad}")
            shutil.rmtree(course, ignore_errors=True)
        report["runs"] = runs
        # several runs per worker count (e.g. --workers 1 2 2 1): the mean rate of each, so that a
        # machine whose load drifts during the benchmark weighs on both alike
        per = {n: [r for r in runs if r["workers"] == n] for n in sorted({r["workers"] for r in runs})}
        report["by_workers"] = {str(n): {"runs": len(rs),
                                         "students_per_min": round(statistics.mean(r["students_per_min"] for r in rs), 2),
                                         "median_full_solution_s": round(statistics.mean(r["median_full_solution_s"]
                                                                                         for r in rs), 1),
                                         "hostile_over_median_full_s": {
                                             h: round(statistics.mean(r["hostile"][h]["over_median_full_s"] for r in rs), 1)
                                             for h in rs[0]["hostile"]}}
                                for n, rs in per.items()}
        if {1, 2} <= set(per):
            r1, r2 = report["by_workers"]["1"], report["by_workers"]["2"]
            report["speedup_2_vs_1"] = round(r2["students_per_min"] / r1["students_per_min"], 2)
            best = max(r1["students_per_min"], r2["students_per_min"])
            notebooks = 300 * 6
            report["projection"] = {
                "assumes": ("every notebook costs what this assignment's notebooks cost here (mix of full, blank, "
                            "wrong and hostile as above); a cluster node like this machine with 2 workers; "
                            "linear scaling over nodes (not measured)"),
                "notebooks": notebooks,
                "one_machine_h": round(notebooks / best / 60, 2),
                "ten_nodes_h": round(notebooks / (10 * best) / 60, 2),
                "sequential_one_machine_h": round(notebooks / r1["students_per_min"] / 60, 2),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
