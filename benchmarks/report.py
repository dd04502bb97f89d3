"""Render ``benchmarks/results.json`` as the README's results table.

The table sits between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in
README.md; every row carries the device, torch version and date it was measured with.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def table(entries: list[dict]) -> str:
    rows = ["| assignment | metric | value | train time | device | torch | profile | date |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in entries:
        m = dict(e["metrics"])
        t = m.pop("train_time_s", None)
        extras = {k: v for k, v in m.items() if k not in ("target",)}
        for k, v in extras.items():
            if not isinstance(v, (int, float)):
                continue
            rows.append(f"| {e['assignment']} | {k} | {v:.4g} | {'' if t is None else f'{t:.0f} s'} | "
                        f"{e['device']} | {e['torch']} | {e['profile']} | {e['date'][:10]} |")
    return "\n".join(rows)


def update_readme(results: Path, readme: Path) -> None:
    entries = json.loads(Path(results).read_text())
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(f"{head}{BEGIN}\n{table(entries)}\n{END}{tail}")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    update_readme(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "benchmarks" / "results.json",
                  root / "README.md")
