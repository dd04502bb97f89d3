"""A device-resident image loader with batched augmentation (crop, flip, RandAugment, mixup, cutmix).

The usual pipeline -- a ``DataLoader`` whose workers decode and augment one PIL image or
tensor at a time -- is the bottleneck when a small model trains on 32x32 images on a GPU.
:class:`DeviceLoader` keeps the whole ``uint8`` data set on the device (CIFAR-10 is 150 MiB)
and augments a whole batch at once with tensor ops, each image drawing its own random
parameters:

1. gather + random crop (padding 4, reflect or zero) + horizontal flip: three ``uint8``
   gathers (images, rows, columns) from the stored set, never padding the batch;
2. RandAugment (optional): ``N`` rounds; in each, every image draws one op from the list
   (:data:`RANDAUGMENT_OPS`) and a sign, with magnitude ``M`` on torchvision's 0..30 scale.
   Colour ops are per-image blends and look-ups; the geometric ops of a round (rotate,
   shear, translate) are one batched ``affine_grid`` / ``grid_sample`` with a per-image matrix;
3. ``float`` conversion and normalisation fused in one pass: ``x * (1 / 255 std) - mean / std``;
4. cutout (optional), then mixup / cutmix (optional) with soft labels.

All random numbers come from one ``torch.Generator`` on the loader's device, seeded from
``(seed, epoch)``: the same seed gives the same batches (exactly on the CPU; on CUDA up to
the float rounding of the kernels). No step loops over images in Python, and on CUDA no
step waits for the GPU (per-image op choices are applied with ``torch.where``; on the CPU
only the chosen images are computed, which gives the same result).

:func:`reference_loader` builds the conventional pipeline (``DataLoader`` +
``torchvision.transforms.v2``) with the same :class:`Augment` settings, for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .cifar10 import CIFAR10_MEAN, CIFAR10_STD

__all__ = [
    "RANDAUGMENT_OPS",
    "Augment",
    "crop_flip",
    "randaugment",
    "normalize",
    "cutout",
    "mix",
    "augment_batch",
    "DeviceLoader",
    "reference_transforms",
    "reference_loader",
]

# The RandAugment op set of torchvision.transforms.v2.RandAugment (same names, lower case).
RANDAUGMENT_OPS: tuple[str, ...] = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
_GEOMETRIC = frozenset({"shear_x", "shear_y", "translate_x", "translate_y", "rotate"})
_MAX_M = 30  # magnitudes run 0..30 (torchvision's num_magnitude_bins=31)


@dataclass(frozen=True)
class Augment:
    """Settings of the training-time augmentation (defaults: the classic CIFAR crop + flip)."""

    crop_pad: int = 4  # random 32x32 crop of the image padded by this many pixels per side; 0: off
    pad_mode: str = "reflect"  # padding for the crop: "reflect" or "zeros"
    flip: bool = True  # horizontal flip with probability 1/2
    randaugment_n: int = 0  # RandAugment: ops per image (0: off); 2 is the usual choice
    randaugment_m: int = 9  # RandAugment magnitude on the 0..30 scale of torchvision
    randaugment_ops: tuple[str, ...] = RANDAUGMENT_OPS  # ops each image draws from, uniformly
    cutout: int = 0  # side of one square per image set to the mean colour (0 after normalising); 0: off
    mixup_alpha: float = 0.0  # mixup with lambda ~ Beta(alpha, alpha) per image; 0: off
    cutmix_alpha: float = 0.0  # cutmix with lambda ~ Beta(alpha, alpha) per image; 0: off
    mix_prob: float = 1.0  # probability that an image is mixed at all (else lambda = 1)
    switch_prob: float = 0.5  # with both alphas > 0: probability that an image uses cutmix

    def __post_init__(self) -> None:
        for name in ("crop_pad", "randaugment_n", "randaugment_m", "cutout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Augment.{name} must be an int, got {v!r}")
        if not isinstance(self.flip, bool):
            raise TypeError(f"Augment.flip must be True or False, got {self.flip!r}")
        if isinstance(self.randaugment_ops, str):
            raise TypeError(
                f"Augment.randaugment_ops must be a tuple of op names, got the string {self.randaugment_ops!r}; "
                f"write ({self.randaugment_ops!r},)"
            )
        for name in ("mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Augment.{name} must be a finite number, got {v!r}")
        if self.crop_pad < 0:
            raise ValueError(f"Augment.crop_pad must be >= 0, got {self.crop_pad}")
        if self.pad_mode not in ("reflect", "zeros"):
            raise ValueError(f"Augment.pad_mode must be 'reflect' or 'zeros', got {self.pad_mode!r}")
        if self.randaugment_n < 0 or not 0 <= self.randaugment_m <= _MAX_M:
            raise ValueError(
                f"Augment: randaugment_n must be >= 0 and randaugment_m in [0, {_MAX_M}], "
                f"got n={self.randaugment_n}, m={self.randaugment_m}"
            )
        unknown = [op for op in self.randaugment_ops if op not in RANDAUGMENT_OPS]
        if unknown or not self.randaugment_ops:
            raise ValueError(f"Augment.randaugment_ops: unknown {unknown}; choose from {list(RANDAUGMENT_OPS)}")
        if self.cutout < 0 or self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("Augment: cutout, mixup_alpha and cutmix_alpha must be >= 0")
        if not (0.0 <= self.mix_prob <= 1.0 and 0.0 <= self.switch_prob <= 1.0):
            raise ValueError("Augment: mix_prob and switch_prob must be in [0, 1]")

    @property
    def mixes(self) -> bool:
        """True when batches get soft labels (mixup or cutmix on)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def describe(self) -> str:
        """Short text of the settings that differ from the defaults, e.g. ``crop4+flip+ra2/9``."""
        parts = []
        if self.crop_pad:
            parts.append(f"crop{self.crop_pad}{'' if self.pad_mode == 'reflect' else 'z'}")
        if self.flip:
            parts.append("flip")
        if self.randaugment_n:
            parts.append(f"ra{self.randaugment_n}/{self.randaugment_m}")
        if self.cutout:
            parts.append(f"cutout{self.cutout}")
        if self.mixup_alpha:
            parts.append(f"mixup{self.mixup_alpha:g}")
        if self.cutmix_alpha:
            parts.append(f"cutmix{self.cutmix_alpha:g}")
        return "+".join(parts) or "none"


