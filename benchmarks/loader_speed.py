"""Images per second: :class:`course.data.augment.DeviceLoader` vs ``DataLoader`` + torchvision v2.

    python benchmarks/loader_speed.py                      # CPU here, CUDA too when present
    python benchmarks/loader_speed.py --device cuda --workers 0 4 8 --real
    python benchmarks/loader_speed.py --device cuda --workers 0 4 8 --jpeg-dir DIR --no-synthetic --batches 30

Pipelines, each on the synthetic CIFAR-10 (and the real one with ``--real`` when
``load_cifar10(download=False)`` finds it under ``$COURSE_DATA_DIR``):

* ``crop+flip``: random crop (reflect padding 4) + horizontal flip + normalise;
* ``crop+flip+ra2/9``: the same plus RandAugment (2 ops, magnitude 9);
* ``crop+flip+ra2/9+mix``: plus mixup (alpha 0.2) / cutmix (alpha 1.0), soft labels
  (DataLoader: v2 ``MixUp``/``CutMix`` in the collate function).

Each loader is warmed up (``--warmup`` batches, plus the ``2 x workers`` batches a
``DataLoader``'s workers queue up while the first batch is awaited), then timed over
``--runs`` runs of ``--batches`` batches
(across epoch boundaries; ``torch.cuda.synchronize`` before reading the clock); for a
CUDA target the DataLoader batches are copied to the GPU (pinned, non-blocking), as a
training loop would. Prints a table and merges the rows into ``benchmarks/loader_speed.json``
(each row with its device name, torch version, threads, date and every run; rows of other
data sets, devices or pipelines measured earlier are kept, so a GPU run adds to the CPU rows), then
regenerates the README's loader table from that file (``benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402

from course.data.augment import Augment, DeviceLoader, reference_loader  # noqa: E402
from course.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, synthetic_cifar10_root  # noqa: E402
from course.data.download import DataError  # noqa: E402
from course.device import device_name  # noqa: E402

from benchmarks import report as report_module  # noqa: E402

PIPELINES: dict[str, Augment] = {
    "crop+flip": Augment(),
    "crop+flip+ra2/9": Augment(randaugment_n=2, randaugment_m=9),
    "crop+flip+ra2/9+mix": Augment(randaugment_n=2, randaugment_m=9, mixup_alpha=0.2, cutmix_alpha=1.0),
}


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_loader(batches: Iterator[Any], device: torch.device, n: int, runs: int, warmup: int, batch_size: int) -> list[float]:
    """Images/s of each run of ``n`` batches, after ``warmup`` batches."""
    to_device = device.type == "cuda"

    def take(k: int) -> None:
        for _ in range(k):
            x, y = next(batches)
            if to_device and x.device != device:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
        _sync(device)

    take(warmup)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        take(n)
        rates.append(n * batch_size / (time.perf_counter() - t0))
    return rates


def _decode(path: str) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


def load_jpeg_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 3, 32, 32] images and int64 [N] labels from ``folder/<class>/*.jpg`` (a
    lossy re-encoding of CIFAR-10, good enough to time a loader on real pixels)."""
    from concurrent.futures import ProcessPoolExecutor

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(str(f), i) for i, c in enumerate(classes) for f in sorted((folder / c).glob("*.jpg"))]
    if not files:
        raise SystemExit(f"no JPEGs under {folder}/<class>/")
    with ProcessPoolExecutor() as pool:
        raw = list(pool.map(_decode, [f for f, _ in files], chunksize=512))
    images = torch.frombuffer(bytearray(b"".join(raw)), dtype=torch.uint8).view(len(raw), 32, 32, 3)
    return images.permute(0, 3, 1, 2).contiguous(), torch.tensor([i for _, i in files])


