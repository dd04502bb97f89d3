"""ISBI 2012 EM membrane segmentation (the U-Net paper's data), tiles, full-slice inference.

Real data: the 30 labelled 512x512 training slices of the ISBI 2012 challenge
("segmentation of neuronal structures in EM stacks", serial-section TEM of the Drosophila
ventral nerve cord), from the public mirror https://github.com/zhixuhao/unet
(``data/membrane/train/{image,label}/{i}.png``, i = 0..29), stored as
``<root>/isbi2012/image/{i}.png`` (8-bit grayscale) and ``<root>/isbi2012/label/{i}.png``
(membrane = 0 black, cell = 255 white), each checked against its SHA-256. A local copy of
the mirror's folder packed as a tarball (``membrane/{image,label}/{i}.png``) can be
unpacked with :func:`extract_isbi_archive` (or ``load_isbi2012(..., archive=path)``).

Convention: **membrane is the positive class**: ``target = 1`` where the label pixel is
dark (< 128). Split: validation = the last 6 slices (24..29), training = 0..23. The slices
are consecutive sections of one stack, so neighbours look alike; a contiguous validation
block leaks less than a random one.

Training: :class:`TileSampler` draws random crops with flips, 90-degree rotations and an
elastic deformation, all batched on the device. Evaluation: :func:`predict_full` runs a
model on whole slices (reflection-padded to a multiple of ``2**depth``), optionally
averaged over the 8 dihedral transforms.

Synthetic data: :func:`write_synthetic_isbi` writes the same PNG layout with a Voronoi
"tissue" (dark curved cell walls, dark organelles that are *not* membrane, texture, blur,
noise, uneven brightness); tests and the quick profile read it through
:func:`load_isbi2012` with ``verify=False``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .download import DataError, cached_root, data_dir, fetch

__all__ = [
    "ISBI_N_SLICES",
    "ISBI_SIZE",
    "ISBI_VAL_SLICES",
    "ISBI_SHA256",
    "isbi_url",
    "isbi_split_indices",
    "load_isbi2012",
    "extract_isbi_archive",
    "TileSampler",
    "predict_full",
    "write_synthetic_isbi",
    "synthetic_isbi_root",
]

ISBI_URL = "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/train/{kind}/{i}.png"
ISBI_N_SLICES = 30  # labelled training slices of the challenge
ISBI_SIZE = 512  # each slice is ISBI_SIZE x ISBI_SIZE pixels
ISBI_VAL_SLICES: tuple[int, ...] = tuple(range(24, 30))  # validation block of the real set
_KINDS = ("image", "label")
_SUBDIR = "isbi2012"
_SPLIT_ALIASES = {"valid": "val", "validation": "val", "dev": "val"}
_MAX_MEMBER_BYTES = 64 << 20  # refuse absurd archive members (a 512x512 PNG is < 300 kB)
_NON_BINARY_LIMIT = 0.01  # a label with more grey (not 0/255) pixels than this is no label
_MEMBRANE_LIMIT = 0.6  # membrane is a minority (about 20% of the real slices): above this, an inverted label

# SHA-256 of the real files, keyed by "{kind}/{i}.png". Computed from the offline copy
# isbi2012-membrane.tar.gz (membrane/{image,label}/{i}.png), which is assumed to be
# byte-identical to the mirror's raw files at ISBI_URL (it was packed from them unchanged).
ISBI_SHA256: dict[str, str] = {
    "image/0.png": "12c0ed6f42fc09f512abf6b354f217c950e4c8223b57a0315449b62a14556523",
    "image/1.png": "2cfc7ee635a6f85d5faf5c82a71d3a37bf5af4784b554964e3e07193e3ee2166",
    "image/2.png": "fe60d8d4f93102666a23a18d718b4b59fab8e616987d11c5072f4a87fac7301f",
    "image/3.png": "636d16cbb02f99dda4c9fb6db98dfba066142afa981ffdcfaf54453982e8250c",
    "image/4.png": "991fb3a8e4abc73da1d6159ca28fa4397f0a8351f30a8ba3669c86414d2ce239",
    "image/5.png": "7e9d9fb787664336d6f2cd68b23986f04527e7f8f494410983b4d70c6de1de3b",
    "image/6.png": "7c0a87933ffc72f4ff02f5996d9c3f69fe9a0b5277507415743ad8afb5e5d308",
    "image/7.png": "19f2c25716107d41008c83ba8a814ae47a090e00dea766dde38dce1f00899270",
    "image/8.png": "a8979e4abd1a10af9ca75e614d97875659adbd8ee3a68eba483bf556cfe3023d",
    "image/9.png": "730ebf435ab0f6e625d342552ad03736799fd660d0c6af744674c61a46aa082a",
    "image/10.png": "7c3717bcd48c4b7e5c878d7f0b809b8687a4e6fac471f3863de320a82ee72b8a",
    "image/11.png": "dd7857b25ca1417f87c282750e22c50947f75e81fa032d4e0c96b902c9dc9757",
    "image/12.png": "9f8eff9239bb764d51524a998387a7babcff9f62161804651b030b81aabd5ab8",
    "image/13.png": "377e5cdbcd7f0ac7336f482fc7ead7446887863f26769b3841fe98aadca77dad",
    "image/14.png": "f50d2d77acd2df564c5f0f40b1b24cd929f5944460aa4cd90c422cb5cef33a59",
    "image/15.png": "3e13fdea09accc14f46fb2f3ffa1e882cdd9c53b28a6842c4c10229692c7d1a4",
    "image/16.png": "ffc951c12450f94129582c16fd0d4b165c4a31469b0c42d966f07c183d3132e2",
    "image/17.png": "0f4f7e8e0619e4c7d517ac68d3789a3b6248253747717eac418bb7d32bef4de3",
    "image/18.png": "1bb1edd50595861743d14e1955dfa5d3c9395fb87563eca6dc81433bf9df49de",
    "image/19.png": "999b55633f8d7082add72082656e9532c5c3d97203b376eb317f09ba88a5a5b7",
    "image/20.png": "9153d14bfd15955fab576ea23281c4f23104b45dceed6e03e0b254607f50a1b2",
    "image/21.png": "9ad07cf4f67984f17a08aa63e6d92d395ce55f5132e6ff4fa6d95d6890ea7f97",
    "image/22.png": "6278609b4c42a7cb43212de0e2e2ceded758bafe0856fb56214ce658a61668e4",
    "image/23.png": "9ef4e9fbc838b9791af83a36918d729a0ea2e90ebc71c4a3c4554059f9379756",
    "image/24.png": "f0f917b9c3e9c96d16ea287aff9b05ecf4de88bc61d478e4aefcb64932fba70c",
    "image/25.png": "e0154737e76392e8bf94fb2c0dfa5ddad4b53aeec942a0a8cdd8ba63443e6072",
    "image/26.png": "d0ff11e09b0ee0c817334946e746a38ab621161d5f9c46af95c68b851f8d9a1a",
    "image/27.png": "eed8e8bee1db8fe7af39b5b43ecf14282c5c33eca0959726eea06f662027eacc",
    "image/28.png": "974df4b51e8905bdaabe61e80496cbf331f5c9aa9ddc2cb94113f58c2b7d2837",
    "image/29.png": "d9ae868509c610a69acbf3d69cde4f36a8e344cbbc444f93c917bf7b9f3e784f",
    "label/0.png": "13b67edd7607a1f284c09170c96a27d38422b0ffaf88024ea5b689acb5e1b4b0",
    "label/1.png": "cff60a00de2901e67165c91d7708d784e4c5bcc9d1c8c677922c905d63bbc3d1",
    "label/2.png": "a578af998c017f56763b81941c4dc612dde5731809b2cea0e8ebc37aecb84dbb",
    "label/3.png": "c8ae3b843fed02e09411a24c10850160922c331041b17c2674025f05a99b8834",
    "label/4.png": "a2f19c01b5d982a97923a0d29e64127a05e3f496731480ac9d9d302b5427f7ff",
    "label/5.png": "2dd5779118f6f4d87f88ec112f1cea20663b50acb8c748b0db1f23eda82b5118",
    "label/6.png": "2b0984e9f31fb41d4c5f4a754a3e080036b7321a0cbd9591a62010d20a574ce7",
    "label/7.png": "2ebc8c835999589bfd7d80d81f83d24e5c41138362b0faafef0f009e1ce82144",
    "label/8.png": "db979010ca4fbdb38c8b32d455aed0da90d598153f2a0046b63d02a6efa32b9e",
    "label/9.png": "8ee6c79adbb740595c4d61776e065e7164c00d52c7dd7562b5279041e7f3567b",
    "label/10.png": "b0156cc8186b0ee521927ac95645b406a42d27564607a6fea3a59c34add78f7c",
    "label/11.png": "e47b3aa0cfb3106476af1666e631d45bd16dbf2aff88260ee65d16e4134332db",
    "label/12.png": "85a7a899c0b72b81633ad122887ba5161d650385d7775a5b3074eb00131b3620",
    "label/13.png": "88549c22fd647312d6b37e17d33e90800d347d60ccb1156a8dde5e67394f9f3d",
    "label/14.png": "bcd775017eb4fdbdfe7ad6cc6420b2f16aa9d0576894d08370edcf564b46680a",
    "label/15.png": "59a854887b504ff00a5b4b93b2299bbc0bf0cbe54dea58d2b31969229b28b369",
    "label/16.png": "b34eb88cdc3313a6f4190f5753465df7f69d8f3c243a5c25427b1b99ecfe2499",
    "label/17.png": "4fa076cbeb744803d987dc46cf308dc3026408e7a5188838e30e25fe3ea67dbe",
    "label/18.png": "bd009dda57f204804732f592ed1d41ba18961d83c492413fe71548efa4a288d9",
    "label/19.png": "bf38407c55b6033c1677230228ecb100a11294aa74a7b92e5edfdc4abadcfef9",
    "label/20.png": "7af7296f2e892866669d4e4f9c0d4178987e6ec6e7d0751ec238d1bbe2da9c55",
    "label/21.png": "772c722acb2eac01769b53fa5037a3d62745e53102398bf9b2202df605cadda4",
    "label/22.png": "b19f5533ec24077a2395a085fe53af75dd350ef03798c4ff40ba9ebecb2ee0ad",
    "label/23.png": "2d8f1df5c9ee83e59eb2d709eb153b0570f12e726690f586154b01b0a88bb540",
    "label/24.png": "6ab02d922b5c937ecfe2a479be87a5d3e5ef950dc48da09d31f37b47d899ca9c",
    "label/25.png": "c5ea59aca7789dd507ac31c4a82bbd4c172f9e3544f8e040442c20d1dfa9e16d",
    "label/26.png": "b056fae9f358111b6c9e2494bdba645f206be581959b8d3763e97d62a65dd961",
    "label/27.png": "5be3823a57c82b632cead6eb09f438c6010a244dc0975f2a3e466f45d2c06840",
    "label/28.png": "c0b0e2a2b7aad46919d1afc980f7d5e39101fb07948ce65d9cac802d8b47682e",
    "label/29.png": "1e8839a97178914171defd6a97158f06fcac1fc3f0d45f2acdff9c49ab3fced9",
}


def isbi_url(kind: str, i: int) -> str:
    """Download URL of one raw file: ``kind`` is ``"image"`` or ``"label"``, ``i`` in 0..29."""
    if kind not in _KINDS:
        raise ValueError(f"isbi2012: kind must be one of {list(_KINDS)}, got {kind!r}")
    if not 0 <= i < ISBI_N_SLICES:
        raise ValueError(f"isbi2012: slice index must be in 0..{ISBI_N_SLICES - 1}, got {i}")
    return ISBI_URL.format(kind=kind, i=i)


def isbi_split_indices(split: str, n: int = ISBI_N_SLICES) -> list[int]:
    """Slice indices of ``split`` for a stack of ``n`` slices.

    ``"val"`` is the last ``max(1, round(n / 5))`` slices (for the real 30: 24..29),
    ``"train"`` the ones before (0..23), ``"all"`` every slice.
    """
    split = _SPLIT_ALIASES.get(split, split)
    if split not in ("train", "val", "all"):
        raise ValueError(f"isbi2012: unknown split {split!r}; expected 'train', 'val' or 'all'")
    if n < 2:
        raise ValueError(f"isbi2012: a stack needs at least 2 slices to split, got n={n}")
    n_val = max(1, round(n / 5))
    if split == "train":
        return list(range(n - n_val))
    if split == "val":
        return list(range(n - n_val, n))
    return list(range(n))


# ---------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------


def _read_png(path: Path, kind: str = "label") -> np.ndarray:
    """``uint8[H, W]`` pixels of an 8-bit grayscale PNG (a bilevel PNG too for a label);
    anything else is a DataError."""
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode = im.format, im.mode
            arr = np.array(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"{str(path)!r} is not a readable PNG image ({type(err).__name__}: {err}); it is "
            f"truncated or corrupt. Delete it and load again to re-download (or rewrite the "
            f"synthetic copy)."
        ) from err
    if fmt != "PNG":
        raise DataError(f"{str(path)!r} is a {fmt} file, expected a PNG image")
    if mode == "1" and kind == "label":  # bilevel: fine for a label, not for an EM image
        arr = arr.astype(np.uint8) * 255
    elif mode != "L":
        raise DataError(
            f"{str(path)!r} has PIL mode {mode!r} with shape {arr.shape}; expected an 8-bit "
            f"grayscale PNG (mode 'L'), one channel"
        )
    return arr


def _layout_hint(root: Path) -> str:
    for wrong in (root, root / "membrane", root / _SUBDIR / "membrane", root / "train", root / _SUBDIR / "train"):
        if (wrong / "image").is_dir():
            return (
                f" Found {str(wrong / 'image')!r}: that is the tarball's / mirror's layout. "
                f"Expected {str(root / _SUBDIR / 'image')!r} and {str(root / _SUBDIR / 'label')!r}; "
                f"move the folders there, or unpack the tarball with extract_isbi_archive."
            )
    tarballs = sorted(p.name for p in root.glob("*.tar*") if p.is_file()) if root.is_dir() else []
    if tarballs:
        return (
            f" {str(root)!r} holds {tarballs[:3]}: if that is a packed copy of the mirror's folder, "
            f"pass archive={str(root / tarballs[0])!r}."
        )
    return ""


def _fetch_slice(kind: str, i: int, root: Path, download: bool, verify: bool, n_slices: int) -> Path:
    name = f"{kind}/{i}.png"
    sha = ISBI_SHA256[name] if verify else None
    url = ISBI_URL.format(kind=kind, i=i)
    path = root / _SUBDIR / name
    if not verify and not path.is_file():
        # unverified loading never downloads: the mirror's slices would silently join
        # a synthetic (or other) stack
        raise DataError(
            f"{str(path)!r} not found. With verify=False nothing is downloaded: is n_slices={n_slices} "
            f"right (the n given to write_synthetic_isbi)? For the real data set load with verify=True "
            f"(downloads and checks every file), pass archive='/path/to/isbi2012-membrane.tar.gz', or set "
            f"COURSE_DATA_DIR to a folder holding {_SUBDIR}/{name}."
        )
    try:
        return fetch(f"{_SUBDIR}/{name}", url, sha, root=root, download=download)
    except OSError as err:  # e.g. a read-only data folder
        raise DataError(
            f"isbi2012: could not store {str(root / _SUBDIR / name)!r} ({type(err).__name__}: {err}); "
            f"point root / COURSE_DATA_DIR at a writable folder, or pre-fetch the files there."
        ) from err
    except DataError as err:
        if verify and "checksum" in str(err):
            hint = "if this folder holds the synthetic stand-in from write_synthetic_isbi, load it with verify=False."
        else:
            hint = (
                "with a local copy of the mirror's files packed as a tarball "
                f"(membrane/image/{{i}}.png, membrane/label/{{i}}.png), pass "
                f"archive='/path/to/isbi2012-membrane.tar.gz' or call extract_isbi_archive."
            )
        raise DataError(f"{err}\n(isbi2012: {hint})") from err


def load_isbi2012(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    verify: bool = True,
    *,
    archive: str | os.PathLike[str] | None = None,
    synthetic: bool = False,
    n_slices: int = ISBI_N_SLICES,
) -> tuple[Tensor, Tensor]:
    """Images and membrane targets of one split of ISBI 2012.

    Args:
        split: ``"train"`` (slices 0..23), ``"val"`` (24..29) or ``"all"``; see
            :func:`isbi_split_indices`.
        root: data folder holding ``isbi2012/{image,label}/{i}.png``; default
            :func:`course.data.download.data_dir` (``$COURSE_DATA_DIR`` or ``~/.cache/course``).
        download: download missing files (else a missing file is a :class:`DataError`);
            only with ``verify``, so that every downloaded file is checked.
        verify: check each file against the SHA-256 of the real data set, and that slices are
            512x512. Pass False for files written by :func:`write_synthetic_isbi` (any size).
        archive: a local tarball of the mirror's folder (``membrane/{image,label}/{i}.png``):
            unpacked into ``root`` first by :func:`extract_isbi_archive` (checked per member).
        synthetic: read the synthetic stand-in instead: ``root`` defaults to
            :func:`synthetic_isbi_root`, nothing is downloaded or verified.
        n_slices: slices in the stack (30 for the real data; a synthetic stack may differ).

    Returns:
        ``(images, targets)``: ``float32 Tensor[N, 1, H, W]`` with images in ``[0, 1]``
        (pixel / 255) and targets in ``{0, 1}``, 1 = membrane (label pixel < 128),
        in slice order.

    Labels may hold up to 1% of grey pixels (anti-aliasing), thresholded at 128; a label
    that is more than 60% membrane is taken for an inverted one and refused. With
    ``verify=False`` nothing is downloaded.

    Raises:
        DataError: a file is missing offline, has the wrong checksum, is not an 8-bit
            grayscale PNG, has a different size than the others (or than 512x512 when
            verifying), a label is not binary or looks inverted, or ``root`` is a file.
            Never returns a partial set.
    """
    indices = isbi_split_indices(split, n_slices)
    if synthetic:
        root = synthetic_isbi_root(n=n_slices) if root is None else root
        download, verify = False, False
    if verify and n_slices != ISBI_N_SLICES:
        raise ValueError(f"isbi2012: the real stack has {ISBI_N_SLICES} slices; n_slices={n_slices} needs verify=False")
    root_path = Path(root).expanduser() if root is not None else data_dir()
    if root_path.exists() and not root_path.is_dir():
        raise DataError(
            f"isbi2012: root {str(root_path)!r} is a file, expected the data folder holding "
            f"{_SUBDIR}/image and {_SUBDIR}/label"
            + (f"; for a tarball pass archive={str(root_path)!r} (and a folder as root)" if ".tar" in root_path.name else "")
        )
    if archive is not None:
        extract_isbi_archive(archive, root_path, verify=verify)
    if not (root_path / _SUBDIR / "image" / "0.png").is_file():
        hint = _layout_hint(root_path)
        if hint:
            raise DataError(f"isbi2012: {str(root_path / _SUBDIR / 'image' / '0.png')!r} not found.{hint}")
    expected: tuple[int, int] | None = (ISBI_SIZE, ISBI_SIZE) if verify else None
    expected_from = "every slice of the real data set"
    images, labels = [], []
    for i in indices:
        pair = []
        for kind in _KINDS:
            path = _fetch_slice(kind, i, root_path, download, verify, n_slices)
            arr = _read_png(path, kind)
            if expected is None:  # unverified: every file must match the first one read
                expected, expected_from = arr.shape, repr(str(path))
            if arr.shape != expected:
                raise DataError(
                    f"{str(path)!r} is {arr.shape[0]}x{arr.shape[1]} (HxW) but {expected_from} is "
                    f"{expected[0]}x{expected[1]}; every image and label of a stack must have the same size"
                )
            if kind == "label":
                grey = np.count_nonzero((arr != 0) & (arr != 255)) / arr.size
                if grey > _NON_BINARY_LIMIT:
                    raise DataError(
                        f"{str(path)!r} is not a binary label: {grey:.0%} of its pixels are "
                        f"neither 0 (membrane) nor 255 (cell). Are image/ and label/ swapped?"
                    )
                membrane = np.count_nonzero(arr < 128) / arr.size
                if membrane > _MEMBRANE_LIMIT:
                    raise DataError(
                        f"{str(path)!r} marks {membrane:.0%} of its pixels as membrane (dark); membrane "
                        f"must be black (0) and cells white (255), and membrane is the minority. Is "
                        f"the label inverted?"
                    )
            pair.append(arr)
        images.append(pair[0])
        labels.append(pair[1])
    x = torch.from_numpy(np.stack(images)).unsqueeze(1).float().div_(255.0)  # (N, 1, H, W)
    y = (torch.from_numpy(np.stack(labels)) < 128).unsqueeze(1).float()  # (N, 1, H, W), 1 = membrane
    return x, y


_MEMBER_RE = re.compile(r"(?:^|/)(image|label)/(\d+)\.png$")


def extract_isbi_archive(
    tar_path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
) -> Path:
    """Unpack a tarball of the mirror's folder into ``<root>/isbi2012/{image,label}/{i}.png``.

    Members are matched by their last two path parts (``.../image/{i}.png``,
    ``.../label/{i}.png``; e.g. ``membrane/image/0.png``); other members are ignored. Every
    member is read and checked before anything is written, so a truncated or corrupt archive
    leaves ``root`` untouched. Nothing outside ``<root>/isbi2012`` is ever written (the
    archive's own paths are not used).

    Args:
        tar_path: ``.tar``, ``.tar.gz``, ... (any compression :mod:`tarfile` reads).
        root: data folder; default :func:`course.data.download.data_dir`.
        verify: check every member against :data:`ISBI_SHA256` and require all 60 files.
            With False any complete stack ``0..n-1`` (both kinds) is accepted.

    Returns:
        ``root`` (pass it to :func:`load_isbi2012`).

    Raises:
        DataError: the archive is missing, truncated, not a tar file, lacks a slice, holds a
            slice twice, or a member has the wrong checksum (the member is named).
    """
    tar_path = Path(tar_path).expanduser()
    root_path = Path(root).expanduser() if root is not None else data_dir()
    if tar_path.is_dir():
        raise DataError(f"isbi2012 archive {str(tar_path)!r} is a folder; expected a tarball (.tar, .tar.gz)")
    if not tar_path.is_file():
        raise DataError(f"isbi2012 archive {str(tar_path)!r} not found")
    payload: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            for member in tf:  # iterating reads the whole archive: a truncation surfaces here
                m = _MEMBER_RE.search(member.name)
                if m is None or not member.isfile():
                    continue
                key = f"{m.group(1)}/{int(m.group(2))}.png"
                if key in payload:
                    raise DataError(f"isbi2012 archive {str(tar_path)!r} holds {key} twice (second: {member.name!r})")
                if member.size > _MAX_MEMBER_BYTES:
                    raise DataError(
                        f"isbi2012 archive {str(tar_path)!r}: member {member.name!r} is {member.size} bytes, not a slice"
                    )
                f = tf.extractfile(member)
                assert f is not None  # a regular file
                data = f.read()
                if len(data) != member.size:
                    raise EOFError(f"member {member.name!r} ends after {len(data)} of {member.size} bytes")
                if verify:
                    expected = ISBI_SHA256.get(key)
                    if expected is None:
                        raise DataError(
                            f"isbi2012 archive {str(tar_path)!r}: member {member.name!r} is not one of the "
                            f"{ISBI_N_SLICES} real slices (image/label 0..{ISBI_N_SLICES - 1}); with a "
                            f"synthetic stack pass verify=False"
                        )
                    actual = _sha256_bytes(data)
                    if actual != expected:
                        raise DataError(
                            f"isbi2012 archive {str(tar_path)!r}: member {member.name!r} has the wrong "
                            f"checksum: expected sha256 {expected}, got {actual}. The archive is corrupt "
                            f"or holds other files (a synthetic stack needs verify=False)."
                        )
                payload[key] = data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"isbi2012 archive {str(tar_path)!r} is truncated or corrupt ({type(err).__name__}: {err}); "
            f"nothing was extracted. Fetch it again."
        ) from err
    n = ISBI_N_SLICES if verify else sum(1 for k in payload if k.startswith("image/"))
    missing = [f"{kind}/{i}.png" for kind in _KINDS for i in range(n) if f"{kind}/{i}.png" not in payload]
    extra = sorted(set(payload) - {f"{kind}/{i}.png" for kind in _KINDS for i in range(n)})
    if missing or extra or n == 0:
        raise DataError(
            f"isbi2012 archive {str(tar_path)!r} is incomplete: expected image/{{i}}.png and "
            f"label/{{i}}.png for i = 0..{max(n, 1) - 1}; missing {missing[:6] or 'nothing'}"
            + (f", unpaired {extra[:6]}" if extra else "")
            + ("" if n else " (no member matched .../image/<i>.png)")
            + "; nothing was extracted."
        )
    written: list[Path] = []
    try:
        for key, data in sorted(payload.items()):
            dest = root_path / _SUBDIR / key
            if dest.is_file() and dest.read_bytes() == data:
                continue  # already there: leave it (and its timestamps) alone
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(dest, data)
            written.append(dest)
    except OSError as err:
        for path in written:  # never leave half a stack behind
            path.unlink(missing_ok=True)
        raise DataError(
            f"isbi2012: could not write the slices under {str(root_path / _SUBDIR)!r} "
            f"({type(err).__name__}: {err}); nothing was kept. Use a writable root."
        ) from err
    return root_path


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(dest: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# Training tiles
# ---------------------------------------------------------------------------------------


def _gaussian_kernel1d(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian, radius ``ceil(3 sigma)``: ``Tensor[2r + 1]``."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _cos_sin_90(k: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of ``k * 90`` degrees, exactly, for an integer tensor ``k``."""
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k]
    return cos, sin


