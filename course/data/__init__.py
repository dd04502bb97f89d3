"""Data sets for the course: downloads with checksums, text pipeline, Multi30k,
CIFAR-10 with a device-resident augmenting loader, ISBI 2012 membranes.

Real data is downloaded into :func:`data_dir` (``$COURSE_DATA_DIR`` or ``~/.cache/course``)
and checked against SHA-256 (CIFAR-10: torchvision's MD5); synthetic stand-ins in the same
on-disk format serve tests and the quick profile. The vision names are imported on first
use, so ``import course.data`` stays light for the text assignments.
"""

from __future__ import annotations

from .download import DataError, data_dir, download, fetch, sha256sum
from .multi30k import (
    MULTI30K_LANGS,
    MULTI30K_SHA256,
    MULTI30K_SPLITS,
    load_multi30k,
    multi30k_url,
    synthetic_multi30k_root,
    write_synthetic_multi30k,
)
from .text import (
    LengthBucketSampler,
    TranslationBatch,
    Vocab,
    collate_translation,
    detokenize,
    encode_pairs,
    make_batches,
    tokenize,
)

_LAZY = {
    "cifar10": ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_URL", "load_cifar10",
                "write_synthetic_cifar10", "synthetic_cifar10_root", "channel_stats"],
    "augment": ["Augment", "DeviceLoader", "RANDAUGMENT_OPS", "augment_batch", "crop_flip", "randaugment",
                "normalize", "cutout", "mix", "reference_transforms", "reference_loader"],
    "isbi": ["ISBI_N_SLICES", "ISBI_SIZE", "ISBI_VAL_SLICES", "ISBI_SHA256", "isbi_url", "isbi_split_indices",
             "load_isbi2012", "extract_isbi_archive", "TileSampler", "predict_full", "write_synthetic_isbi",
             "synthetic_isbi_root"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # download
    "DataError",
    "data_dir",
    "sha256sum",
    "download",
    "fetch",
    # multi30k
    "MULTI30K_SPLITS",
    "MULTI30K_LANGS",
    "MULTI30K_SHA256",
    "multi30k_url",
    "load_multi30k",
    "write_synthetic_multi30k",
    "synthetic_multi30k_root",
    # text
    "tokenize",
    "detokenize",
    "Vocab",
    "TranslationBatch",
    "collate_translation",
    "encode_pairs",
    "make_batches",
    "LengthBucketSampler",
    *_WHERE,
]
