"""course.data.isbi: ISBI 2012 loader, archive, synthetic stand-in, tile sampler, full-slice inference.

No network: downloads are made to fail, data is the synthetic stack at small sizes.
"""

from __future__ import annotations

import tempfile
import importlib
import tarfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from course.data.download import DataError, sha256sum
from course.data.isbi import (
    ISBI_N_SLICES,
    ISBI_SHA256,
    ISBI_VAL_SLICES,
    TileSampler,
    extract_isbi_archive,
    isbi_split_indices,
    isbi_url,
    load_isbi2012,
    predict_full,
    synthetic_isbi_root,
    write_synthetic_isbi,
)

isbi_mod = importlib.import_module("course.data.isbi")
download_mod = importlib.import_module("course.data.download")

N, S = 8, 64  # synthetic stack used by most tests: 8 slices of 64x64
_REAL_URLOPEN = urllib.request.urlopen  # before the autouse fixture replaces it


def _offline(*args, **kwargs):
    raise urllib.error.URLError(OSError(101, "Network is unreachable"))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", _offline)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_isbi(tmp_path_factory.mktemp("isbi"), n=N, size=S, seed=0)


@pytest.fixture
def own_root(tmp_path: Path) -> Path:
    """A fresh synthetic stack a test may damage."""
    return write_synthetic_isbi(tmp_path / "data", n=N, size=S, seed=1)


def _load(root: Path, split: str = "all", **kw):
    return load_isbi2012(split, root=root, download=False, verify=False, n_slices=N, **kw)


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        return np.array(im)


# ------------------------------------------------------------------------- real constants


def test_real_hash_table_and_urls() -> None:
    assert sorted(ISBI_SHA256) == sorted(f"{k}/{i}.png" for k in ("image", "label") for i in range(30))
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in ISBI_SHA256.values())
    assert len(set(ISBI_SHA256.values())) == 60
    assert isbi_url("label", 7) == "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/train/label/7.png"
    with pytest.raises(ValueError):
        isbi_url("mask", 0)
    with pytest.raises(ValueError):
        isbi_url("image", 30)


def test_split_is_24_6_contiguous() -> None:
    assert ISBI_N_SLICES == 30
    assert isbi_split_indices("train") == list(range(24))
    assert isbi_split_indices("val") == list(range(24, 30)) == list(ISBI_VAL_SLICES)
    assert isbi_split_indices("validation") == isbi_split_indices("val")
    assert isbi_split_indices("all") == list(range(30))
    assert isbi_split_indices("train", 8) == list(range(6)) and isbi_split_indices("val", 8) == [6, 7]
    with pytest.raises(ValueError, match="split"):
        isbi_split_indices("test")


def test_split_through_the_loader(tmp_path: Path) -> None:
    root = write_synthetic_isbi(tmp_path, n=30, size=16, seed=2)
    x_all, y_all = load_isbi2012("all", root=root, download=False, verify=False)
    x_tr, y_tr = load_isbi2012("train", root=root, download=False, verify=False)
    x_va, y_va = load_isbi2012("val", root=root, download=False, verify=False)
    assert x_tr.shape == (24, 1, 16, 16) and x_va.shape == (6, 1, 16, 16)
    assert torch.equal(x_va, x_all[24:]) and torch.equal(y_tr, y_all[:24])


# ------------------------------------------------------------------- synthetic + loader


def test_synthetic_layout_and_loader(synth_root: Path) -> None:
    for kind in ("image", "label"):
        names = sorted(p.name for p in (synth_root / "isbi2012" / kind).iterdir())
        assert names == sorted(f"{i}.png" for i in range(N))
    label0 = _png(synth_root / "isbi2012" / "label" / "0.png")
    assert label0.shape == (S, S) and set(np.unique(label0)) == {0, 255}
    x, y = _load(synth_root)
    assert x.shape == y.shape == (N, 1, S, S) and x.dtype == y.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x[3, 0], torch.from_numpy(_png(synth_root / "isbi2012" / "image" / "3.png")).float() / 255)
    assert torch.equal(y[0, 0], torch.from_numpy(label0 == 0).float())
    # membrane-like: a minority class, darker than the cells
    assert 0.03 < y.mean() < 0.5
    assert x[y == 1].mean() < x[y == 0].mean() - 0.1
    tr, va = _load(synth_root, "train"), _load(synth_root, "val")
    assert tr[0].shape[0] == 6 and va[0].shape[0] == 2 and torch.equal(va[1], y[6:])