class TileSampler:
    """Random augmented training tiles, drawn and transformed on the device.

    Each tile: a random slice, a random ``tile x tile`` crop, a random flip / 90-degree
    rotation (the 8 symmetries of the square when both are on) and an elastic deformation:
    a displacement field of white noise Gaussian-blurred with ``elastic_sigma`` pixels and
    scaled so each component has standard deviation ``elastic_alpha`` pixels. Everything is
    one sampling grid per tile, so image and mask get exactly the same transform; the
    deformation pulls pixels from around the crop (reflected at the slice edge), never padding.
    Without elastic deformation tiles are exact pixel copies (integer indexing); with it the
    image is sampled bilinearly and the mask bilinearly then thresholded at 0.5.

    One epoch (``iter``) yields ``len(sampler)`` batches ``(x, y)``, both
    ``float32 Tensor[B, 1, tile, tile]`` on ``device``. Epoch ``e`` is determined by
    ``(seed, e)``: two samplers with the same arguments give the same batches (on the same
    device), and successive epochs differ.

    Args:
        images, targets: ``Tensor[N, 1, H, W]`` (as :func:`load_isbi2012` returns), copied to
            ``device`` once.
        tile: side of the square tiles, at most ``min(H, W)``.
        batch_size: tiles per batch.
        steps: batches per epoch; default: enough tiles to cover the slices' area once.
        device: where tiles are made; default ``images.device``.
        seed: random seed.
        flips, rot90: random horizontal/vertical flips, random rotations by k * 90 degrees.
        elastic: random elastic deformation.
        elastic_alpha: displacement standard deviation in pixels.
        elastic_sigma: smoothness of the displacement field (Gaussian std in pixels).
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        tile: int = 256,
        batch_size: int = 4,
        *,
        steps: int | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        flips: bool = True,
        rot90: bool = True,
        elastic: bool = True,
        elastic_alpha: float = 5.0,
        elastic_sigma: float = 16.0,
    ) -> None:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"TileSampler: images must be [N, 1, H, W], got {tuple(images.shape)}")
        if targets.shape != images.shape:
            raise ValueError(f"TileSampler: targets {tuple(targets.shape)} must match images {tuple(images.shape)}")
        N, _, H, W = images.shape
        for name, v in (("tile", tile), ("batch_size", batch_size), ("steps", steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise TypeError(f"TileSampler: {name} must be an int, got {v!r}")
        if steps is not None and steps < 1:
            raise ValueError(f"TileSampler: steps must be >= 1 batch per epoch, got {steps}")
        if not 1 <= tile <= min(H, W):
            raise ValueError(f"TileSampler: tile must be in 1..{min(H, W)} for {H}x{W} slices, got {tile}")
        if batch_size < 1:
            raise ValueError(f"TileSampler: batch_size must be >= 1, got {batch_size}")
        if elastic and (elastic_sigma <= 0 or elastic_alpha < 0):
            raise ValueError(
                f"TileSampler: need elastic_sigma > 0 and elastic_alpha >= 0, got {elastic_sigma}, {elastic_alpha}"
            )
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device, torch.float32)
        self.targets = targets.to(self.device, torch.float32)
        self.tile, self.batch_size, self.seed = tile, batch_size, seed
        self.flips, self.rot90, self.elastic = flips, rot90, elastic
        self.elastic_alpha, self.elastic_sigma = float(elastic_alpha), float(elastic_sigma)
        self.steps = steps if steps is not None else max(1, math.ceil(N * H * W / (tile * tile * batch_size)))
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter`` produce epoch ``epoch`` (e.g. when resuming)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # the epoch is taken when iteration starts (not at the first batch)
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + self.epoch) % (1 << 63))
        self.epoch += 1
        return (self._batch(gen) for _ in range(self.steps))

    def _batch(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        B, t, dev = self.batch_size, self.tile, self.device
        N, _, H, W = self.images.shape

        def randint(high: int) -> Tensor:
            return torch.randint(high, (B,), generator=gen, device=dev)

        n_idx, oy, ox = randint(N), randint(H - t + 1), randint(W - t + 1)
        zeros = torch.zeros(B, dtype=torch.long, device=dev)
        k = randint(4) if self.rot90 else zeros
        fh, fv = (randint(2), randint(2)) if self.flips else (zeros, zeros)
        c = (t - 1) / 2
        ar = torch.arange(t, device=dev, dtype=torch.float32) - c
        yy, xx = torch.meshgrid(ar, ar, indexing="ij")  # (t, t), centred tile coordinates
        xx = torch.where(fh.bool()[:, None, None], -xx, xx)  # (B, t, t)
        yy = torch.where(fv.bool()[:, None, None], -yy, yy)
        cos, sin = (v[:, None, None] for v in _cos_sin_90(k))
        rx, ry = cos * xx - sin * yy, sin * xx + cos * yy  # rotated about the tile centre
        src_x = ox[:, None, None] + c + rx  # (B, t, t) source pixel coordinates in the slice
        src_y = oy[:, None, None] + c + ry
        if not self.elastic:  # exact integer coordinates: plain indexing
            n = n_idx[:, None, None]
            iy, ix = src_y.round().long(), src_x.round().long()
            x = self.images[n, 0, iy, ix].unsqueeze(1)  # (B, 1, t, t)
            y = self.targets[n, 0, iy, ix].unsqueeze(1)
            return x, y
        d = self._displacement(B, gen)  # (B, 2, t, t) in pixels
        src_x = src_x + d[:, 0]
        src_y = src_y + d[:, 1]
        # align_corners=True: -1 and +1 are the centres of the first and last pixel
        grid = torch.stack((src_x / max(W - 1, 1) * 2 - 1, src_y / max(H - 1, 1) * 2 - 1), dim=-1)  # (B, t, t, 2)
        both = torch.cat((self.images[n_idx], self.targets[n_idx]), dim=1)  # (B, 2, H, W)
        out = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
        x = out[:, :1]
        y = (out[:, 1:] >= 0.5).float()
        return x, y

    def _displacement(self, B: int, gen: torch.Generator) -> Tensor:
        """Smooth random displacement ``Tensor[B, 2, t, t]`` (x, y), std ``elastic_alpha`` px."""
        t = self.tile
        k = _gaussian_kernel1d(self.elastic_sigma, self.device, torch.float32)
        r = (k.numel() - 1) // 2
        noise = torch.randn(B * 2, 1, t + 2 * r, t + 2 * r, generator=gen, device=self.device)
        f = F.conv2d(noise, k.view(1, 1, 1, -1))  # valid convolutions: (B*2, 1, t+2r, t)
        f = F.conv2d(f, k.view(1, 1, -1, 1))  # (B*2, 1, t, t)
        std = (k * k).sum()  # std of blurred unit white noise: sqrt(sum of k2d^2) = sum k^2
        return (f * (self.elastic_alpha / std)).view(B, 2, t, t)


# ---------------------------------------------------------------------------------------
# Full-slice inference
# ---------------------------------------------------------------------------------------


def _dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    """Flip the last axis (if ``flip``), then rotate by ``k * 90`` degrees."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def _dihedral_inverse(x: Tensor, k: int, flip: bool) -> Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    total = (-size) % multiple
    return total // 2, total - total // 2


