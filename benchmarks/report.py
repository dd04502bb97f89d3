"""Render ``benchmarks/results.json`` as the README's results table.

The table sits between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in
README.md. One row per assignment and device: the headline metric (mean over the
recorded runs, with their count), its target, training time, model size, and the
torch version and date of the latest run.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

#: assignment -> (metric key, what it measures, target)
HEADLINE = {
    "02_transformer_blocks": ("bleu_test2016", "BLEU, Multi30k test 2016, greedy (sacrebleu)", "≥ 37 within 5 min"),
}


def table(entries: list[dict]) -> str:
    rows = ["| assignment | profile | metric | result | target | training | model | device | torch | runs | last run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault((e["assignment"], e["profile"], e["device"]), []).append(e)
    for (aid, prof, device), runs in sorted(groups.items()):
        key, what, target = HEADLINE.get(aid, (None, "", ""))
        if key is None or not all(key in r["metrics"] for r in runs):
            continue
        values = [r["metrics"][key] for r in runs]
        last = runs[-1]
        m = last["metrics"]
        value = f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
        direction = f" {m['src']}→{m['tgt']}" if "src" in m else ""
        train = f"{m['train_time_s']:.0f} s, {int(m.get('steps', 0)):,} steps" if "train_time_s" in m else ""
        model = f"{m['params'] / 1e6:.1f} M params" if "params" in m else ""
        rows.append(f"| {aid} | {prof} | {what}{direction} | {value} | {target} | {train} | {model} | "
                    f"{device} | {last['torch']} | {len(runs)} | {last['date'][:10]} |")
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