def test_label_polarity_membrane_is_positive(own_root: Path) -> None:
    label = np.full((S, S), 255, np.uint8)
    label[:, :10] = 0  # a black (membrane) band on the left
    image = np.tile(np.arange(S, dtype=np.uint8) * 4, (S, 1))
    Image.fromarray(label).save(own_root / "isbi2012" / "label" / "0.png")
    Image.fromarray(image).save(own_root / "isbi2012" / "image" / "0.png")
    x, y = _load(own_root)
    assert y[0, 0, :, :10].eq(1).all() and y[0, 0, :, 10:].eq(0).all()
    assert torch.allclose(x[0, 0, 5], torch.arange(S).float() * 4 / 255)


def test_synthetic_deterministic(tmp_path: Path) -> None:
    a = write_synthetic_isbi(tmp_path / "a", n=2, size=32, seed=3)
    b = write_synthetic_isbi(tmp_path / "b", n=2, size=32, seed=3)
    c = write_synthetic_isbi(tmp_path / "c", n=2, size=32, seed=4)
    for name in ("image/1.png", "label/0.png"):
        assert sha256sum(a / "isbi2012" / name) == sha256sum(b / "isbi2012" / name)
        assert sha256sum(a / "isbi2012" / name) != sha256sum(c / "isbi2012" / name)


def test_synthetic_root_cached_and_race_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with ThreadPoolExecutor(3) as pool:
        roots = list(pool.map(lambda _: synthetic_isbi_root(seed=0, size=24, n=4), range(3)))
    assert len(set(roots)) == 1 and [p.name for p in tmp_path.iterdir()] == [roots[0].name]
    stamp = (roots[0] / "isbi2012" / "image" / "0.png").stat().st_mtime_ns
    assert synthetic_isbi_root(seed=0, size=24, n=4) == roots[0]
    assert (roots[0] / "isbi2012" / "image" / "0.png").stat().st_mtime_ns == stamp
    x, y = load_isbi2012("all", synthetic=True, root=roots[0], n_slices=4)
    assert x.shape == (4, 1, 24, 24)


def test_env_data_dir_is_the_default_root(monkeypatch: pytest.MonkeyPatch, synth_root: Path) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(synth_root))
    x, _ = load_isbi2012("val", download=False, verify=False, n_slices=N)
    assert x.shape == (2, 1, S, S)


# --------------------------------------------------------------------------- bad files


def test_missing_file_names_it(own_root: Path) -> None:
    (own_root / "isbi2012" / "label" / "3.png").unlink()
    with pytest.raises(DataError, match=r"label/3\.png.*not found"):
        _load(own_root)
    with pytest.raises(DataError, match=r"label/3\.png") as exc:  # download=True: still no download
        load_isbi2012("all", root=own_root, verify=False, n_slices=N)
    msg = str(exc.value)
    assert "nothing is downloaded" in msg and "archive=" in msg and "COURSE_DATA_DIR" in msg
    assert _load(own_root, "val")[0].shape[0] == 2  # other splits still load


def test_wrong_size_names_file_and_expected_size(own_root: Path) -> None:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(own_root / "isbi2012" / "image" / "5.png")
    with pytest.raises(DataError, match=r"image/5\.png.*32x32.*image/0\.png' is 64x64"):
        _load(own_root)


def test_corrupt_png_names_file(own_root: Path) -> None:
    path = own_root / "isbi2012" / "image" / "2.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"image/2\.png.*truncated or corrupt"):
        _load(own_root)


def test_wrong_mode_and_non_binary_label(own_root: Path) -> None:
    rgb = own_root / "isbi2012" / "image" / "1.png"
    Image.fromarray(np.zeros((S, S, 3), np.uint8)).save(rgb)
    with pytest.raises(DataError, match=r"image/1\.png.*mode 'RGB'.*8-bit grayscale"):
        _load(own_root)
    image4 = _png(own_root / "isbi2012" / "image" / "4.png")
    Image.fromarray(image4).save(own_root / "isbi2012" / "label" / "0.png")  # swapped
    with pytest.raises(DataError, match=r"label/0\.png.*not a binary label"):
        _load(own_root, "train")


def test_real_checksum_refuses_synthetic_with_hint(synth_root: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)image/0\.png.*checksum.*verify=False"):
        load_isbi2012("train", root=synth_root, download=False)


