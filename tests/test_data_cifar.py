"""CIFAR-10 loader (torchvision on the original batch format), synthetic stand-in, and the
device-resident augmenting loader. Fast, no network."""

from __future__ import annotations

import json
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course.data import DataError
from course.data.augment import (
    RANDAUGMENT_OPS,
    Augment,
    DeviceLoader,
    augment_batch,
    crop_flip,
    mix,
    normalize,
    randaugment,
    reference_loader,
)
from course.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_URL,
    channel_stats,
    load_cifar10,
    synthetic_cifar10_root,
    write_synthetic_cifar10,
)

BASE = "cifar-10-batches-py"


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set: 100 train (20 per batch file), 30 test."""
    return write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), n_train=100, n_test=30, seed=1)


def _copy_root(src: Path, dst: Path) -> Path:
    (dst / BASE).mkdir(parents=True)
    for f in (src / BASE).iterdir():
        (dst / BASE / f.name).write_bytes(f.read_bytes())
    return dst


def _rewrite(root: Path, name: str, obj: object) -> None:
    """Replace one file by a (Python 3) pickle of ``obj`` and fix the manifest, so that only
    the structure check can catch it."""
    import hashlib

    path = root / BASE / name
    path.write_bytes(pickle.dumps(obj, protocol=2))
    manifest = root / BASE / "synthetic-md5.json"
    md5s = json.loads(manifest.read_text())
    md5s[name] = hashlib.md5(path.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(md5s))


# ---------------------------------------------------------------------------------------
# the synthetic set through torchvision's loader
# ---------------------------------------------------------------------------------------


def test_synthetic_set_read_back_through_torchvision(small_root: Path) -> None:
    x, y = load_cifar10(train=True, root=small_root, synthetic=True)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.shape == (100,) and y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) <= 9
    assert torch.bincount(y, minlength=10).tolist() == [10] * 10
    xt, yt = load_cifar10(train=False, root=small_root, synthetic=True)
    assert xt.shape == (30, 3, 32, 32) and torch.bincount(yt, minlength=10).tolist() == [3] * 10
    assert x.float().std() > 30  # real images, not a constant fill


def test_synthetic_files_have_the_original_layout(small_root: Path) -> None:
    folder = small_root / BASE
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta", "synthetic-md5.json"])
    with open(folder / "data_batch_2", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # how the CIFAR-10 web page says to read it
    assert set(entry) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert entry[b"data"].dtype.name == "uint8" and entry[b"data"].shape == (20, 3072)
    assert len(entry[b"labels"]) == 20 and all(isinstance(v, int) for v in entry[b"labels"])
    assert entry[b"batch_label"] == b"training batch 2 of 5"
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")  # how torchvision reads it
    assert meta["label_names"] == list(CIFAR10_CLASSES) and meta["num_vis"] == 3072
    # row layout: the R plane, then G, then B, each row-major 32x32
    x, _ = load_cifar10(train=True, root=small_root, synthetic=True)
    row = torch.from_numpy(entry[b"data"][0].copy())
    assert torch.equal(x[20], row.view(3, 32, 32))


def test_real_loader_rejects_a_synthetic_root(small_root: Path) -> None:
    with pytest.raises(DataError, match="synthetic=True"):
        load_cifar10(train=True, root=small_root, download=False)


def test_loader_is_torchvisions_class() -> None:
    from torchvision.datasets import CIFAR10

    from course.data.cifar10 import _torchvision_class

    cls = _torchvision_class({n: "0" * 32 for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]})
    assert issubclass(cls, CIFAR10) and cls.__init__ is CIFAR10.__init__ and cls._check_integrity is CIFAR10._check_integrity
    assert _torchvision_class(None) is CIFAR10


def test_synthetic_root_is_cached() -> None:
    a = synthetic_cifar10_root(seed=0)
    assert synthetic_cifar10_root(seed=0) == a
    assert (a / BASE / "data_batch_5").is_file()


# ---------------------------------------------------------------------------------------
# offline and bad files
# ---------------------------------------------------------------------------------------


def test_offline_error_names_url_folder_and_how_to_prefetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tvu

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvu, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tvu, "_urlretrieve", offline)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_cifar10(train=True)  # root from COURSE_DATA_DIR, download=True
    msg = str(err.value)
    assert CIFAR10_URL in msg and str(tmp_path / BASE) in msg and "COURSE_DATA_DIR" in msg and "URLError" in msg


def test_labels_shifted_between_batch_files_are_caught(small_root: Path, tmp_path: Path) -> None:
    import numpy as np

    root = _copy_root(small_root, tmp_path)
    _rewrite(root, "data_batch_2", {"data": np.zeros((20, 3072), "uint8"), "labels": [1] * 21})
    _rewrite(root, "data_batch_3", {"data": np.zeros((20, 3072), "uint8"), "labels": [1] * 19})
    with pytest.raises(DataError, match="data_batch_2.*list of 20 ints"):
        load_cifar10(train=True, root=root, synthetic=True)


def test_offline_with_a_corrupt_copy_names_the_file(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.utils as tvu

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvu, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tvu, "_urlretrieve", offline)
    root = _copy_root(small_root, tmp_path / "copy")
    (root / BASE / "synthetic-md5.json").unlink()  # now it claims to be real CIFAR-10
    with pytest.raises(DataError, match=r"data_batch_1' is corrupt or truncated: expected md5"):
        load_cifar10(train=True, root=root)  # download=True: the bad file is still named
    with pytest.raises(DataError, match="did not exist"):
        load_cifar10(train=True, root=tmp_path / "nowhere")


def test_manifest_and_folder_in_place_of_a_file(small_root: Path, tmp_path: Path) -> None:
    root = _copy_root(small_root, tmp_path)
    manifest = root / BASE / "synthetic-md5.json"
    good = manifest.read_text()
    manifest.write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        load_cifar10(train=True, root=root, synthetic=True)
    manifest.write_text(good)
    (root / BASE / "test_batch").unlink()
    (root / BASE / "test_batch").mkdir()
    with pytest.raises(DataError, match="test_batch' is a folder"):
        load_cifar10(train=False, root=root, synthetic=True)


def test_missing_files_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download=False") as err:
        load_cifar10(train=False, root=tmp_path, download=False)
    assert CIFAR10_URL in str(err.value)


def test_truncated_batch_file_is_named(small_root: Path, tmp_path: Path) -> None:
    root = _copy_root(small_root, tmp_path)
    path = root / BASE / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_3.*(corrupt or truncated)"):
        load_cifar10(train=True, root=root, synthetic=True)
    # the test split does not read data_batch_3 but torchvision checks all files: still an error
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(train=False, root=root, synthetic=True)


def test_missing_split_is_named(small_root: Path, tmp_path: Path) -> None:
    root = _copy_root(small_root, tmp_path)
    (root / BASE / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch.*missing"):
        load_cifar10(train=False, root=root, synthetic=True)


@pytest.mark.parametrize(
    "name, obj, expected",
    [
        ("data_batch_2", {"data": None, "batch_label": "x"}, "keys 'data' and 'labels'"),
        ("data_batch_4", {"data": __import__("numpy").zeros((20, 1024), "uint8"), "labels": [0] * 20}, r"uint8 array \[n, 3072\]"),
        ("data_batch_1", {"data": __import__("numpy").zeros((20, 3072), "uint8"), "labels": [0] * 19}, "list of 20 ints"),
        ("test_batch", {"data": __import__("numpy").zeros((30, 3072), "int64"), "labels": [0] * 30}, "uint8 array"),
        ("data_batch_5", {"data": __import__("numpy").zeros((20, 3072), "uint8"), "labels": [12] * 20}, r"\[0, 10\)"),
        ("batches.meta", {"label_names": ["a", "b"]}, "10 class names"),
        # torchvision itself would read these without complaint
        ("test_batch", {"data": __import__("numpy").zeros((30, 32, 32, 3), "uint8"), "labels": [0] * 30}, r"uint8 array \[n, 3072\]"),
        ("data_batch_4", {"data": __import__("numpy").zeros((0, 3072), "uint8"), "labels": []}, "no images"),
    ],
)
def test_wrong_layout_is_named(small_root: Path, tmp_path: Path, name: str, obj: object, expected: str) -> None:
    root = _copy_root(small_root, tmp_path)
    _rewrite(root, name, obj)
    with pytest.raises(DataError, match=f"{name}.*{expected}"):
        load_cifar10(train=name != "test_batch", root=root, synthetic=True)


# ---------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_cifar10(train=False, root=synthetic_cifar10_root(), synthetic=True)
    return x[:64], y[:64]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_augmentation_is_exact_normalisation(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    out, yy = augment_batch(x, y, None, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    expected = (x.double() / 255 - mean.double()) / std.double()
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=0)
    assert torch.equal(yy, y)
    cl = normalize(x, CIFAR10_MEAN, CIFAR10_STD, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, out)


def _candidates(img: torch.Tensor, pad: int, mode: str) -> list[torch.Tensor]:
    padded = F.pad(img[None].double(), (pad,) * 4, mode="reflect" if mode == "reflect" else "constant")[0]
    H, W = img.shape[-2:]
    crops = [padded[:, i : i + H, j : j + W] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_flip_matches_padded_crops(mode: str) -> None:
    B, pad = 40, 4
    img = (torch.arange(3 * 32 * 32, dtype=torch.float64) + 1).view(3, 32, 32)  # unique values, none 0
    images = img.expand(B, 3, 32, 32).contiguous()
    out = crop_flip(images, pad, True, pad_mode=mode, generator=_gen(1))
    cands = _candidates(img, pad, mode)
    which = []
    for b in range(B):
        hits = [k for k, c in enumerate(cands) if torch.equal(out[b], c)]
        assert hits, f"image {b} is not a {mode}-padded crop (or its mirror) of the input"
        which.append(hits[0])
    assert len(set(which)) > 10, "offsets do not vary per image"
    assert any(k >= len(cands) // 2 for k in which) and any(k < len(cands) // 2 for k in which), "no flip variety"


def test_flip_only_is_exact_mirror() -> None:
    img = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8).expand(64, 3, 8, 8)
    out = crop_flip(img, 0, True, generator=_gen(2))
    flipped = torch.tensor([torch.equal(o, img[0].flip(-1)) for o in out])
    same = torch.tensor([torch.equal(o, img[0]) for o in out])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_randaugment_in_range_and_per_image(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = batch
    xf = x.float() / 255
    out = randaugment(xf, 3, 30, generator=_gen(3))
    assert out.shape == xf.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 and torch.isfinite(out).all()
    # identical images in, different ops out: the op is drawn per image
    same = xf[:1].expand(32, -1, -1, -1).contiguous()
    once = randaugment(same, 1, 20, ops=("identity", "rotate", "solarize", "equalize", "brightness"), generator=_gen(4))
    distinct = {tuple(o.flatten()[::97].tolist()) for o in once}
    assert len(distinct) >= 4, f"only {len(distinct)} distinct results over 32 copies: ops are not drawn per image"
    # identity alone leaves images untouched
    assert torch.equal(randaugment(xf, 2, 9, ops=("identity",), generator=_gen(5)), xf)


def test_randaugment_sync_free_path_equals_subset_path(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    xf = batch[0].float() / 255
    a = randaugment(xf, 2, 12, generator=_gen(6), sync_free=False)
    b = randaugment(xf, 2, 12, generator=_gen(6), sync_free=True)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_colour_ops_match_torchvision(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from torchvision.transforms.v2 import functional as TF

    from course.data import augment as A

    x = batch[0][:16]
    xf = x.float() / 255
    f = torch.full((16,), 1.6)
    pairs = {
        "brightness": (A._brightness(xf, f), TF.adjust_brightness(x, 1.6)),
        "color": (A._color(xf, f), TF.adjust_saturation(x, 1.6)),
        "contrast": (A._contrast(xf, f), TF.adjust_contrast(x, 1.6)),
        "sharpness": (A._sharpness(xf, f), TF.adjust_sharpness(x, 1.6)),
        "posterize": (A._posterize(xf, 5), TF.posterize(x, 5)),
        "solarize": (A._solarize(xf, 0.6), TF.solarize(x, 0.6 * 255)),
        "autocontrast": (A._autocontrast(xf), TF.autocontrast(x)),
        "equalize": (A._equalize(xf), TF.equalize(x)),
    }
    for name, (mine, ref) in pairs.items():
        diff = (mine * 255 - ref.float()).abs().max().item()
        limit = (1.5 if name == "sharpness" else 1.0) + 1e-3  # sharpness: torchvision rounds the blur to uint8
        assert diff <= limit, f"{name}: differs from torchvision by {diff:.2f} levels"


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
@pytest.mark.parametrize("sign", [1, -1])
def test_geometric_ops_match_torchvision_affine(name: str, sign: int) -> None:
    """Direction and size of each geometric op equal torchvision's affine with the documented
    parameters (shear about the centre, sub-pixel translation, bilinear)."""
    import math

    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from course.data import augment as A

    g = _gen(11)
    x = F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(32, 40), mode="bilinear")  # smooth, not square
    m = 12
    frac = m / 30
    k = A.RANDAUGMENT_OPS.index(name)
    theta = A._affine_theta(torch.tensor([k, k]), torch.tensor([sign, sign]), A.RANDAUGMENT_OPS, m, 32, 40)
    mine = A._warp(x, theta)
    shear = math.degrees(math.atan(sign * 0.3 * frac))
    kw: dict = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0]}
    if name == "shear_x":
        kw["shear"] = [shear, 0.0]
    elif name == "shear_y":
        kw["shear"] = [0.0, shear]
    elif name == "translate_x":
        kw["translate"] = [sign * 150 / 331 * 40 * frac, 0.0]
    else:
        kw["translate"] = [0.0, sign * 150 / 331 * 32 * frac]
    if name == "rotate":  # v2.RandAugment rotates with F.rotate (counter-clockwise), not F.affine's angle
        ref = TF.rotate(x, sign * 30.0 * frac, interpolation=InterpolationMode.BILINEAR)
    else:
        ref = TF.affine(x, **kw, interpolation=InterpolationMode.BILINEAR)
    assert not torch.allclose(mine, x, atol=1e-2), f"{name} left the image unchanged"
    torch.testing.assert_close(mine, ref, atol=2e-5, rtol=0, msg=lambda m: f"{name} sign {sign}: {m}")


def test_mixup_soft_labels_and_blend(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    xn = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    out, soft, lam = mix(xn, y, 10, mixup_alpha=0.4, generator=_gen(7), return_lam=True)
    assert soft.shape == (64, 10) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(64), atol=1e-6, rtol=0)
    assert float(lam.min()) < 0.9, "lambda never far from 1"
    expected = lam.view(-1, 1, 1, 1) * xn + (1 - lam.view(-1, 1, 1, 1)) * xn.flip(0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    own = soft.gather(1, y.view(-1, 1)).squeeze(1)
    differ = y != y.flip(0)
    torch.testing.assert_close(own[differ], lam[differ])


def test_cutmix_lambda_is_box_area() -> None:
    B = 50
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, 32, 32).contiguous()  # image i is all i
    y = torch.arange(B) % 10
    out, soft, lam = mix(x, y, 10, cutmix_alpha=1.0, generator=_gen(8), return_lam=True)
    pasted = (out != x).float().mean(dim=(1, 2, 3))  # fraction taken from the partner
    torch.testing.assert_close(lam, 1 - pasted, atol=1e-6, rtol=0)
    assert float(pasted.max()) > 0.3
    torch.testing.assert_close(soft.sum(1), torch.ones(B), atol=1e-6, rtol=0)
    differ = y != y.flip(0)
    torch.testing.assert_close(soft.gather(1, y.view(-1, 1)).squeeze(1)[differ], lam[differ])


def test_mix_prob_zero_leaves_batch_alone(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    xn = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    out, soft = mix(xn, y, 10, mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.0, generator=_gen(9))
    assert torch.equal(out, xn) and torch.equal(soft, F.one_hot(y, 10).float())


def test_loader_shapes_len_and_soft_labels(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    aug = Augment(randaugment_n=2, cutout=8, mixup_alpha=0.2, cutmix_alpha=1.0)
    loader = DeviceLoader(x, y, 16, train=True, device="cpu", augment=aug, seed=0, channels_last=True)
    assert len(loader) == 4
    batches = list(loader)
    assert len(batches) == 4
    for xb, yb in batches:
        assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32 and xb.device.type == "cpu"
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert yb.shape == (16, 10) and torch.allclose(yb.sum(1), torch.ones(16))
    assert len(DeviceLoader(x, y, 10, train=True)) == 6  # drop_last by default when training
    evaluation = DeviceLoader(x, y, 10, train=False, augment=aug)
    assert len(evaluation) == 7
    xs, ys = zip(*evaluation)
    assert torch.equal(torch.cat(ys), y)  # stored order, every image, int labels
    torch.testing.assert_close(torch.cat(xs), normalize(x, CIFAR10_MEAN, CIFAR10_STD))


def test_loader_is_deterministic_under_a_seed(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    aug = Augment(randaugment_n=2, mixup_alpha=0.2, cutmix_alpha=1.0)

    def epochs(seed: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        loader = DeviceLoader(x, y, 16, train=True, augment=aug, seed=seed)
        return [list(loader), list(loader)]

    a, b, c = epochs(0), epochs(0), epochs(1)
    for (xa, ya), (xb, yb) in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0][0], c[0][0][0]), "different seeds gave the same batch"
    assert not torch.equal(a[0][0][0], a[1][0][0]), "two epochs gave the same batch"
    loader = DeviceLoader(x, y, 16, train=True, augment=aug, seed=0)
    loader.set_epoch(1)
    assert torch.equal(next(iter(loader))[0], a[1][0][0])


def test_augment_config_is_validated() -> None:
    with pytest.raises(ValueError, match="pad_mode"):
        Augment(pad_mode="edge")
    with pytest.raises(ValueError, match="randaugment_ops"):
        Augment(randaugment_ops=("rotate", "warp"))
    with pytest.raises(ValueError, match="randaugment_m"):
        Augment(randaugment_m=31)
    assert set(Augment().randaugment_ops) == set(RANDAUGMENT_OPS)


def test_augment_rejects_wrong_types_and_non_finite_values() -> None:
    for kwargs, exc, words in [
        ({"randaugment_ops": "rotate"}, TypeError, "tuple of op names"),
        ({"randaugment_n": 2.0}, TypeError, "randaugment_n must be an int"),
        ({"crop_pad": 2.5}, TypeError, "crop_pad must be an int"),
        ({"flip": "no"}, TypeError, "flip must be True or False"),
        ({"cutmix_alpha": float("inf")}, ValueError, "cutmix_alpha must be a finite number"),
        ({"mixup_alpha": float("nan")}, ValueError, "mixup_alpha must be a finite number"),
    ]:
        with pytest.raises(exc, match=words):
            Augment(**kwargs)


def test_functions_validate_their_arguments(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    with pytest.raises(ValueError, match="pad_mode"):
        crop_flip(x, 4, True, pad_mode="zero")
    with pytest.raises(ValueError, match="pad must be >= 0"):
        crop_flip(x, -2, True)
    for n, m in ((2, 60), (2, -5), (-1, 9)):
        with pytest.raises(ValueError, match="randaugment: need n >= 0"):
            randaugment(x.float() / 255, n, m)
    with pytest.raises(TypeError, match="float images"):
        mix(x, y, 10, mixup_alpha=1.0)


def test_middle_image_of_an_odd_batch_is_not_mixed_with_itself(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    xn = normalize(x[:7], CIFAR10_MEAN, CIFAR10_STD)
    for kw in ({"mixup_alpha": 1.0}, {"cutmix_alpha": 1.0}):
        out, soft, lam = mix(xn, y[:7], 10, generator=_gen(12), return_lam=True, **kw)
        assert float(lam[3]) == 1.0 and torch.equal(out[3], xn[3])
        assert torch.equal(soft[3], F.one_hot(y[3], 10).float())
        assert float(lam.min()) < 1.0, "nothing was mixed"


def test_training_loader_that_would_yield_nothing_is_refused(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    with pytest.raises(ValueError, match="no batches at all"):
        DeviceLoader(x[:50], y[:50], 64, train=True)
    assert len(DeviceLoader(x[:50], y[:50], 64, train=True, drop_last=False)) == 1
    assert len(DeviceLoader(x[:50], y[:50], 64, train=False)) == 1


def test_epoch_is_taken_when_iteration_starts(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    loader = DeviceLoader(x, y, 16, train=True, augment=Augment(), seed=3)
    it = iter(loader)
    assert loader.epoch == 1
    loader.set_epoch(0)  # must not change the pass already started
    first = next(it)[0]
    again = DeviceLoader(x, y, 16, train=True, augment=Augment(), seed=3)
    assert torch.equal(next(iter(again))[0], first)
    assert torch.equal(next(iter(loader))[0], first), "set_epoch(0) did not apply to the next pass"


def test_reference_loader_handles_rectangular_images() -> None:
    g = _gen(13)
    x = torch.randint(0, 256, (20, 3, 24, 40), dtype=torch.uint8, generator=g)
    y = torch.arange(20) % 10
    xb, yb = next(iter(reference_loader(x, y, 8, augment=Augment(randaugment_n=1))))
    assert xb.shape == (8, 3, 24, 40) and yb.shape == (8,)


def test_reference_loader_batches(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    loader = reference_loader(x, y, 16, augment=Augment(randaugment_n=1, mixup_alpha=0.2, cutmix_alpha=1.0))
    xb, yb = next(iter(loader))
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32
    assert yb.shape == (16, 10) and torch.allclose(yb.sum(1), torch.ones(16))


def test_tiny_cnn_learns_synthetic_set_through_device_loader() -> None:
    torch.manual_seed(0)
    root = synthetic_cifar10_root()
    x, y = load_cifar10(train=True, root=root, synthetic=True)
    xt, yt = load_cifar10(train=False, root=root, synthetic=True)
    mean, std = channel_stats(x)
    train = DeviceLoader(x[:1280], y[:1280], 64, train=True, augment=Augment(), mean=mean, std=std, seed=0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # 2 x 20 steps
        for xb, yb in train:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        xe, ye = next(iter(DeviceLoader(xt[:500], yt[:500], 500, train=False, mean=mean, std=std)))
        acc = (model(xe).argmax(1) == ye).float().mean().item()
    print(f"tiny CNN test accuracy {acc:.3f}")
    assert acc > 0.3, f"test accuracy {acc:.2f} after 40 steps: the synthetic set is not learnable (chance 0.10)"


def test_a_standin_from_given_images_loads_back_exactly(tmp_path):
    """write_cifar10_standin (the synthetic set's writer, and benchmarks/cifar10_from_jpeg.py's): any
    images in the official layout with a manifest; load_cifar10(synthetic=True) returns them unchanged."""
    from course.data.cifar10 import write_cifar10_standin

    g = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 256, (12, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(12) % 10)
    test = (torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8), torch.tensor([9, 0, 4]))
    write_cifar10_standin(tmp_path, train, test, name="t")
    for split, (images, labels) in ((True, train), (False, test)):
        x, y = load_cifar10(train=split, root=tmp_path, synthetic=True)
        assert torch.equal(x, images) and torch.equal(y, labels)
    with pytest.raises(ValueError, match=r"\[n, 3, 32, 32\]"):
        write_cifar10_standin(tmp_path, (train[0][:, :, :16], train[1]), test)