@torch.no_grad()
def predict_full(
    model: nn.Module,
    images: Tensor,
    *,
    tta: bool = False,
    batch_size: int = 2,
    device: str | torch.device | None = None,
    multiple: int = 16,
) -> Tensor:
    """Membrane probabilities for whole slices: ``Tensor[N, 1, H, W]`` -> ``Tensor[N, 1, H, W]``.

    The model must map ``[B, 1, H', W'] -> [B, C, H', W']`` logits with ``C = 1``
    (sigmoid) or ``C = 2`` (softmax; channel 1 = membrane) and keep the spatial size
    ("same" convolutions). A U-Net with ``depth`` poolings needs ``H'`` and ``W'`` divisible
    by ``2**depth``: ``multiple`` (16 for 4 poolings; 512 already is). Other sizes are
    reflection-padded up to a multiple (split evenly on both sides) and cropped back.

    Args:
        model: runs in eval mode under ``no_grad``; its training flag is restored after.
        images: ``float Tensor[N, 1, H, W]`` in the model's input scale.
        tta: average the probabilities over the 8 dihedral transforms (4 rotations x
            flip), each mapped back before averaging (8x slower).
        batch_size: slices per forward pass.
        device: where the model runs; default the device of its first parameter (or CPU).
        multiple: pad H and W to a multiple of this.

    Returns:
        probabilities in ``[0, 1]``, ``float32``, on ``images.device``.
    """
    if images.ndim != 4:
        raise ValueError(f"predict_full: images must be [N, C, H, W], got {tuple(images.shape)}")
    param = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    H, W = images.shape[-2:]
    (top, bottom), (left, right) = _pad_amounts(H, multiple), _pad_amounts(W, multiple)
    transforms = [(k, flip) for flip in (False, True) for k in range(4)] if tta else [(0, False)]
    was_training = model.training
    model.eval()
    outs = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(dev, dtype)
            if top or bottom or left or right:
                mode = "reflect" if max(top, bottom) < H and max(left, right) < W else "replicate"
                x = F.pad(x, (left, right, top, bottom), mode=mode)
            acc = torch.zeros(x.shape[0], 1, *x.shape[-2:], device=dev, dtype=torch.float32)
            for k, flip in transforms:
                xt = _dihedral(x, k, flip)
                acc += _dihedral_inverse(_probabilities(model(xt), xt), k, flip)
            p = (acc / len(transforms))[..., top : top + H, left : left + W]
            outs.append(p.to(images.device))
    finally:
        model.train(was_training)
    return torch.cat(outs)