def test_tarball_layout_gets_a_hint_not_a_download(tmp_path: Path, synth_root: Path) -> None:
    (tmp_path / "membrane").mkdir()
    for kind in ("image", "label"):
        (tmp_path / "membrane" / kind).symlink_to(synth_root / "isbi2012" / kind)
    with pytest.raises(DataError, match="extract_isbi_archive") as exc:
        load_isbi2012("train", root=tmp_path)
    assert "download" not in str(exc.value)


def test_unverified_load_never_mixes_in_downloaded_slices(
    tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack of 8 read as if it had 30 must fail, not fetch slices 8.. from a (working) mirror."""
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", _REAL_URLOPEN)  # the "network" works
    mirror = synth_root / "isbi2012"
    monkeypatch.setattr(isbi_mod, "ISBI_URL", f"file://{mirror}/{{kind}}/0.png")
    root = write_synthetic_isbi(tmp_path / "few", n=4, size=S, seed=2)
    before = sorted(p.name for p in (root / "isbi2012" / "image").iterdir())
    with pytest.raises(DataError, match=r"image/4\.png' not found.*verify=False nothing is downloaded.*n_slices=30"):
        load_isbi2012("train", root=root, verify=False)
    assert sorted(p.name for p in (root / "isbi2012" / "image").iterdir()) == before


def test_inverted_label_and_bilevel_image_are_refused(own_root: Path) -> None:
    label = own_root / "isbi2012" / "label" / "2.png"
    Image.fromarray(255 - _png(label)).save(label)
    with pytest.raises(DataError, match=r"label/2\.png.*membrane.*inverted"):
        _load(own_root)
    own = own_root / "isbi2012"
    Image.fromarray(255 - _png(label)).save(label)  # back to normal
    Image.fromarray(_png(own / "image" / "3.png") > 128).save(own / "image" / "3.png")  # mode "1"
    with pytest.raises(DataError, match=r"image/3\.png.*mode '1'"):
        _load(own_root)


def test_wrong_roots_and_archives_are_named(tmp_path: Path, synth_root: Path) -> None:
    tar = _tarball(synth_root, tmp_path / "isbi2012-membrane.tar.gz")
    with pytest.raises(DataError, match=r"root .*isbi2012-membrane\.tar\.gz' is a file.*archive="):
        load_isbi2012("train", root=tar)
    with pytest.raises(DataError, match=r"holds \['isbi2012-membrane\.tar\.gz'\].*archive="):
        load_isbi2012("train", root=tmp_path)  # the tarball sits in root, unpacked nowhere
    with pytest.raises(DataError, match="is a folder; expected a tarball"):
        extract_isbi_archive(tmp_path, tmp_path / "out")
    flat = tmp_path / "flat"  # root = the mirror's membrane/ folder itself
    flat.mkdir()
    for kind in ("image", "label"):
        (flat / kind).symlink_to(synth_root / "isbi2012" / kind)
    with pytest.raises(DataError, match=r"flat/image'.*mirror's layout"):
        load_isbi2012("train", root=flat)


def test_unwritable_root_gives_a_data_error_and_keeps_nothing(
    tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = _tarball(synth_root, tmp_path / "isbi.tar.gz")
    real_write = isbi_mod._write_atomic
    calls = []

    def flaky(dest: Path, data: bytes) -> None:
        calls.append(dest)
        if len(calls) == 5:
            raise PermissionError(13, "Permission denied", str(dest))
        real_write(dest, data)

    monkeypatch.setattr(isbi_mod, "_write_atomic", flaky)
    with pytest.raises(DataError, match="could not write the slices.*nothing was kept"):
        extract_isbi_archive(tar, tmp_path / "out", verify=False)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(isbi_mod, "fetch", denied)
    with pytest.raises(DataError, match="could not store.*writable folder"):
        load_isbi2012("train", root=tmp_path / "ro")


# ----------------------------------------------------------------------------- archive


def _tarball(src: Path, dest: Path, skip: str | None = None) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        for kind in ("image", "label"):
            for p in sorted((src / "isbi2012" / kind).iterdir()):
                if f"{kind}/{p.name}" != skip:
                    tf.add(p, arcname=f"membrane/{kind}/{p.name}")
    return dest


def test_archive_round_trip(tmp_path: Path, synth_root: Path) -> None:
    tar = _tarball(synth_root, tmp_path / "isbi.tar.gz")
    root = extract_isbi_archive(tar, tmp_path / "out", verify=False)
    assert root == tmp_path / "out"
    x, y = _load(root)
    x0, y0 = _load(synth_root)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    x2, _ = load_isbi2012("val", root=tmp_path / "out2", download=False, verify=False, n_slices=N, archive=tar)
    assert torch.equal(x2, x0[6:])


def test_archive_checksums_are_checked(tmp_path: Path, synth_root: Path) -> None:
    tar = _tarball(synth_root, tmp_path / "isbi.tar.gz")
    with pytest.raises(DataError, match=r"membrane/image/0\.png.*wrong checksum"):
        extract_isbi_archive(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_or_incomplete_archive(tmp_path: Path, synth_root: Path) -> None:
    tar = _tarball(synth_root, tmp_path / "isbi.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tar.read_bytes()[: tar.stat().st_size * 2 // 3])
    with pytest.raises(DataError, match=r"cut\.tar\.gz.*truncated or corrupt"):
        extract_isbi_archive(cut, tmp_path / "out", verify=False)
    with pytest.raises(DataError, match=r"cut\.tar\.gz.*truncated or corrupt"):
        load_isbi2012("train", root=tmp_path / "out", verify=False, n_slices=N, archive=cut)
    assert not (tmp_path / "out").exists()
    holes = _tarball(synth_root, tmp_path / "holes.tar.gz", skip="label/3.png")
    with pytest.raises(DataError, match=r"incomplete.*label/3\.png"):
        extract_isbi_archive(holes, tmp_path / "out", verify=False)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball at all" * 10)
    with pytest.raises(DataError, match="truncated or corrupt"):
        extract_isbi_archive(tmp_path / "junk.tar.gz", tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        extract_isbi_archive(tmp_path / "nope.tar.gz", tmp_path / "out")


# -------------------------------------------------------------------------- TileSampler


def _stack(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Distinct pixel values, so every crop (and its transforms) is identifiable."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n * size * size, generator=g).float().div(n * size * size).view(n, 1, size, size)


_D4 = [(k, f) for f in (False, True) for k in range(4)]


def _find(tile: torch.Tensor, stack: torch.Tensor, atol: float = 0.0) -> set[tuple[int, int]]:
    """The dihedral transforms (k, flip) under which ``tile`` is an exact crop of ``stack``."""
    t = tile.shape[-1]
    crops = stack.unfold(2, t, 1).unfold(3, t, 1)  # (n, 1, H-t+1, W-t+1, t, t)
    found = set()
    for k, f in _D4:
        back = torch.rot90(tile, -k, dims=(-2, -1))
        back = back.flip(-1) if f else back
        if ((crops - back).abs().amax(dim=(-2, -1)) <= atol).any():
            found.add((k, f))
    return found


def test_tile_sampler_shapes_range_and_len() -> None:
    x_all, y_all = _stack(3, 32), (_stack(3, 32, seed=1) > 0.7).float()
    s = TileSampler(x_all, y_all, tile=16, batch_size=5, steps=3, seed=0, device="cpu")
    assert len(s) == 3
    batches = list(s)
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == y.shape == (5, 1, 16, 16) and x.dtype == y.dtype == torch.float32
        assert x.device.type == "cpu" and 0 <= x.min() and x.max() <= 1
        assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert len(TileSampler(x_all, y_all, tile=16, batch_size=4)) == 3 * 32 * 32 // (16 * 16 * 4)
    with pytest.raises(ValueError, match="tile"):
        TileSampler(x_all, y_all, tile=33)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TileSampler(x_all, y_all, tile=16, steps=0)
    with pytest.raises(TypeError, match="tile must be an int"):
        TileSampler(x_all, y_all, tile=16.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "flips, rot90, allowed",
    [
        (False, False, {(0, False)}),
        (True, False, {(0, False), (0, True), (2, True), (2, False)}),  # h, v flips and both
        (False, True, {(0, False), (1, False), (2, False), (3, False)}),
        (True, True, set(_D4)),
    ],
)
def test_tiles_are_transformed_crops(flips: bool, rot90: bool, allowed: set) -> None:
    stack = _stack(2, 16)
    s = TileSampler(stack, stack.clone(), tile=8, batch_size=16, steps=4, seed=1, flips=flips, rot90=rot90, elastic=False)
    seen: set = set()
    for x, y in s:
        assert torch.equal(x, y)  # the mask went through the same transform as the image
        for tile in x:
            found = _find(tile, stack)
            assert found and found <= allowed, found
            seen |= found
    assert seen == allowed  # every allowed transform occurs


def test_elastic_zero_is_exact_and_elastic_deforms() -> None:
    stack = _stack(2, 16)
    s0 = TileSampler(stack, stack.clone(), tile=8, batch_size=8, steps=1, seed=2, elastic=True, elastic_alpha=0.0)
    x, y = next(iter(s0))
    for tile in x:  # the grid_sample path samples exact pixel centres
        assert _find(tile, stack, atol=1e-5)
    s1 = TileSampler(
        stack, stack.clone(), tile=8, batch_size=8, steps=1, seed=2, elastic=True, elastic_alpha=2.0, elastic_sigma=3.0
    )
    x, _ = next(iter(s1))
    assert sum(bool(_find(tile, stack, atol=1e-3)) for tile in x) <= 1


def test_elastic_moves_mask_with_image() -> None:
    marker = torch.zeros(2, 1, 48, 48)
    marker[:, :, 8:40, 10:16] = 1  # an asymmetric "L"
    marker[:, :, 34:40, 10:34] = 1
    marker[1, :, 12:20, 26:30] = 1
    s = TileSampler(marker, marker.clone(), tile=32, batch_size=16, steps=2, seed=3, elastic_alpha=4.0, elastic_sigma=6.0)
    moved = 0
    for x, y in s:
        assert ((x >= 0.5).float() != y).float().mean() < 0.01
        assert x.sum() > 0
        moved += int(((x > 0.02) & (x < 0.98)).any())  # bilinear edges: the field is not integer
    assert moved > 0


def test_tile_sampler_deterministic_per_seed_and_epoch() -> None:
    x_all = _stack(2, 32)
    y_all = (x_all > 0.5).float()

    def epoch(s: TileSampler) -> list[torch.Tensor]:
        return [x for x, _ in s]

    a, b = (TileSampler(x_all, y_all, tile=16, batch_size=2, steps=2, seed=7) for _ in range(2))
    c = TileSampler(x_all, y_all, tile=16, batch_size=2, steps=2, seed=8)
    a1, b1, c1 = epoch(a), epoch(b), epoch(c)
    assert all(torch.equal(u, v) for u, v in zip(a1, b1))
    assert not torch.equal(a1[0], c1[0])
    a2 = epoch(a)
    assert not torch.equal(a1[0], a2[0])  # a new epoch draws new tiles
    a.set_epoch(0)
    assert all(torch.equal(u, v) for u, v in zip(epoch(a), a1))


# ------------------------------------------------------------------------- predict_full


class _NeedsMultipleOf16(nn.Module):
    """Identity-ish: logits = 3 * x - 1.5, but only for sizes a 4-pooling U-Net accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(3.0)
            self.conv.bias.fill_(-1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0, x.shape
        return self.conv(x)


def test_predict_full_pads_and_crops() -> None:
    x = torch.rand(3, 1, 50, 37)
    model = _NeedsMultipleOf16().train()
    p = predict_full(model, x, batch_size=2)
    assert p.shape == (3, 1, 50, 37) and p.dtype == torch.float32
    assert torch.allclose(p, torch.sigmoid(3 * x - 1.5), atol=1e-6)
    assert model.training  # restored
    assert torch.allclose(predict_full(model, x, tta=True), p, atol=1e-6)  # pointwise model


def test_tta_equals_plain_for_an_equivariant_model_only() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    sym = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        sym.weight.copy_(torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 4)
    assert torch.allclose(predict_full(sym, x, tta=True), predict_full(sym, x), atol=1e-6)
    skew = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        skew.weight.copy_(torch.arange(9.0).view(1, 1, 3, 3) - 4)
    plain, tta = predict_full(skew, x), predict_full(skew, x, tta=True)
    assert (plain - tta).abs().max() > 1e-2
    # each transform is undone: the TTA prediction itself is equivariant
    for t in (lambda z: z.flip(-1), lambda z: torch.rot90(z, 1, (-2, -1)), lambda z: z.flip(-2)):
        assert torch.allclose(predict_full(skew, t(x), tta=True), t(tta), atol=1e-5)


def test_predict_full_two_channel_logits_and_bad_models() -> None:
    x = torch.rand(2, 1, 16, 24)
    two = nn.Conv2d(1, 2, 1)
    p = predict_full(two, x, tta=True)
    logits = two(x).detach()
    assert torch.allclose(p, torch.softmax(logits, 1)[:, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="same"):
        predict_full(nn.Conv2d(1, 1, 3), x)  # valid convolution shrinks the output
    with pytest.raises(ValueError, match="1 or 2 output channels"):
        predict_full(nn.Conv2d(1, 3, 1), x)
