"""Data sets for the course: downloads with checksums, text pipeline, Multi30k.

Real data is downloaded into :func:`data_dir` (``$COURSE_DATA_DIR`` or ``~/.cache/course``)
and checked against SHA-256; synthetic stand-ins in the same on-disk format serve tests and
the quick profile.
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
]
