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


def test_readme_loader_table_matches_loader_speed_json():
    data = json.loads((ROOT / "benchmarks" / "loader_speed.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(report.LOADERS_BEGIN, 1)[1].split(report.LOADERS_END, 1)[0].strip()
    assert block == report.loader_table(data), "README loader table is stale: run `python benchmarks/report.py`"


def test_every_loader_row_carries_hardware_and_versions():
    for r in json.loads((ROOT / "benchmarks" / "loader_speed.json").read_text())["results"]:
        assert r["device_name"] and r["torch"] and r["date"] and r["torch_threads"] >= 1, r
        assert r["img_per_s_median"] > 0 and len(r["img_per_s_runs"]) >= 1, r


def _row(data, device, loader_workers, rate, **kw):
    return dict({"data": data, "device": device.split()[0].lower(), "device_name": device, "pipeline": "crop+flip",
                 "workers": loader_workers, "batch_size": 256, "batches_per_run": 12, "img_per_s_median": rate,
                 "img_per_s_runs": [rate], "torch": "2.x", "torch_threads": 2, "warmup_batches": 3,
                 "date": "2026-01-01T00:00:00", "n_images": 100}, **kw)


def test_loader_rows_merge_by_data_device_and_pipeline():
    from benchmarks.loader_speed import merge

    old = {"torch": "1.0", "date": "2025-01-01", "results": [
        {k: v for k, v in _row("jpeg", "CPU A", None, 10.0).items() if k not in ("torch", "date")},
        _row("jpeg", "GPU B", None, 50.0)]}
    new = [_row("jpeg", "GPU B", None, 70.0), _row("jpeg", "GPU B", 4, 7.0)]
    rows = merge(old, new)
    assert [(r["device_name"], r["img_per_s_median"]) for r in rows] == [("CPU A", 10.0), ("GPU B", 70.0), ("GPU B", 7.0)]
    assert rows[0]["torch"] == "1.0" and rows[0]["date"] == "2025-01-01", "old top-level metadata not carried into rows"


def test_loader_table_speedup_is_over_the_fastest_dataloader():
    text = report.loader_table({"results": [_row("synthetic", "GPU B", None, 90_000.0),
                                            _row("synthetic", "GPU B", 0, 3_000.0),
                                            _row("synthetic", "GPU B", 8, 30_000.0)]})
    assert "| 90,000 | 0: 3,000 · 8: 30,000 | 3.0× |" in text and "GPU B: torch 2.x" in text
