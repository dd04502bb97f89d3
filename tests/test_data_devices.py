"""The vision data pipeline on every device present: CPU always, CUDA when there is one.

CI has no GPU, so the CUDA cases skip there; on a GPU machine
(``python -m pytest tests/test_data_devices.py``, see ``benchmarks/gpu_check.sh``) they
check that batches are made on the GPU, agree with the CPU where no random numbers are
involved, are reproducible under a seed, and that the augmentation issues no host/device
synchronisation once warmed up (``torch.cuda.set_sync_debug_mode("error")``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course.data.augment import Augment, DeviceLoader, augment_batch, normalize, randaugment
from course.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, synthetic_cifar10_root
from course.data.isbi import TileSampler, predict_full

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
FULL = Augment(randaugment_n=2, randaugment_m=9, cutout=8, mixup_alpha=0.2, cutmix_alpha=1.0)


@pytest.fixture(scope="module")
def cifar() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_cifar10(train=False, root=synthetic_cifar10_root(), synthetic=True)
    return x[:256], y[:256]


@pytest.mark.parametrize("device", DEVICES)
def test_batches_are_made_on_the_device(cifar: tuple[torch.Tensor, torch.Tensor], device: str) -> None:
    x, y = cifar
    loader = DeviceLoader(x, y, 64, train=True, device=device, augment=FULL, seed=0, channels_last=True)
    assert loader.images.device.type == device and loader.images.dtype == torch.uint8
    for xb, yb in loader:
        assert xb.device.type == device and yb.device.type == device
        assert xb.shape == (64, 3, 32, 32) and xb.dtype == torch.float32
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert torch.isfinite(xb).all()
        torch.testing.assert_close(yb.sum(1), torch.ones(64, device=device), atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_batches_equal_the_cpu_ones(cifar: tuple[torch.Tensor, torch.Tensor], device: str) -> None:
    x, y = cifar
    on_device = DeviceLoader(x, y, 100, train=False, device=device)
    xs, ys = zip(*on_device)
    torch.testing.assert_close(torch.cat(xs).cpu(), normalize(x, CIFAR10_MEAN, CIFAR10_STD), atol=1e-6, rtol=0)
    assert torch.equal(torch.cat(ys).cpu(), y)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_batches_on_the_device(cifar: tuple[torch.Tensor, torch.Tensor], device: str) -> None:
    x, y = cifar

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(DeviceLoader(x, y, 64, train=True, device=device, augment=FULL, seed=seed))

    a, b, c = epoch(0), epoch(0), epoch(1)
    for (xa, ya), (xb, yb) in zip(a, b):
        torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)  # CUDA: up to kernel rounding
        torch.testing.assert_close(ya, yb, atol=1e-6, rtol=0)
    assert not torch.allclose(a[0][0], c[0][0]), "different seeds gave the same batch"


@pytest.mark.parametrize("device", DEVICES)
def test_sync_free_and_subset_paths_agree(cifar: tuple[torch.Tensor, torch.Tensor], device: str) -> None:
    xf = cifar[0][:64].to(device).float() / 255

    def run(sync_free: bool) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(4)
        return randaugment(xf, 2, 12, generator=g, sync_free=sync_free)

    torch.testing.assert_close(run(True), run(False), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augmentation_never_waits_for_the_gpu(cifar: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Once warmed up (cached constants on the device), a training batch issues no
    synchronising call: the host can queue batches ahead of the GPU."""
    x, y = cifar
    loader = DeviceLoader(x, y, 64, train=True, device="cuda", augment=FULL, seed=0)
    it = iter(loader)
    next(it)  # warm-up: per-device constants are created and cached here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            next(it)
        g = torch.Generator(device="cuda").manual_seed(0)
        idx = torch.randint(0, x.shape[0], (64,), device="cuda", generator=g)
        augment_batch(loader.images, loader.labels, FULL, mean=CIFAR10_MEAN, std=CIFAR10_STD, index=idx, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _stack(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images and their thresholded masks."""
    g = torch.Generator().manual_seed(0)
    x = nn.functional.interpolate(torch.rand(n, 1, size // 8, size // 8, generator=g), size=(size, size),
                                  mode="bilinear", align_corners=False)
    return x, (x > 0.6).float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("elastic", [False, True])
def test_tiles_on_the_device_keep_masks_with_images(device: str, elastic: bool) -> None:
    x, y = _stack(3, 64)
    sampler = TileSampler(x, y, tile=32, batch_size=8, steps=2, device=device, seed=0, elastic=elastic)
    for xb, yb in sampler:
        assert xb.device.type == device and yb.device.type == device and xb.shape == (8, 1, 32, 32)
        assert set(yb.unique().tolist()) <= {0.0, 1.0}
        # the mask was computed from the image by a threshold: it must still (nearly) agree
        agree = ((xb > 0.6).float() == yb).float().mean().item()
        assert agree > (0.999 if not elastic else 0.95), f"mask and image disagree on {1 - agree:.1%} of pixels"
    a, b = (list(TileSampler(x, y, tile=32, batch_size=8, steps=2, device=device, seed=0, elastic=elastic))
            for _ in range(2))
    for (xa, ya), (xb, yb) in zip(a, b):
        torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)
        torch.testing.assert_close(ya, yb, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_predict_full_on_the_device(device: str) -> None:
    x, _ = _stack(2, 48)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).to(device)
    p = predict_full(model, x, tta=True, multiple=16)
    assert p.shape == x.shape and p.device == x.device and 0 <= float(p.min()) and float(p.max()) <= 1
    p_cpu = predict_full(model.cpu(), x, tta=True, multiple=16)
    torch.testing.assert_close(p, p_cpu, atol=1e-4, rtol=0)