def _probabilities(logits: Tensor, x: Tensor) -> Tensor:
    if logits.ndim != 4 or logits.shape[0] != x.shape[0] or logits.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"predict_full: the model mapped an input of shape {tuple(x.shape)} to {tuple(logits.shape)}; "
            f"expected [B, 1 or 2, H, W] with the input's H and W (use padded 'same' convolutions)"
        )
    if logits.shape[1] == 1:
        return torch.sigmoid(logits.float())
    if logits.shape[1] == 2:
        return torch.softmax(logits.float(), dim=1)[:, 1:]
    raise ValueError(f"predict_full: expected 1 or 2 output channels (logits), got {logits.shape[1]}")


# ---------------------------------------------------------------------------------------
# Synthetic stand-in
# ---------------------------------------------------------------------------------------


def _blur(img: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``Tensor[H, W]`` (reflect padding, replicate when too small)."""
    k = _gaussian_kernel1d(sigma, img.device, img.dtype)
    r = (k.numel() - 1) // 2
    x = img[None, None]
    mode = "reflect" if r < min(img.shape) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return x[0, 0]


def _smooth_noise(size: int, cells: int, gen: torch.Generator) -> Tensor:
    """Low-frequency noise ``Tensor[size, size]`` about 0 (std ~ 1): ``cells`` bumps per side."""
    coarse = torch.randn(1, 1, cells + 1, cells + 1, generator=gen)
    up = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
    return up / coarse.std().clamp_min(1e-6)


def _synthetic_slice(size: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic ``(image, label)`` pair, ``uint8[size, size]`` each (label 0 = membrane)."""

    def uniform(lo: float, hi: float, n: int = 1) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    s = size / 512  # scale relative to the real slices
    n_cells = max(8, int(110 * s * s * float(uniform(0.7, 1.3))))
    pts = uniform(-0.05 * size, 1.05 * size, n_cells * 2).view(n_cells, 2)
    weights = torch.randn(n_cells, generator=gen) * 3 * s  # additively weighted -> uneven cells
    ar = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(ar, ar, indexing="ij")
    wobble = 10 * s  # smooth warp of the plane -> wavy walls
    wy = yy + wobble * _smooth_noise(size, 8, gen)
    wx = xx + wobble * _smooth_noise(size, 8, gen)
    grid = torch.stack((wy.reshape(-1), wx.reshape(-1)), dim=-1)  # (P, 2)
    dist = torch.cdist(grid, pts) - weights  # (P, n_cells)
    two = dist.topk(2, dim=1, largest=False)
    gap = (two.values[:, 1] - two.values[:, 0]).view(size, size)  # 0 on a wall, grows away from it
    gy, gx = torch.gradient(gap)
    to_wall = gap / torch.sqrt(gy * gy + gx * gx).clamp_min(0.25)  # ~ distance to the wall in pixels
    owner = two.indices[:, 0].view(size, size)
    half_width = max(1.0, 2.6 * s) * (1 + 0.35 * _smooth_noise(size, 5, gen)).clamp_min(0.4)
    membrane = to_wall < half_width  # (size, size) bool: the label

    cell_tone = uniform(-0.06, 0.06, n_cells)[owner]
    img = 0.70 + cell_tone + 0.07 * _blur(torch.randn(size, size, generator=gen), max(0.6, 1.5 * s))
    # organelles, not membrane: dark filled ellipses (mitochondria) and small dots (vesicles)
    n_blobs = max(2, n_cells // 3)
    cy, cx = uniform(0, size, n_blobs), uniform(0, size, n_blobs)
    ra, rb = (uniform(5 * s, 14 * s, n_blobs).clamp_min(0.8) for _ in range(2))
    ang = uniform(0, math.pi, n_blobs)
    depth = 0.22 * uniform(0.7, 1.2, n_blobs)
    for j in range(n_blobs):
        R = int(math.ceil(max(float(ra[j]), float(rb[j])))) + 2
        y0, y1 = max(0, int(cy[j]) - R), min(size, int(cy[j]) + R + 1)
        x0, x1 = max(0, int(cx[j]) - R), min(size, int(cx[j]) + R + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy[j], xx[y0:y1, x0:x1] - cx[j]
        c, sn = math.cos(float(ang[j])), math.sin(float(ang[j]))
        q = ((dx * c + dy * sn) / ra[j]) ** 2 + ((-dx * sn + dy * c) / rb[j]) ** 2
        img[y0:y1, x0:x1] -= depth[j] * torch.sigmoid((1 - q) * 6)
    sigma_dot = max(0.6, 1.6 * s)
    dots = torch.zeros(size * size)
    dots[torch.randint(size * size, (max(4, 3 * n_cells),), generator=gen)] = 1.0
    peak = float(_gaussian_kernel1d(sigma_dot, dots.device, dots.dtype).max()) ** 2
    img = img - 0.25 * (_blur(dots.view(size, size), sigma_dot) / peak).clamp(max=1.0)
    wall = membrane.float() * (0.38 + 0.08 * _smooth_noise(size, 6, gen)).clamp(0.2, 0.6)
    img = img * (1 - membrane.float()) + (img - wall) * membrane.float()
    img = _blur(img, max(0.5, 1.0 * s))
    img = img * (1 + 0.12 * _smooth_noise(size, 2, gen)) + 0.05 * float(uniform(-1, 1))  # uneven brightness
    img = img + 0.05 * torch.randn(size, size, generator=gen)
    image = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    label = np.where(membrane.numpy(), 0, 255).astype(np.uint8)
    return image, label


def _write_png(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(arr).save(tmp, format="PNG")  # uint8 [H, W] -> mode "L"
    os.replace(tmp, path)


def write_synthetic_isbi(root: str | os.PathLike[str], n: int = 30, size: int = 512, seed: int = 0) -> Path:
    """Write a synthetic stack into ``<root>/isbi2012/{image,label}/{i}.png``; return ``root``.

    Same layout and format as the real files: 8-bit grayscale PNGs, labels 0 (membrane) /
    255 (cell). The "tissue" is a weighted Voronoi tessellation whose walls (a few pixels
    wide at 512, scaled with ``size``) are the membrane, plus dark organelles that are not
    membrane, texture, blur, noise and uneven brightness. Deterministic given ``seed``; slice
    ``i`` depends only on ``(seed, size, i)``. Load with ``load_isbi2012(..., root=root,
    verify=False, n_slices=n)``.
    """
    if n < 2 or size < 8:
        raise ValueError(f"write_synthetic_isbi: need n >= 2 and size >= 8, got n={n}, size={size}")
    root = Path(root)
    for kind in _KINDS:
        (root / _SUBDIR / kind).mkdir(parents=True, exist_ok=True)
    gen = torch.Generator()
    for i in range(n):
        gen.manual_seed(zlib.crc32(f"isbi-synthetic/{seed}/{size}/{i}".encode()))
        image, label = _synthetic_slice(size, gen)
        _write_png(root / _SUBDIR / "image" / f"{i}.png", image)
        _write_png(root / _SUBDIR / "label" / f"{i}.png", label)
    return root


_SYNTHETIC_VERSION = 1  # bump when the generator changes, to invalidate caches


def synthetic_isbi_root(seed: int = 0, size: int = 512, n: int = ISBI_N_SLICES) -> Path:
    """Root of a cached synthetic stack under the system temp dir (see :func:`write_synthetic_isbi`).

    Written once per ``(seed, size, n)``; later calls return the cached copy. Safe when
    several processes race: each writes into its own temporary folder, which is renamed
    into place; a loser discards its copy.
    """
    files = [f"{_SUBDIR}/{kind}/{i}.png" for kind in _KINDS for i in range(n)]
    return cached_root(f"course-isbi2012-synthetic-v{_SYNTHETIC_VERSION}-n{n}-size{size}-seed{seed}", files,
                       lambda tmp: write_synthetic_isbi(tmp, n=n, size=size, seed=seed))

