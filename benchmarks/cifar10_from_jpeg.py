"""Write the JPEG copy of CIFAR-10 (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, e.g. the
``cifar10-jpg.tar.gz`` of a machine without internet) as a stand-in in the official batch layout,
for measuring the notebooks on real pixels where torchvision cannot download the archive.

    python benchmarks/cifar10_from_jpeg.py cifar10-jpg.tar.gz OUT
    COURSE_CIFAR10_STANDIN=OUT  (the vision notebooks then read OUT with load_cifar10(synthetic=True)
                                 and say that they do)

The JPEG re-encoding is lossy: expect about one point less test accuracy than on the official files.
"""
from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loader_speed import load_jpeg_folder  # noqa: E402
from course.data import CIFAR10_CLASSES  # noqa: E402
from course.data.cifar10 import write_cifar10_standin  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="the .tar.gz, or a folder holding train/ and test/")
    p.add_argument("out", type=Path, help="root to write cifar-10-batches-py/ into")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.source
        if folder.is_file():
            with tarfile.open(folder) as tar:
                tar.extractall(tmp, filter="data")
            folder = Path(tmp)
        found = [d for d in folder.rglob("train") if d.is_dir() and (d.parent / "test").is_dir()]
        if not found:
            raise SystemExit(f"no train/ and test/ folders under {args.source}")
        splits = []
        for split in ("train", "test"):
            images, labels = load_jpeg_folder(found[0].parent / split)
            classes = sorted(p.name for p in (found[0].parent / split).iterdir() if p.is_dir())
            if sorted(classes) != sorted(CIFAR10_CLASSES):
                raise SystemExit(f"{split}: class folders {classes} are not CIFAR-10's")
            remap = [CIFAR10_CLASSES.index(c) for c in classes]  # folder order -> CIFAR-10's label order
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # classes mixed,
            splits.append((images[order], torch.tensor(remap)[labels[order]]))  # as in the official batches
            print(f"{split}: {len(labels)} images")
    write_cifar10_standin(args.out, splits[0], splits[1], name="jpeg")
    print(f"written: {args.out}/cifar-10-batches-py (load_cifar10(root=..., synthetic=True))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