# ---------------------------------------------------------------------------------------
# random numbers (all from one generator, on the data's device)
# ---------------------------------------------------------------------------------------


def _rand(n: int, g: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=device)


def _randint(high: int, n: int, g: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(high, (n,), generator=g, device=device)


def _beta(alpha: Tensor, g: torch.Generator | None) -> Tensor:
    """Per-element ``Beta(alpha, alpha)`` samples via two Gamma draws from ``g``."""
    a = torch._standard_gamma(alpha, generator=g)
    b = torch._standard_gamma(alpha, generator=g)
    return a / (a + b).clamp_min(torch.finfo(a.dtype).tiny)


def _per_image(x: Tensor, sel: Tensor, fn: Callable[..., Tensor], *params: Tensor, sync_free: bool) -> Tensor:
    """Replace ``x[i]`` by ``fn(x, *params)[i]`` where ``sel[i]``.

    ``sync_free`` (CUDA): compute ``fn`` on the whole batch and pick with ``torch.where`` --
    more arithmetic, but no host/device synchronisation. Otherwise: compute ``fn`` on the
    selected images only (``nonzero`` + ``index_copy``). Both give the same result because
    every op treats images independently.
    """
    if sync_free:
        return torch.where(sel.view(-1, 1, 1, 1), fn(x, *params), x)
    idx = sel.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    return x.index_copy(0, idx, fn(x.index_select(0, idx), *(p.index_select(0, idx) for p in params)))


# ---------------------------------------------------------------------------------------
# crop + flip: one gather
# ---------------------------------------------------------------------------------------


def _reflect(k: Tensor, size: int) -> Tensor:
    """Reflect indices into ``[0, size)`` without repeating the edge (``F.pad(mode="reflect")``)."""
    k = torch.where(k < 0, -k, k)
    return torch.where(k > size - 1, 2 * (size - 1) - k, k)


def crop_flip(
    images: Tensor,
    pad: int,
    flip: bool,
    *,
    index: Tensor | None = None,
    pad_mode: str = "reflect",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random crop of the padded image plus random horizontal flip, per image, by gathers.

    Equivalent to ``RandomCrop(H, padding=pad, padding_mode=pad_mode)`` followed by
    ``RandomHorizontalFlip()`` on every image, without materialising the padded batch.

    Args:
        images: ``Tensor[N, C, H, W]`` of any dtype (the stored set, or a batch).
        pad: padding per side; the crop offset is uniform in ``[0, 2 pad]`` on each axis.
        flip: flip each image left-right with probability 1/2.
        index: ``int64 Tensor[B]`` rows of ``images`` forming the batch (default: all).
        pad_mode: ``"reflect"`` (mirror without repeating the edge) or ``"zeros"``.
        generator: source of the per-image offsets and flips.

    Returns:
        ``Tensor[B, C, H, W]``, same dtype and device as ``images``.
    """
    N, C, H, W = images.shape
    dev = images.device
    if pad < 0:
        raise ValueError(f"crop_flip: pad must be >= 0, got {pad}")
    if pad_mode not in ("reflect", "zeros"):
        raise ValueError(f"crop_flip: pad_mode must be 'reflect' or 'zeros', got {pad_mode!r}")
    if index is None:
        index = torch.arange(N, device=dev)
    B = index.shape[0]
    if pad > 0 and pad_mode == "reflect" and pad >= min(H, W):
        raise ValueError(f"crop_flip: reflect padding needs pad < H, W; got pad={pad} for {H}x{W} images")
    rows = torch.arange(H, device=dev).expand(B, H)  # (B, H) source row of each output row
    cols = torch.arange(W, device=dev).expand(B, W)  # (B, W)
    if pad > 0:
        rows = rows + _randint(2 * pad + 1, B, generator, dev)[:, None] - pad
        cols = cols + _randint(2 * pad + 1, B, generator, dev)[:, None] - pad
    if flip:
        flipped = _randint(2, B, generator, dev).bool()[:, None]
        cols = torch.where(flipped, cols.flip(1), cols)
    valid = None
    if pad > 0 and pad_mode == "zeros":
        valid = ((rows >= 0) & (rows < H))[:, None, :, None] & ((cols >= 0) & (cols < W))[:, None, None, :]
        rows, cols = rows.clamp(0, H - 1), cols.clamp(0, W - 1)
    elif pad > 0:
        rows, cols = _reflect(rows, H), _reflect(cols, W)
    # three cheap gathers (images, then rows, then columns) beat one 4-index gather on the CPU
    out = images.index_select(0, index)  # (B, C, H, W)
    if pad > 0:
        out = out.gather(2, rows.view(B, 1, H, 1).expand(B, C, H, W))
    if pad > 0 or flip:
        out = out.gather(3, cols.view(B, 1, 1, W).expand(B, C, H, W))
    if valid is not None:
        out = out.masked_fill(~valid, 0)
    return out  # (B, C, H, W)


# ---------------------------------------------------------------------------------------
# RandAugment on float images in [0, 1]
# ---------------------------------------------------------------------------------------


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` of RGB ``x[B, 3, H, W]`` (grayscale ``x`` is returned as is)."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(base: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(base + factor (x - base), 0, 1)`` with a per-image ``factor[B]``."""
    return torch.lerp(base, x, factor.view(-1, 1, 1, 1).to(x.dtype)).clamp_(0.0, 1.0)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return _blend(torch.zeros_like(x), x, f)


def _color(x: Tensor, f: Tensor) -> Tensor:
    return _blend(_gray(x).expand_as(x), x, f)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    return _blend(_gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), x, f)


def _sharpness(x: Tensor, f: Tensor) -> Tensor:
    """PIL's sharpness: blend with a 3x3 smoothing (centre 5, others 1, / 13), borders kept."""
    C = x.shape[1]
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(C, 1, 3, 3)
    blurred = x.clone()
    blurred[:, :, 1:-1, 1:-1] = F.conv2d(x, k, groups=C)
    return _blend(blurred, x, f)


def _posterize(x: Tensor, bits: int) -> Tensor:
    """Keep the ``bits`` high bits of each 8-bit level."""
    step = float(2 ** (8 - bits))
    return torch.floor(torch.round(x * 255.0) / step) * (step / 255.0)


def _solarize(x: Tensor, threshold: float) -> Tensor:
    """Invert the levels at or above ``threshold`` (in [0, 1])."""
    return torch.where(x >= threshold, 1.0 - x, x)


def _autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each image to span [0, 1] (a flat channel stays as it is)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
    return ((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale).clamp_(0.0, 1.0)


def _equalize(x: Tensor) -> Tensor:
    """PIL's histogram equalisation per image and channel, batched and sync-free.

    Histograms by an integer ``scatter_add_`` (exact, and deterministic on CUDA); the
    look-up table is PIL's ``(count below v + step // 2) // step`` with
    ``step = (count - count of the top level) // 255``.
    """
    B, C, H, W = x.shape
    levels = torch.round(x * 255.0).clamp_(0, 255).to(torch.int64).view(B * C, H * W)  # (BC, HW)
    hist = torch.zeros(B * C, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))  # (BC, 256)
    below = hist.cumsum(1) - hist  # count of levels < v
    n_top = hist.gather(1, levels.amax(1, keepdim=True))  # count of the highest level present
    step = torch.div(H * W - n_top, 255, rounding_mode="floor")  # (BC, 1)
    lut = torch.div(below + step // 2, step.clamp_min(1), rounding_mode="floor").clamp_(0, 255)
    out = torch.where(step == 0, levels, lut.gather(1, levels))  # a (nearly) flat channel is left alone
    return out.view(B, C, H, W).to(x.dtype) / 255.0


def _affine_theta(op: Tensor, sign: Tensor, ops: Sequence[str], m: int, H: int, W: int) -> Tensor:
    """Per-image ``affine_grid`` matrices ``[B, 2, 3]`` for the geometric ops of one round.

    Built in centred pixel coordinates (``p_in = A p_out + t``) and converted to the
    normalised coordinates of ``affine_grid(align_corners=False)``; images whose op is not
    geometric get the identity.
    """
    B = op.shape[0]
    dev = op.device
    s = sign.to(torch.float32)
    zero, one = torch.zeros(B, device=dev), torch.ones(B, device=dev)
    a, b, c, d, tx, ty = one, zero, zero, one, zero, zero  # A = [[a, b], [c, d]], t = (tx, ty)
    frac = m / _MAX_M
    for k, name in enumerate(ops):
        if name not in _GEOMETRIC:
            continue
        here = op == k
        if name == "rotate":
            angle = s * math.radians(30.0 * frac)
            cos, sin = torch.cos(angle), torch.sin(angle)
            a, b, c, d = (torch.where(here, v, w) for v, w in ((cos, a), (-sin, b), (sin, c), (cos, d)))
        elif name == "shear_x":
            b = torch.where(here, s * 0.3 * frac, b)
        elif name == "shear_y":
            c = torch.where(here, s * 0.3 * frac, c)
        elif name == "translate_x":
            tx = torch.where(here, -s * (150.0 / 331.0) * W * frac, tx)  # + moves content right
        elif name == "translate_y":
            ty = torch.where(here, -s * (150.0 / 331.0) * H * frac, ty)  # + moves content down
    # normalised x = u / (W / 2) for centred pixel coordinate u
    sx, sy = W / 2.0, H / 2.0
    row0 = torch.stack([a, b * sy / sx, tx / sx], dim=1)
    row1 = torch.stack([c * sx / sy, d, ty / sy], dim=1)
    return torch.stack([row0, row1], dim=1)  # (B, 2, 3)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear warp of each image by its ``theta[B, 2, 3]``; outside pixels become 0 (black)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def randaugment(
    x: Tensor,
    n: int,
    m: int,
    *,
    ops: Sequence[str] = RANDAUGMENT_OPS,
    generator: torch.Generator | None = None,
    sync_free: bool | None = None,
) -> Tensor:
    """RandAugment on a batch: ``n`` rounds, each image drawing its own op and sign per round.

    Magnitudes follow ``torchvision.transforms.v2.RandAugment`` at ``magnitude=m`` of 31
    bins: shear ``0.3 m/30``, translate ``150/331 * size * m/30`` pixels, rotate ``30 m/30``
    degrees, brightness/color/contrast/sharpness factor ``1 +- 0.9 m/30``, posterize to
    ``8 - round(m/7.5)`` bits, solarize at ``1 - m/30``; autocontrast, equalize and identity
    have no magnitude. Signed ops get a random sign per image.

    Pixels moved in from outside the image are black. The geometric ops equal torchvision's
    ``v2.functional.rotate`` (positive angle: counter-clockwise) and ``v2.functional.affine``
    (bilinear, default fill) with these parameters, with three deliberate differences from
    ``v2.RandAugment``:
    bilinear rather than nearest interpolation, shear about the image centre rather than the
    top-left corner (so a sheared image is not also shifted), and sub-pixel translation
    rather than truncation to whole pixels. As in torchvision, ``m = 0`` is not a no-op:
    autocontrast and equalize have no magnitude, and solarize at threshold 1 inverts pure white.

    Args:
        x: float ``Tensor[B, C, H, W]`` with values in ``[0, 1]`` (C = 3, or 1 for gray).
        n, m: number of ops per image, magnitude in ``[0, 30]``.
        ops: the op list each image draws from uniformly (names of :data:`RANDAUGMENT_OPS`).
        generator: source of the op choices and signs.
        sync_free: see :func:`_per_image`; default: True on CUDA, False elsewhere.

    Returns:
        float ``Tensor[B, C, H, W]`` in ``[0, 1]``.
    """
    if n < 0 or not 0 <= m <= _MAX_M:
        raise ValueError(f"randaugment: need n >= 0 and m in [0, {_MAX_M}], got n={n}, m={m}")
    if n == 0:
        return x
    if not x.is_floating_point():
        raise TypeError(f"randaugment expects float images in [0, 1], got {x.dtype}")
    unknown = [op for op in ops if op not in RANDAUGMENT_OPS]
    if unknown:
        raise ValueError(f"randaugment: unknown ops {unknown}; choose from {list(RANDAUGMENT_OPS)}")
    sync_free = x.is_cuda if sync_free is None else sync_free
    B, _, H, W = x.shape
    dev = x.device
    frac = m / _MAX_M
    for _ in range(n):
        op = _randint(len(ops), B, generator, dev)  # (B,) index into ops
        sign = _randint(2, B, generator, dev) * 2 - 1  # (B,) +-1
        factor = 1.0 + 0.9 * frac * sign.to(x.dtype)  # (B,) for the blend ops
        geometric = torch.zeros(B, dtype=torch.bool, device=dev)
        for k, name in enumerate(ops):
            if name in _GEOMETRIC:
                geometric |= op == k
        if any(name in _GEOMETRIC for name in ops):
            theta = _affine_theta(op, sign, ops, m, H, W)
            x = _per_image(x, geometric, _warp, theta, sync_free=sync_free).clamp_(0.0, 1.0)
        for k, name in enumerate(ops):
            here = op == k
            if name == "brightness":
                x = _per_image(x, here, _brightness, factor, sync_free=sync_free)
            elif name == "color":
                x = _per_image(x, here, _color, factor, sync_free=sync_free)
            elif name == "contrast":
                x = _per_image(x, here, _contrast, factor, sync_free=sync_free)
            elif name == "sharpness":
                x = _per_image(x, here, _sharpness, factor, sync_free=sync_free)
            elif name == "posterize":
                bits = 8 - int(round(m / 7.5))
                x = _per_image(x, here, lambda t: _posterize(t, bits), sync_free=sync_free)
            elif name == "solarize":
                x = _per_image(x, here, lambda t: _solarize(t, 1.0 - frac), sync_free=sync_free)
            elif name == "autocontrast":
                x = _per_image(x, here, _autocontrast, sync_free=sync_free)
            elif name == "equalize":
                x = _per_image(x, here, _equalize, sync_free=sync_free)
    return x


# ---------------------------------------------------------------------------------------
# normalisation, cutout, mixup / cutmix
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _affine_coefficients(
    mean: tuple[float, ...], std: tuple[float, ...], from_uint8: bool, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``scale, bias`` of shape ``[1, C, 1, 1]`` with ``x * scale + bias = (x / 255 - mean) / std``
    (without the 255 for float input); computed in float64, cached per device."""
    std_t = torch.tensor(std, dtype=torch.float64)
    mean_t = torch.tensor(mean, dtype=torch.float64)
    scale = 1.0 / (std_t * (255.0 if from_uint8 else 1.0))
    bias = -mean_t / std_t
    C = len(mean)
    return (
        scale.to(device=device, dtype=torch.float32).view(1, C, 1, 1),
        bias.to(device=device, dtype=torch.float32).view(1, C, 1, 1),
    )


def normalize(
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels_last: bool = False,
) -> Tensor:
    """``(x / 255 - mean) / std`` for uint8 ``x``, or ``(x - mean) / std`` for float ``x`` in [0, 1].

    One pass (``addcmul`` reads the uint8 or float input and writes float32), optionally
    straight into a ``channels_last`` tensor.

    Args:
        x: ``Tensor[B, C, H, W]``, uint8 (0..255) or float (0..1).
        mean, std: per-channel statistics of pixels in [0, 1], length C.

    Returns:
        float32 ``Tensor[B, C, H, W]``.
    """
    B, C, H, W = x.shape
    if len(mean) != C or len(std) != C:
        raise ValueError(f"normalize: {C} channels but mean has {len(mean)} and std {len(std)} values")
    scale, bias = _affine_coefficients(tuple(mean), tuple(std), x.dtype == torch.uint8, x.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((B, C, H, W), dtype=torch.float32, device=x.device, memory_format=fmt)
    return torch.addcmul(bias, x, scale, out=out)


def _boxes(
    B: int, H: int, W: int, cut_h: Tensor, cut_w: Tensor, g: torch.Generator | None, dev: torch.device
) -> tuple[Tensor, Tensor]:
    """Per-image boxes of about ``cut_h x cut_w`` centred uniformly in the image, clipped.

    Returns ``(mask[B, 1, H, W] bool, area[B] float)``.
    """
    cy = (_rand(B, g, dev) * H).floor()
    cx = (_rand(B, g, dev) * W).floor()
    y0 = (cy - cut_h // 2).clamp(0, H)
    y1 = (cy + cut_h - cut_h // 2).clamp(0, H)
    x0 = (cx - cut_w // 2).clamp(0, W)
    x1 = (cx + cut_w - cut_w // 2).clamp(0, W)
    ys = torch.arange(H, device=dev).view(1, H, 1)
    xs = torch.arange(W, device=dev).view(1, 1, W)
    inside = (ys >= y0.view(B, 1, 1)) & (ys < y1.view(B, 1, 1)) & (xs >= x0.view(B, 1, 1)) & (xs < x1.view(B, 1, 1))
    return inside.unsqueeze(1), (y1 - y0) * (x1 - x0)


def cutout(x: Tensor, size: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Set one ``size x size`` square per image (centre uniform, clipped at the border) to 0.

    Apply after normalisation, where 0 is the mean colour (DeVries & Taylor 2017).
    """
    B, _, H, W = x.shape
    side = torch.full((B,), float(size), device=x.device)
    inside, _ = _boxes(B, H, W, side, side, generator, x.device)
    return x.masked_fill(inside, 0.0)


def mix(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    generator: torch.Generator | None = None,
    return_lam: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Mixup and/or cutmix, per image, with the partner ``x.flip(0)``; soft labels.

    Each image ``i`` (partner ``j = B - 1 - i``; the middle image of an odd batch is its
    own partner and keeps ``lam = 1``) draws ``lam ~ Beta(alpha, alpha)`` (mixup ``alpha`` or cutmix
    ``alpha``; with both on, cutmix with probability ``switch_prob``), and with probability
    ``1 - mix_prob`` is left alone (``lam = 1``). Mixup: ``x_i <- lam x_i + (1 - lam) x_j``.
    Cutmix: a box of area about ``(1 - lam) H W`` (centre uniform, clipped at the border) is
    pasted from ``x_j``, and ``lam`` is corrected to ``1 - box area / (H W)``. Labels:
    ``lam onehot(y_i) + (1 - lam) onehot(y_j)``, each row summing to 1.

    Args:
        x: float ``Tensor[B, C, H, W]`` (normalised).
        y: int64 ``Tensor[B]`` class indices.

    Returns:
        ``(x_mixed float[B, C, H, W], soft float[B, num_classes])``, plus ``lam float[B]``
        (the weight of each image's own label) with ``return_lam=True``.
    """
    B, _, H, W = x.shape
    dev = x.device
    if not x.is_floating_point():
        raise TypeError(f"mix expects float images (normalised), got {x.dtype}")
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mix: mixup_alpha or cutmix_alpha must be > 0")
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cut = _rand(B, generator, dev) < switch_prob
    else:
        use_cut = torch.full((B,), cutmix_alpha > 0, device=dev)
    alpha = torch.where(use_cut, max(cutmix_alpha, 1e-8), max(mixup_alpha, 1e-8)).to(torch.float32)
    lam = _beta(alpha, generator)
    lam = torch.where(_rand(B, generator, dev) < mix_prob, lam, torch.ones_like(lam))
    # cutmix boxes (computed for every image; used where use_cut)
    ratio = torch.sqrt(1.0 - lam)
    box, area = _boxes(B, H, W, (H * ratio).floor(), (W * ratio).floor(), generator, dev)
    lam = torch.where(use_cut, 1.0 - area / (H * W), lam)
    # the middle image of an odd batch is its own partner: nothing is mixed in, so lam = 1
    pos = torch.arange(B, device=dev)
    lam = torch.where(pos == B - 1 - pos, torch.ones_like(lam), lam)
    partner = x.flip(0)
    mixed_up = torch.lerp(partner, x, lam.view(B, 1, 1, 1).to(x.dtype))  # exactly x where lam == 1
    cut = torch.where(box, partner, x)
    x_out = torch.where(use_cut.view(B, 1, 1, 1), cut, mixed_up)
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    soft = lam.view(B, 1) * onehot + (1.0 - lam).view(B, 1) * onehot.flip(0)
    if return_lam:
        return x_out, soft, lam
    return x_out, soft


def augment_batch(
    images: Tensor,
    labels: Tensor,
    augment: Augment | None,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    index: Tensor | None = None,
    num_classes: int = 10,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
    sync_free: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Gather, augment and normalise one batch on the device that holds ``images``.

    Args:
        images: uint8 ``Tensor[N, C, H, W]`` (the whole stored set, or one batch).
        labels: int64 ``Tensor[N]``.
        augment: settings; ``None`` = no augmentation (evaluation).
        index: int64 ``Tensor[B]`` rows forming the batch (default: all of ``images``).

    Returns:
        ``(x float32[B, C, H, W], y)``: ``y`` is int64 ``[B]``, or float ``[B, num_classes]``
        soft labels summing to 1 when ``augment`` mixes.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"augment_batch expects uint8 images, got {images.dtype}")
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(
            f"augment_batch: {images.shape[0]} images but {labels.shape[0]} labels (give one label per stored image)"
        )
    a = augment if augment is not None else Augment(crop_pad=0, flip=False)
    y = labels if index is None else labels[index]
    if a.crop_pad or a.flip:
        x = crop_flip(images, a.crop_pad, a.flip, index=index, pad_mode=a.pad_mode, generator=generator)
    else:
        x = images if index is None else images[index]
    if a.randaugment_n:
        xf = x.to(torch.float32).mul_(1.0 / 255.0)
        xf = randaugment(xf, a.randaugment_n, a.randaugment_m, ops=a.randaugment_ops, generator=generator, sync_free=sync_free)
        out = normalize(xf, mean, std, channels_last=channels_last)
    else:
        out = normalize(x, mean, std, channels_last=channels_last)  # uint8 -> float in one pass
    if a.cutout:
        out = cutout(out, a.cutout, generator=generator)
    if a.mixes:
        out, y = mix(
            out,
            y,
            num_classes,
            mixup_alpha=a.mixup_alpha,
            cutmix_alpha=a.cutmix_alpha,
            mix_prob=a.mix_prob,
            switch_prob=a.switch_prob,
            generator=generator,
        )[:2]
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)  # no-op unless an op changed it
    return out, y


# ---------------------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------------------


class DeviceLoader:
    """Batches of a uint8 image set that lives on ``device``, augmented there.

    >>> train = DeviceLoader(images, labels, 512, train=True, device="cuda",
    ...                      augment=Augment(randaugment_n=2), seed=0)
    >>> for epoch in range(epochs):
    ...     for x, y in train:          # x float32[B, 3, 32, 32], y int64[B]
    ...         loss = F.cross_entropy(model(x), y)

    Each pass (``iter``) is one epoch: with ``train=True`` a permutation drawn from a
    generator seeded by ``(seed, epoch)`` and augmentation; with ``train=False`` the stored
    order and no augmentation. :meth:`set_epoch` restarts the count (e.g. when resuming).

    Args:
        images: uint8 ``Tensor[N, C, H, W]``; copied to ``device`` once.
        labels: int64 ``Tensor[N]`` in ``[0, num_classes)``.
        batch_size: images per batch.
        train: shuffle and augment (else sequential, no augmentation).
        device: where the set lives and batches are made (default: ``images.device``).
        augment: :class:`Augment` settings, used when ``train``; ``None``: no augmentation.
        mean, std: per-channel statistics for normalisation (default: CIFAR-10's).
        seed: seed of the permutations and augmentation parameters.
        drop_last: drop the last incomplete batch (default: ``train``).
        channels_last: yield ``x`` in ``torch.channels_last`` memory format.
        num_classes: width of soft labels (default: 10).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str | None = None,
        augment: Augment | None = None,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        seed: int = 0,
        drop_last: bool | None = None,
        channels_last: bool = False,
        num_classes: int = 10,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"DeviceLoader: images must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"DeviceLoader: labels must be [N] with N = {images.shape[0]} images, got {list(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"DeviceLoader: batch_size must be >= 1, got {batch_size}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"DeviceLoader: labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"DeviceLoader: {images.shape[1]} channels but {len(mean)} means and {len(std)} stds")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device).contiguous()  # (N, C, H, W) uint8, on the device
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else None
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.num_classes = num_classes
        self.epoch = 0
        n = images.shape[0]
        if self.drop_last and 0 < n < batch_size:
            raise ValueError(
                f"DeviceLoader: {n} images < batch_size={batch_size} with drop_last=True gives no batches at all; "
                f"use a smaller batch_size or drop_last=False"
            )

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter`` produce epoch ``epoch`` (counting from 0)."""
        self.epoch = epoch

    def _generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return g

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # the epoch is taken when iteration starts (not at the first batch)
        g = self._generator(self.epoch)
        self.epoch += 1
        n = self.images.shape[0]
        if self.train:
            order = torch.randperm(n, generator=g, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        return self._batches(order, g)

    def _batches(self, order: Tensor, g: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield augment_batch(
                self.images,
                self.labels,
                self.augment,
                mean=self.mean,
                std=self.std,
                index=index,
                num_classes=self.num_classes,
                generator=g,
                channels_last=self.channels_last,
            )

    def __repr__(self) -> str:
        aug = self.augment.describe() if self.augment is not None else "none"
        return (
            f"DeviceLoader(n={self.images.shape[0]}, batch_size={self.batch_size}, train={self.train}, "
            f"device={self.device}, augment={aug}, batches={len(self)})"
        )


# ---------------------------------------------------------------------------------------
# reference: DataLoader + torchvision.transforms.v2, one image at a time
# ---------------------------------------------------------------------------------------


class _ImageDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` over uint8 ``images[N, C, H, W]`` held in memory."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[i]), self.labels[i]


class _MixCollate:
    """Default collate, then torchvision v2 MixUp/CutMix on the batch (picklable for workers)."""

    def __init__(self, augment: Augment, num_classes: int) -> None:
        from torchvision.transforms import v2

        choices = []
        if augment.mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=augment.mixup_alpha, num_classes=num_classes))
        if augment.cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=augment.cutmix_alpha, num_classes=num_classes))
        if len(choices) == 2:
            self.mix: Callable[..., tuple[Tensor, Tensor]] = v2.RandomChoice(
                choices, p=[1.0 - augment.switch_prob, augment.switch_prob]
            )
        else:
            self.mix = choices[0]

    def __call__(self, batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        x, y = torch.utils.data.default_collate(batch)
        return self.mix(x, y)


def reference_transforms(
    augment: Augment | None,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    size: int | tuple[int, int] = 32,
) -> Callable[[Tensor], Tensor]:
    """The per-image torchvision v2 pipeline matching ``augment`` (crop, flip, RandAugment,
    ToDtype, Normalize; cutout as ``RandomErasing`` is not reproduced)."""
    from torchvision.transforms import v2

    steps: list[Callable[..., Tensor]] = []
    if augment is not None:
        if augment.crop_pad:
            mode = "reflect" if augment.pad_mode == "reflect" else "constant"
            steps.append(v2.RandomCrop(size, padding=augment.crop_pad, padding_mode=mode))  # type: ignore[arg-type]
        if augment.flip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.randaugment_n:
            steps.append(v2.RandAugment(num_ops=augment.randaugment_n, magnitude=augment.randaugment_m))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def reference_loader(
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    *,
    augment: Augment | None,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = True,
    num_classes: int = 10,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """The conventional CPU pipeline: ``DataLoader`` + per-image ``torchvision.transforms.v2``.

    Batches are ``(x float32[B, C, H, W], y)`` on the CPU, ``y`` int64, or soft labels
    ``[B, num_classes]`` when ``augment`` mixes (v2 ``MixUp`` / ``CutMix`` on each batch).

    It is a baseline for speed, not a twin of :class:`DeviceLoader`: torchvision's MixUp /
    CutMix draw one ``lam`` per batch (partner: the batch rolled by one) and ignore
    ``mix_prob``; ``seed`` fixes the order (and, with ``workers > 0``, the workers' seeds),
    while with ``workers=0`` the transforms draw from torch's global generator.
    """
    size = (int(images.shape[-2]), int(images.shape[-1]))
    ds = _ImageDataset(images.cpu(), labels.cpu(), reference_transforms(augment, mean, std, size))
    g = torch.Generator()
    g.manual_seed(seed)
    collate = _MixCollate(augment, num_classes) if augment is not None and augment.mixes else None
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=drop_last,
        num_workers=workers,
        generator=g,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )

