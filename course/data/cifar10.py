"""CIFAR-10 through torchvision, and a synthetic stand-in in the original on-disk format.

Real data: :func:`load_cifar10` reads ``<root>/cifar-10-batches-py/`` with
``torchvision.datasets.CIFAR10`` -- its own download of
``https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz`` and its MD5 check of every
batch file -- and returns the whole split as one ``uint8`` tensor ``[N, 3, 32, 32]`` plus
``int64`` labels ``[N]``. ``root`` defaults to :func:`course.data.download.data_dir`, so an
offline machine points ``COURSE_DATA_DIR`` at a folder holding a pre-fetched
``cifar-10-batches-py/``.

Synthetic data: :func:`write_synthetic_cifar10` writes the same seven files
(``data_batch_1..5``, ``test_batch``, ``batches.meta``) as Python-2-style pickles, exactly
the layout of the official archive (dicts with ``data`` uint8 ``[n, 3072]`` -- the red,
green and blue 32x32 planes of one image per row -- ``labels``, ``batch_label``,
``filenames``), plus a small manifest of their MD5 sums. ``load_cifar10(synthetic=True)``
hands torchvision's own class those MD5 sums instead of the official ones, so the parsing
*and* the integrity check are torchvision's. Each class is a shape (disk, square,
triangle, ...) in a class hue, at a random position and size, on a noisy background: a
small CNN learns it in a few hundred steps, and shape is needed for high accuracy because
neighbouring hues overlap.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .download import ENV_DATA_DIR, DataError, cached_root, data_dir

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "load_cifar10",
    "write_synthetic_cifar10",
    "write_cifar10_standin",
    "synthetic_cifar10_root",
    "channel_stats",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Per-channel mean and standard deviation of the 50,000 training images, pixels in [0, 1].
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # what torchvision downloads
_BASE = "cifar-10-batches-py"
_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES: tuple[str, ...] = ("test_batch",)
_META_FILE = "batches.meta"
_MANIFEST = "synthetic-md5.json"  # written next to the synthetic batches
_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE  # 3072 bytes per image row


# ---------------------------------------------------------------------------------------
# Loading (torchvision does the parsing and the checksums)
# ---------------------------------------------------------------------------------------


def _torchvision_class(md5s: dict[str, str] | None) -> type:
    """``torchvision.datasets.CIFAR10``, or a subclass expecting the synthetic MD5 sums.

    Only the class attributes listing ``(file, md5)`` change; ``__init__``, the integrity
    check and the pickle parsing are torchvision's.
    """
    from torchvision.datasets import CIFAR10

    if md5s is None:
        return CIFAR10
    return type(
        "SyntheticCIFAR10",
        (CIFAR10,),
        {
            "train_list": [[name, md5s[name]] for name in _TRAIN_FILES],
            "test_list": [[name, md5s[name]] for name in _TEST_FILES],
            "meta": {**CIFAR10.meta, "md5": md5s[_META_FILE]},
        },
    )


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _official_md5s() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    md5s = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    md5s[_META_FILE] = CIFAR10.meta["md5"]
    return md5s


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / _MANIFEST
    try:
        md5s = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{str(path)!r} not found: {str(folder)!r} was not written by "
            f"write_synthetic_cifar10 (or the manifest was deleted). Rewrite it, or load "
            f"real CIFAR-10 with synthetic=False."
        ) from None
    except (OSError, ValueError) as err:
        raise DataError(f"{str(path)!r} is not a readable JSON manifest ({err}); rewrite the synthetic set.") from err
    if not isinstance(md5s, dict):
        raise DataError(
            f"{str(path)!r} must hold a JSON object mapping file names to MD5 sums, got a "
            f"{type(md5s).__name__}; rewrite the synthetic set."
        )
    missing = [n for n in (*_TRAIN_FILES, *_TEST_FILES, _META_FILE) if not isinstance(md5s.get(n), str)]
    if missing:
        raise DataError(f"{str(path)!r} lacks the MD5 of {missing}; rewrite the synthetic set.")
    return md5s


def _check_batch_object(entry: Any, path: Path) -> int:
    """Validate one unpickled batch dict; return its number of images."""
    if not isinstance(entry, dict):
        raise DataError(f"{str(path)!r}: expected a pickled dict, got {type(entry).__name__}.")
    keys = {k.decode("latin1") if isinstance(k, bytes) else k for k in entry}
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in keys or "labels" not in keys:
        raise DataError(
            f"{str(path)!r}: expected keys 'data' and 'labels' (CIFAR-10 batch layout), "
            f"found {sorted(keys)}."
        )
    data, labels = entry["data"], entry["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        desc = f"{type(data).__name__}" + (
            f" {data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else ""
        )
        raise DataError(f"{str(path)!r}: 'data' must be a uint8 array [n, {_PIXELS}], got {desc}.")
    if data.shape[0] == 0:
        raise DataError(f"{str(path)!r}: 'data' holds no images (0 rows).")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        n_labels = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise DataError(
            f"{str(path)!r}: 'labels' must be a list of {data.shape[0]} ints (one per row of "
            f"'data'), got {n_labels}."
        )
    bad = [v for v in labels if not isinstance(v, int) or not 0 <= v < 10]
    if bad:
        raise DataError(f"{str(path)!r}: labels must be ints in [0, 10), found {bad[:5]}.")
    return int(data.shape[0])


def _check_meta_object(entry: Any, path: Path) -> None:
    names = entry.get("label_names", entry.get(b"label_names")) if isinstance(entry, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{str(path)!r}: expected a dict with 'label_names', a list of 10 class names.")


def _diagnose(folder: Path, files: tuple[str, ...], md5s: dict[str, str]) -> str | None:
    """Name the first file under ``folder`` that is missing, corrupt or badly laid out."""
    for name in (*files, _META_FILE):
        path = folder / name
        if path.is_dir():
            return f"{str(path)!r} is a folder; expected the CIFAR-10 batch file of that name."
        if not path.is_file():
            split = "train" if name in _TRAIN_FILES else "test" if name in _TEST_FILES else "meta"
            return f"{str(path)!r} is missing (the {split} part of CIFAR-10)."
        actual = _md5(path)
        if actual != md5s[name]:
            return (
                f"{str(path)!r} is corrupt or truncated: expected md5 {md5s[name]}, got {actual} "
                f"({path.stat().st_size} bytes)."
            )
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception as err:  # noqa: BLE001 - any unpickling failure means "corrupt"
            return f"{str(path)!r} is not a readable pickle ({type(err).__name__}: {err})."
        try:
            if name == _META_FILE:
                _check_meta_object(entry, path)
            else:
                _check_batch_object(entry, path)
        except DataError as err:
            return str(err)
    return None


def _prefetch_help(root: Path) -> str:
    return (
        f"torchvision downloads {CIFAR10_URL} and extracts it to {str(root / _BASE)!r}. "
        f"On an offline machine, fetch that archive elsewhere, extract it (tar xzf) into a "
        f"folder so that it holds {_BASE}/data_batch_1..5, test_batch and batches.meta, and "
        f"set {ENV_DATA_DIR} to that folder (or pass root=)."
    )


def load_cifar10(
    train: bool = True,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    synthetic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 split as tensors, read by ``torchvision.datasets.CIFAR10``.

    Args:
        train: the 50,000 training images (``data_batch_1..5``) or the 10,000 test images
            (``test_batch``).
        root: folder holding ``cifar-10-batches-py/``; default
            :func:`course.data.download.data_dir` (``$COURSE_DATA_DIR`` or ``~/.cache/course``).
        download: let torchvision download and extract the archive when files are missing.
        synthetic: read a stand-in written by :func:`write_synthetic_cifar10`: ``root``
            defaults to :func:`synthetic_cifar10_root`, nothing is downloaded, and the
            files are checked against the MD5 sums in its manifest instead of the official ones.

    Returns:
        ``(images, labels)``: ``images`` uint8 ``Tensor[N, 3, 32, 32]`` (RGB, CHW, on the
        CPU, contiguous) and ``labels`` int64 ``Tensor[N]`` in ``[0, 10)``, in file order.

    Raises:
        DataError: offline (or ``download=False``) with files missing; a batch file that is
            missing, truncated, corrupt or not in the CIFAR-10 layout (the message names it).
    """
    if synthetic:
        root_path = Path(root).expanduser() if root is not None else synthetic_cifar10_root()
        download = False
    else:
        root_path = Path(root).expanduser() if root is not None else data_dir()
    folder = root_path / _BASE
    # the split's files first; torchvision's integrity check needs the others too
    files = (*_TRAIN_FILES, *_TEST_FILES) if train else (*_TEST_FILES, *_TRAIN_FILES)
    md5s = _read_manifest(folder) if synthetic else _official_md5s()
    cls = _torchvision_class(md5s if synthetic else None)
    if not synthetic and (folder / _MANIFEST).is_file():
        raise DataError(
            f"{str(folder)!r} holds the synthetic stand-in written by write_synthetic_cifar10 "
            f"(it has {_MANIFEST}): load it with synthetic=True, or point root / {ENV_DATA_DIR} "
            f"at real CIFAR-10."
        )

    if download:
        existed = folder.is_dir()
        try:
            probe = cls.__new__(cls)  # only what CIFAR10.download() reads: root
            probe.root = os.path.expanduser(str(root_path))
            probe.download()  # torchvision returns at once when every file passes its MD5 check
        except (urllib.error.URLError, OSError, RuntimeError, EOFError, ValueError, tarfile.TarError) as err:
            if existed:
                found = _diagnose(folder, files, md5s) or "its files look complete"
            else:
                found = "that folder did not exist"
            raise DataError(
                f"CIFAR-10: could not download {CIFAR10_URL} ({type(err).__name__}: {err}).\n"
                f"Looked for the extracted batches in {str(folder)!r}: {found}\n"
                f"{_prefetch_help(root_path)}"
            ) from err

    split = "train" if train else "test"
    extra = "" if synthetic else "\n" + _prefetch_help(root_path)
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 {split}: {str(folder)!r} does not exist (download=False).{extra}")
    try:
        ds = cls(str(root_path), train=train, download=False)
    except Exception as err:  # noqa: BLE001 - torchvision raises RuntimeError, KeyError, ValueError, ...
        problem = _diagnose(folder, files, md5s) or (
            f"torchvision could not read {str(folder)!r} ({type(err).__name__}: {err})."
        )
        raise DataError(f"CIFAR-10 {split}: {problem}{extra}") from err

    data, targets, classes = ds.data, ds.targets, ds.classes
    problem = None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (_SIDE, _SIDE, 3)):
        problem = f"expected uint8 images [N, 32, 32, 3], got {getattr(data, 'dtype', None)} {getattr(data, 'shape', None)}"
    elif len(targets) != len(data):
        problem = f"{len(data)} images but {len(targets)} labels"
    elif len(classes) != 10:
        problem = f"{len(classes)} class names in {_META_FILE}, expected 10"
    elif any(not isinstance(t, int) or not 0 <= t < 10 for t in targets):
        problem = "labels outside [0, 10)"
    # Name the file if one is wrong on its own. A synthetic set is always checked file by file:
    # its MD5s come from its own manifest, so they prove nothing about its layout (cheap at
    # the synthetic sizes).
    if problem is not None or synthetic:
        problem = _diagnose(folder, files, md5s) or problem
    if problem is not None:
        raise DataError(f"CIFAR-10 {split} in {str(folder)!r}: {problem}")

    # torchvision stores HWC as a transposed view of the CHW rows it read: undo the view (no copy)
    images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(targets, dtype=torch.int64)
    return images, labels


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``images[N, C, H, W]``, pixels in [0, 1].

    Use it for the synthetic set, whose statistics differ from :data:`CIFAR10_MEAN` /
    :data:`CIFAR10_STD`.
    """
    x = images.to(torch.float64).div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


# ---------------------------------------------------------------------------------------
# Synthetic stand-in
# ---------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # type: ignore[misc, name-defined]
    """Pickler that writes ``bytes`` as Python 2 ``str`` (opcodes ``SHORT_BINSTRING``/``BINSTRING``).

    The official CIFAR-10 batches were pickled by Python 2: their keys and strings load as
    ``str`` with ``encoding="latin1"`` (what torchvision passes) and as ``bytes`` with
    ``encoding="bytes"`` (what the CIFAR-10 web page suggests). Writing ``bytes`` this way
    reproduces both behaviours; the numpy array's raw buffer goes through the same path.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _write_pickle(path: Path, obj: dict[bytes, Any]) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