def merge(previous: dict[str, Any] | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``previous`` for (data, device name, pipeline) not measured again, then ``rows``.

    Rows of an older file without per-row metadata inherit its top-level fields.
    """
    fresh = {(r["data"], r["device_name"], r["pipeline"]) for r in rows}
    kept = []
    for r in (previous or {}).get("results", []):
        r = dict(r)
        for key in ("torch", "torchvision", "date", "torch_threads", "warmup_batches"):
            if key not in r and previous and key in previous:
                r[key] = previous[key]
        if (r["data"], r["device_name"], r["pipeline"]) not in fresh:
            kept.append(r)
    return kept + rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", nargs="*", default=None, help="cpu and/or cuda (default: cpu, and cuda if available)")
    p.add_argument("--workers", nargs="*", type=int, default=None, help="DataLoader num_workers values (default: 0 and 2; 0/4/8 on CUDA)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 on CPU, 512 on CUDA")
    p.add_argument("--batches", type=int, default=None, help="batches per timed run (default: 12 on CPU, 100 on CUDA)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per loader")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=list(PIPELINES))
    p.add_argument("--real", action="store_true", help="also the real CIFAR-10 from COURSE_DATA_DIR, if present")
    p.add_argument("--jpeg-dir", type=Path, default=None,
                   help="also a JPEG copy of CIFAR-10 laid out as train/<class>/*.jpg (decoded once, in parallel)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic set (time only real pixels)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "loader_speed.json")
    p.add_argument("--replace", action="store_true", help="drop the rows measured earlier instead of merging")
    p.add_argument("--no-readme", action="store_true", help="do not regenerate the README's loader table")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device(d) for d in (args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))]
    datasets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if not args.no_synthetic:
        datasets["synthetic"] = load_cifar10(train=True, root=synthetic_cifar10_root(), synthetic=True)
    notes: list[str] = []
    if args.real:
        try:
            datasets["real"] = load_cifar10(train=True, download=False)
        except DataError as err:
            notes.append(f"real CIFAR-10 skipped: {str(err).splitlines()[0]}")
            print(notes[-1])

    if args.jpeg_dir is not None:
        datasets["jpeg"] = load_jpeg_folder(args.jpeg_dir / "train")
        print(f"decoded {len(datasets['jpeg'][1]):,} JPEGs from {args.jpeg_dir / 'train'}")

    results: list[dict[str, Any]] = []
    started = datetime.datetime.now().isoformat(timespec="seconds")
    header = f"{'data':9s} {'device':6s} {'pipeline':22s} {'loader':18s} {'img/s (median)':>15s}  runs"
    print(header)
    print("-" * len(header))
    for data_name, (images, labels) in datasets.items():
        for device in devices:
            cuda = device.type == "cuda"
            bs = args.batch_size or (512 if cuda else 256)
            n = args.batches or (100 if cuda else 12)
            workers = args.workers if args.workers is not None else ([0, 4, 8] if cuda else [0, 2])
            for pname in args.pipelines:
                aug = PIPELINES[pname]
                rows: list[tuple[str, int | None, Iterator[Any]]] = []
                dl = DeviceLoader(images, labels, bs, train=True, device=device, augment=aug, seed=0)
                rows.append(("DeviceLoader", None, _cycle(dl)))
                for w in workers:
                    ref = reference_loader(
                        images, labels, bs, augment=aug, mean=CIFAR10_MEAN, std=CIFAR10_STD, workers=w, pin_memory=cuda
                    )
                    rows.append((f"DataLoader w={w}", w, _cycle(ref)))
                for loader_name, w, batches in rows:
                    # workers fill their queues (prefetch_factor 2 each) while the first batch is
                    # awaited: drain that backlog before the clock starts, or it is timed as free
                    warmup = args.warmup + (2 * w if w else 0)
                    rates = _time_loader(batches, device, n, args.runs, warmup, bs)
                    med = statistics.median(rates)
                    print(f"{data_name:9s} {device.type:6s} {pname:22s} {loader_name:18s} {med:15,.0f}  {args.runs}")
                    results.append(
                        {
                            "data": data_name,
                            "n_images": int(labels.shape[0]),
                            "device": str(device),
                            "device_name": device_name(device),
                            "pipeline": pname,
                            "augment": aug.describe(),
                            "loader": "DeviceLoader" if w is None else "DataLoader+torchvision.v2",
                            "workers": w,
                            "batch_size": bs,
                            "batches_per_run": n,
                            "img_per_s_median": round(med, 1),
                            "img_per_s_runs": [round(r, 1) for r in rates],
                            "torch": torch.__version__,
                            "torchvision": torchvision.__version__,
                            "torch_threads": torch.get_num_threads(),
                            "warmup_batches": warmup,
                            "date": started,
                        }
                    )
                    del batches  # stop the workers before the next loader starts
    previous = None
    if args.out.exists() and not args.replace:
        previous = json.loads(args.out.read_text())
    report = {
        "what": "images/s of DeviceLoader vs DataLoader + torchvision.transforms.v2 (CIFAR-10 32x32)",
        "notes": notes,
        "results": merge(previous, results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({len(results)} new rows, {len(report['results']) - len(results)} kept)")
    if not args.no_readme and args.out.resolve() == (ROOT / "benchmarks" / "loader_speed.json").resolve():
        report_module.update_readme_loaders(args.out, ROOT / "README.md")
        print("updated the loader table in README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
