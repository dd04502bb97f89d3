"""``make bench``: run the solution notebooks in the ``full`` profile and record results.

    python benchmarks/run.py [ASSIGNMENT ...] [--results benchmarks/results.json]

Each notebook under ``solutions/`` runs top to bottom with ``COURSE_PROFILE=full`` and
``COURSE_RESULTS`` pointing at the results file; the notebook's own
``course.results.record(...)`` call appends its metrics there with the device, torch
version and date. The executed notebooks are kept in ``benchmarks/executed/`` and the
README's results table is regenerated from the results file (``benchmarks/report.py``).

Where Jupyter is not installed (a bare GPU box), the notebook's code cells run as one
plain Python script instead: same code, same order.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def as_script(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        # IPython-only lines (magics, shell escapes) have no meaning in a script
        lines = [l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))]
        cells.append("\n".join(lines))
    prelude = ("try:\n    from IPython.display import display\n"
               "except ImportError:  # no Jupyter here: figures are only saved\n"
               "    def display(*objs, **kwargs):\n        pass\n")
    return prelude + "\n\n# ---- next cell ----\n".join(cells) + "\n"


def run_notebook(nb_path: Path, out_dir: Path, env: dict, timeout: int, script: bool = False) -> float:
    t0 = time.perf_counter()
    try:
        if script:
            raise ImportError
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        script = out_dir / (nb_path.stem + ".py")
        script.write_text(as_script(nb_path))
        subprocess.run([sys.executable, str(script)], cwd=nb_path.parent, env=env, check=True, timeout=timeout)
    else:
        nb = nbformat.read(nb_path, as_version=4)
        os.environ.update(env)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()
        nbformat.write(nb, out_dir / nb_path.name)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("assignments", nargs="*", help="default: every folder of solutions/")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.json")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per notebook")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    ap.add_argument("--script", action="store_true", help="run the code cells as a plain Python script")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the notebooks, e.g. COURSE_MT_DIRECTION=de-en (repeatable)")
    a = ap.parse_args(argv)

    names = a.assignments or sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    out_dir = ROOT / "benchmarks" / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COURSE_PROFILE=a.profile, COURSE_RESULTS=str(a.results.resolve()), MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for item in a.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    failed = []
    for name in names:
        for nb_path in sorted((ROOT / "solutions" / name).glob("*.ipynb")):
            print(f"== {nb_path.relative_to(ROOT)} (profile {a.profile})", flush=True)
            try:
                s = run_notebook(nb_path, out_dir, env, a.timeout, a.script)
                print(f"   done in {s:.0f} s", flush=True)
            except Exception as e:  # keep going: one failing notebook must not hide the others
                print(f"   FAILED: {type(e).__name__}: {e}", flush=True)
                failed.append(nb_path.name)
    if not a.no_readme and a.results.exists():
        from benchmarks.report import update_readme

        update_readme(a.results, ROOT / "README.md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