# one shape per class (the CIFAR class names are only labels here)
_SHAPES: tuple[str, ...] = (
    "disk",
    "square",
    "triangle",
    "ring",
    "plus",
    "hstripes",
    "vstripes",
    "diamond",
    "cross",
    "checker",
)


def _shape_masks(cls: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean masks ``[n, 32, 32]`` of shape ``cls``; ``dy, dx`` offsets from the centre, ``r`` radius ``[n, 1, 1]``."""
    ady, adx = np.abs(dy), np.abs(dx)
    box = np.maximum(ady, adx) <= r
    dist2 = dy**2 + dx**2
    name = _SHAPES[cls]
    if name == "disk":
        return dist2 <= r**2
    if name == "square":
        return np.maximum(ady, adx) <= 0.8 * r
    if name == "triangle":  # apex up, base at dy = 0.8 r
        return (dy <= 0.8 * r) & (dy >= -r) & (adx <= 0.6 * (dy + r))
    if name == "ring":
        return (dist2 <= r**2) & (dist2 >= (0.55 * r) ** 2)
    if name == "plus":
        return box & ((ady <= 0.3 * r) | (adx <= 0.3 * r))
    if name == "hstripes":
        return box & (np.floor((dy + r) / np.maximum(r / 2.5, 1.0)) % 2 == 0)
    if name == "vstripes":
        return box & (np.floor((dx + r) / np.maximum(r / 2.5, 1.0)) % 2 == 0)
    if name == "diamond":
        return ady + adx <= r
    if name == "cross":
        return box & (np.abs(ady - adx) <= 0.3 * r)
    # checker
    cell = np.maximum(r / 2.0, 1.5)
    return box & ((np.floor((dy + r) / cell) + np.floor((dx + r) / cell)) % 2 == 0)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns ``[..., 3]``."""
    k = np.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], axis=-1)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[n, 3, 32, 32]`` images of the classes in ``labels`` (see the module docstring)."""
    n = len(labels)
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float32)
    # background: a dim or bright low-saturation colour with a linear gradient and noise
    bg_rgb = _hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.35, n), rng.uniform(0.15, 0.9, n))  # [n, 3]
    grad = rng.uniform(-0.25, 0.25, (n, 2)).astype(np.float32)
    shade = 1.0 + (grad[:, 0, None, None] * (yy - 15.5) + grad[:, 1, None, None] * (xx - 15.5)) / 32.0
    img = bg_rgb[:, :, None, None].astype(np.float32) * shade[:, None]  # [n, 3, 32, 32]
    # foreground: class shape in the class hue (jittered so neighbouring hues overlap)
    hue = (labels / 10.0 + rng.normal(0.0, 0.035, n)) % 1.0
    fg_rgb = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0, n), rng.uniform(0.55, 1.0, n)).astype(np.float32)
    r = rng.uniform(6.0, 11.0, n).astype(np.float32)[:, None, None]
    cy = rng.uniform(10.0, 22.0, n).astype(np.float32)[:, None, None]
    cx = rng.uniform(10.0, 22.0, n).astype(np.float32)[:, None, None]
    dy, dx = yy[None] - cy, xx[None] - cx
    mask = np.zeros((n, _SIDE, _SIDE), dtype=bool)
    for c in range(10):  # a loop over classes, vectorised over the images of each
        sel = labels == c
        if sel.any():
            mask[sel] = _shape_masks(c, dy[sel], dx[sel], r[sel])
    img = np.where(mask[:, None], fg_rgb[:, :, None, None], img)
    img = img * 255.0 + rng.normal(0.0, 12.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_cifar10_standin(
    root: str | os.PathLike[str],
    train: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor],
    test: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor],
    name: str = "standin",
) -> Path:
    """Write given images in the official CIFAR-10 layout under ``<root>/cifar-10-batches-py/``,
    with a manifest of their MD5 sums (``load_cifar10(root=root, synthetic=True)`` reads them).

    For stand-ins: the synthetic set, or a re-encoding of CIFAR-10 (e.g. a JPEG copy) where the
    official archive cannot be downloaded. ``train``/``test``: ``(images uint8 [n, 3, 32, 32],
    labels [n] in [0, 10))``; the training images are split evenly over ``data_batch_1..5``.
    """
    if len(train[0]) < len(_TRAIN_FILES) or len(test[0]) < 1:
        raise ValueError(f"write_cifar10_standin: need at least {len(_TRAIN_FILES)} training images (one per "
                         f"batch file) and one test image, got {len(train[0])} and {len(test[0])}")
    folder = Path(root) / _BASE
    folder.mkdir(parents=True, exist_ok=True)
    md5s: dict[str, str] = {}
    for split, (images, labels), names in (("train", train, _TRAIN_FILES), ("test", test, _TEST_FILES)):
        images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
        if images.shape[1:] != (3, _SIDE, _SIDE) or labels.shape != (len(images),):
            raise ValueError(f"write_cifar10_standin: {split} images must be [n, 3, 32, 32] with labels [n], "
                             f"got {list(images.shape)} and {list(labels.shape)}")
        for i, idx in enumerate(np.array_split(np.arange(len(images)), len(names))):
            kind = "training" if split == "train" else "testing"
            entry = {
                b"batch_label": f"{kind} batch {i + 1} of {len(names)}".encode(),
                b"labels": [int(v) for v in labels[idx]],
                b"data": np.ascontiguousarray(images[idx].reshape(len(idx), _PIXELS)),
                b"filenames": [f"{name}_{CIFAR10_CLASSES[labels[j]]}_s_{j:06d}.png".encode() for j in idx],
            }
            path = folder / names[i]
            _write_pickle(path, entry)
            md5s[names[i]] = _md5(path)
    meta = {
        b"num_cases_per_batch": -(-len(train[0]) // len(_TRAIN_FILES)),
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_vis": _PIXELS,
    }
    _write_pickle(folder / _META_FILE, meta)
    md5s[_META_FILE] = _md5(folder / _META_FILE)
    (folder / _MANIFEST).write_text(json.dumps(md5s, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return Path(root)


def write_synthetic_cifar10(
    root: str | os.PathLike[str],
    n_train: int = 5000,
    n_test: int = 1000,
    seed: int = 0,
) -> Path:
    """Write a synthetic CIFAR-10 in the official layout under ``<root>/cifar-10-batches-py/``.

    Files: ``data_batch_1..5`` (``n_train`` images split as evenly as possible),
    ``test_batch`` (``n_test``), ``batches.meta`` (``label_names``, ``num_cases_per_batch``,
    ``num_vis``), each a Python-2-style pickle of a dict with ``data`` (uint8 ``[n, 3072]``:
    the R, G, B 32x32 planes, row-major), ``labels`` (list of ints), ``batch_label`` and
    ``filenames``; plus ``synthetic-md5.json`` with the MD5 of each file. Classes are
    balanced (exactly, when the sizes are multiples of 10) and shuffled.

    Returns:
        ``root``, ready for ``load_cifar10(root=root, synthetic=True)``.
    """
    if n_train < len(_TRAIN_FILES) or n_test < 1:
        raise ValueError(
            f"write_synthetic_cifar10: need n_train >= {len(_TRAIN_FILES)} (one per batch file) "
            f"and n_test >= 1, got n_train={n_train}, n_test={n_test}"
        )
    splits = []
    for split, n in (("train", n_train), ("test", n_test)):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        labels = rng.permutation(np.arange(n) % 10)
        splits.append((_synthetic_images(labels, rng).reshape(n, 3, _SIDE, _SIDE), labels))
    return write_cifar10_standin(root, splits[0], splits[1], name="synthetic")


_SYNTHETIC_VERSION = 1  # bump when the synthetic images change, to invalidate caches


def synthetic_cifar10_root(seed: int = 0) -> Path:
    """Root of a cached synthetic CIFAR-10 (default sizes) under the system temp dir.

    Written once per ``seed``; later calls return the cached copy. Safe when several
    processes race: each writes into its own temporary folder, which is renamed into
    place; a loser discards its copy.
    """
    files = [f"{_BASE}/{name}" for name in (*_TRAIN_FILES, *_TEST_FILES, _META_FILE, _MANIFEST)]
    return cached_root(f"course-cifar10-synthetic-v{_SYNTHETIC_VERSION}-seed{seed}", files,
                       lambda tmp: write_synthetic_cifar10(tmp, seed=seed))
