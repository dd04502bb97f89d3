"""Render the measured benchmarks as the README's tables.

* ``benchmarks/results.json`` -> the results table between ``<!-- results:begin -->`` and
  ``<!-- results:end -->``: one row per assignment and device, the headline metric (mean
  over the recorded runs, with their count), its target, training time, model size, and
  the torch version and date of the latest run.
* ``benchmarks/loader_speed.json`` -> the loader table between ``<!-- loaders:begin -->``
  and ``<!-- loaders:end -->``: images/s of ``DeviceLoader`` and of ``DataLoader`` +
  torchvision v2 per data set, device and pipeline, then one line per device with its
  torch version, threads, batch size, runs and date.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
LOADERS_BEGIN, LOADERS_END = "<!-- loaders:begin -->", "<!-- loaders:end -->"

#: loader_speed.json data key -> how the table names it
DATA_NAMES = {"synthetic": "synthetic", "real": "CIFAR-10", "jpeg": "real pixels, JPEG copy"}
#: pipeline key -> how the table names it
PIPELINE_NAMES = {
    "crop+flip": "crop + flip",
    "crop+flip+ra2/9": "+ RandAugment (2 ops, magnitude 9)",
    "crop+flip+ra2/9+mix": "+ mixup/cutmix",
}

#: assignment -> (metric key, what it measures, target)
HEADLINE = {
    "01_attention_seq2seq": ("bleu_test2016", "BLEU, Multi30k test 2016, greedy (sacrebleu), attention GRU",
                             "≥ 30 (de→en) within 5 min"),
    "02_transformer_blocks": ("bleu_test2016", "BLEU, Multi30k test 2016, greedy (sacrebleu)", "≥ 37 within 5 min"),
    "03_local_attention": ("test_acc", "CIFAR-10 test accuracy (%)", ""),
    "04_vit": ("test_acc", "CIFAR-10 test accuracy (%)", ""),
    "05_swin": ("test_acc", "CIFAR-10 test accuracy (%)", ""),
    "06_unet": ("val_dice", "ISBI 2012 validation membrane Dice (6 slices)", ""),
}
#: Targets that depend on the model of a row (``metrics["model"]``), where one notebook trains several.
MODEL_TARGETS = {
    ("03_local_attention", "conv"): "≥ 93 within 2 min (full)",
    ("03_local_attention", "attention"): "≥ 90 within 10 min (full)",
    ("04_vit", "vit"): "≥ 88 within 5 min (full)",
    ("05_swin", "swin"): "≥ 88 within 5 min (full)",
    ("06_unet", "unet"): "≥ 0.85 within 5 min (full), above no skips",
    ("06_unet", "unet + TTA"): "≥ 0.85 within 5 min (full)",
}


def table(entries: list[dict]) -> str:
    rows = ["| assignment | profile | metric | result | target | training | model | device | torch | runs | last run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        m = e.get("metrics", {})  # one row per direction of a translation task, per model of a comparison
        groups.setdefault((e["assignment"], e["profile"], e["device"], str(m.get("src", "")), str(m.get("tgt", "")),
                           str(m.get("model", ""))), []).append(e)
    for (aid, prof, device, _, _, name), runs in sorted(groups.items()):
        key, what, target = HEADLINE.get(aid, (None, "", ""))
        if key is None or not all(key in r["metrics"] for r in runs):
            continue
        values = [r["metrics"][key] for r in runs]
        last = runs[-1]
        m = last["metrics"]
        value = f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
        direction = f" {m['src']}→{m['tgt']}" if "src" in m else f", {name}" if name else ""
        target = MODEL_TARGETS.get((aid, name), target) if name else target
        train = f"{m['train_time_s']:.0f} s, {int(m.get('steps', 0)):,} steps" if "train_time_s" in m else ""
        model = "" if "params" not in m else f"{m['params'] / 1e6:.1f} M params" if m["params"] >= 1e6 else \
            f"{m['params'] / 1e3:.1f} k params"
        rows.append(f"| {aid} | {prof} | {what}{direction} | {value} | {target} | {train} | {model} | "
                    f"{device} | {last['torch']} | {len(runs)} | {last['date'][:10]} |")
    return "\n".join(rows)


def loader_table(report: dict) -> str:
    """Markdown table (plus one line per device) of a ``loader_speed.json`` report."""
    rows = ["| data | device | pipeline | `DeviceLoader` | `DataLoader` + torchvision v2, by workers | speed-up |",
            "| --- | --- | --- | --- | --- | --- |"]
    groups: dict[tuple, list[dict]] = {}
    for r in report["results"]:
        groups.setdefault((r["data"], r["device_name"], r["pipeline"]), []).append(r)
    order = list(PIPELINE_NAMES)
    data_order = list(DATA_NAMES)

    def key(k: tuple) -> tuple:
        data, device, pipeline = k
        return (data_order.index(data) if data in data_order else 99, not device.startswith("CPU"), device,
                order.index(pipeline) if pipeline in order else 99, pipeline)

    devices: dict[str, dict] = {}
    for k in sorted(groups, key=key):
        data, device, pipeline = k
        runs = groups[k]
        ours = [r for r in runs if r["workers"] is None]
        theirs = sorted((r for r in runs if r["workers"] is not None), key=lambda r: r["workers"])
        if not ours or not theirs:
            continue
        mine = ours[0]["img_per_s_median"]
        best = max(r["img_per_s_median"] for r in theirs)
        by_workers = " · ".join(f"{r['workers']}: {r['img_per_s_median']:,.0f}" for r in theirs)
        n = ours[0].get("n_images")
        name = DATA_NAMES.get(data, data) + (f" ({n:,})" if n else "")
        rows.append(f"| {name} | {device} | {PIPELINE_NAMES.get(pipeline, pipeline)} | {mine:,.0f} | "
                    f"{by_workers} | {mine / best:.1f}× |")
        devices.setdefault(device, ours[0])
    lines = ["\n".join(rows), ""]
    for device, r in devices.items():
        lines.append(f"{device}: torch {r.get('torch', '?')}, {r.get('torch_threads', '?')} threads, "
                     f"batch {r['batch_size']}, median of {len(r['img_per_s_runs'])} runs of "
                     f"{r['batches_per_run']} batches after {r.get('warmup_batches', '?')} warm-up batches "
                     f"(`DataLoader`: plus the 2 per worker it queues ahead), "
                     f"{str(r.get('date', '?'))[:10]}.  ")
    lines.append("Speed-up: `DeviceLoader` over the fastest `DataLoader` setting in the same row.")
    return "\n".join(lines)


def _replace_block(readme: Path, begin: str, end: str, body: str) -> None:
    text = Path(readme).read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{readme} has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    Path(readme).write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def update_readme(results: Path, readme: Path) -> None:
    _replace_block(readme, BEGIN, END, table(json.loads(Path(results).read_text())))


def update_readme_loaders(loader_speed: Path, readme: Path) -> None:
    _replace_block(readme, LOADERS_BEGIN, LOADERS_END, loader_table(json.loads(Path(loader_speed).read_text())))


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    update_readme(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "benchmarks" / "results.json",
                  root / "README.md")
    update_readme_loaders(root / "benchmarks" / "loader_speed.json", root / "README.md")
