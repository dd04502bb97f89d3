"""The README's results table is generated from benchmarks/results.json."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report
from benchmarks.run import as_script

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_matches_results_json():
    entries = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(report.BEGIN, 1)[1].split(report.END, 1)[0].strip()
    assert block == report.table(entries), "README results table is stale: run `python benchmarks/report.py`"


def test_every_result_carries_hardware_and_versions():
    for e in json.loads((ROOT / "benchmarks" / "results.json").read_text()):
        assert e["device"] and e["torch"] and e["date"] and e["profile"] in ("quick", "cpu", "full")


def test_table_averages_runs_and_counts_them():
    base = {"assignment": "02_transformer_blocks", "profile": "full", "device": "GPU X", "torch": "2.0",
            "date": "2026-01-01T00:00:00"}
    entries = [dict(base, metrics={"bleu_test2016": v, "train_time_s": 100.0, "steps": 10, "params": 1e6})
               for v in (30.0, 32.0)]
    row = report.table(entries).splitlines()[-1]
    assert "| 31.00 ± 1.41 |" in row and "| 2 |" in row and "GPU X" in row


def test_notebook_as_script_drops_magics(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "x = 1"]},
                    {"cell_type": "markdown", "source": "# title"},
                    {"cell_type": "code", "source": "print(x)"}]}
    p = tmp_path / "n.ipynb"
    p.write_text(json.dumps(nb))
    script = as_script(p)
    assert "%matplotlib" not in script and "x = 1" in script and "print(x)" in script
    ns: dict = {}
    exec(compile(script, "s", "exec"), ns)
