"""The Swin Transformer (Liu et al., 2021): the course's answers to assignment 05, and the adapter that loads
``torchvision.models.SwinTransformer``'s weights into them.

Attention within ``M x M`` windows costs ``M^2 * HW`` instead of ``(HW)^2``; every other block shifts the windows
by ``M // 2`` (a cyclic roll of the feature map, so the window count stays the same) so that information crosses
window borders, with a mask that keeps apart pixels the roll brought together from opposite sides of the map. The
logits get a learned bias per relative position: ``softmax(Q K^T / sqrt(d) + B) V``, ``B`` read from a table of
``(2M - 1)^2`` entries per head. Between stages, patch merging concatenates each ``2 x 2`` neighbourhood
(``4C`` channels) and maps it to ``2C``.

Layouts (channels last, as torchvision's Swin): feature maps ``Tensor[B, H, W, C]``; windows
``Tensor[B * nW, M * M, C]`` with ``nW = (H / M) (W / M)`` windows in raster order (batch first, then window row,
then window column) and the ``M * M`` pixels of a window in raster order; the relative position index
``LongTensor[M*M, M*M]``: entry ``(i, j)`` is ``(dy + M - 1) * (2M - 1) + (dx + M - 1)`` with ``(dy, dx)`` the
position of pixel ``i`` minus that of pixel ``j`` in the window; the bias table ``Tensor[(2M-1)^2, heads]``; the
shift mask ``Tensor[nW, M*M, M*M]``, 0 where two pixels of a window came from the same region of the unshifted map,
-100 elsewhere (torchvision's value: after the softmax as good as -inf, and never NaN).

Parameter names follow torchvision's blocks (``norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
norm2, mlp.0, mlp.3``; ``PatchMerging``: ``norm, reduction``); :func:`torchvision_names` maps the whole network's.
Withheld from the student copy while assignment 05 is open, except the adapters (:mod:`autograder.classroom`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["window_partition", "window_reverse", "relative_position_index", "shift_mask", "shifted_window_attention",
           "ShiftedWindowAttention", "PatchMerging", "SwinBlock", "Swin", "torchvision_names",
           "load_torchvision_weights"]

MASKED = -100.0  # the logit added between pixels of different regions (torchvision's value)


# ---------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------
def window_partition(x: Tensor, window: int) -> Tensor:
    """``Tensor[B, H, W, C] -> Tensor[B * nW, M * M, C]``; ``H`` and ``W`` multiples of ``M = window``."""
    B, H, W, C = x.shape
    M = window
    if H % M or W % M:
        raise ValueError(f"a {H}x{W} map is not a whole number of {M}x{M} windows")
    x = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/M, W/M, M, M, C)
    return x.reshape(B * (H // M) * (W // M), M * M, C)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """The inverse of :func:`window_partition`: ``Tensor[B * nW, M * M, C] -> Tensor[B, H, W, C]``."""
    M, C = window, windows.shape[-1]
    B = windows.shape[0] // ((H // M) * (W // M))
    x = windows.view(B, H // M, W // M, M, M, C).permute(0, 1, 3, 2, 4, 5)  # (B, H/M, M, W/M, M, C)
    return x.reshape(B, H, W, C)


def relative_position_index(window: int) -> Tensor:
    """``LongTensor[M*M, M*M]``: the row of the bias table for every (query pixel, key pixel) pair of a window."""
    M = window
    coords = torch.stack(torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")).flatten(1)  # (2, M*M)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M): query minus key, in -(M-1)..M-1
    return (rel[0] + M - 1) * (2 * M - 1) + (rel[1] + M - 1)


def shift_mask(H: int, W: int, window: int, shift: int | tuple[int, int],
               device: torch.device | str | None = None) -> Tensor:
    """``Tensor[nW, M*M, M*M]`` for an ``H x W`` map (multiples of ``M``) rolled by ``-shift`` (one value for both
    axes, or ``(rows, columns)``; 0: that axis is not rolled): 0 where query and key pixel come from the same
    region of the unrolled map, ``MASKED`` elsewhere.

    Along a rolled axis the regions are the ranges ``[0, H-M), [H-M, H-shift), [H-shift, H)``: after the roll the
    last row (column) of windows holds pixels of the first and the last range, which were far apart."""
    M = window
    sy, sx = (shift, shift) if isinstance(shift, int) else shift
    rows = ((0, -M), (-M, -sy), (-sy, None)) if sy else ((0, None),)
    cols = ((0, -M), (-M, -sx), (-sx, None)) if sx else ((0, None),)
    region = torch.zeros(H, W, device=device)
    label = 0
    for r in rows:
        for c in cols:
            region[r[0]:r[1], c[0]:c[1]] = label
            label += 1
    lab = window_partition(region[None, :, :, None], M).squeeze(-1)  # (nW, M*M)
    same = lab[:, :, None] == lab[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, MASKED)


# ---------------------------------------------------------------------------------------------------
# (shifted) window attention
# ---------------------------------------------------------------------------------------------------
def shifted_window_attention(x: Tensor, qkv_weight: Tensor, proj_weight: Tensor, bias_table: Tensor, window: int,
                             heads: int, shift: int = 0, qkv_bias: Tensor | None = None,
                             proj_bias: Tensor | None = None) -> Tensor:
    """Multi-head self-attention within ``M x M`` windows of ``x: Tensor[B, H, W, C]``, rolled by ``shift`` first
    (and back after), with the relative position bias ``bias_table[relative_position_index(M)]``:
    ``Tensor[B, H, W, C]``.

    A map that is not a whole number of windows is padded with zeros at the bottom and right (the padding attends
    and is attended like any pixel, as in torchvision) and cropped back; a map no larger than one window is not
    shifted. ``qkv_weight: [3C, C]`` gives queries, keys and values (in that order, heads side by side in each);
    ``proj_weight: [C, C]``; ``bias_table: [(2M-1)^2, heads]``."""
    B, H, W, C = x.shape
    M, d = window, C // heads
    x = F.pad(x, (0, 0, 0, (M - W % M) % M, 0, (M - H % M) % M))
    Hp, Wp = x.shape[1], x.shape[2]
    sy, sx = (shift if M < Hp else 0), (shift if M < Wp else 0)
    if sy or sx:
        x = torch.roll(x, shifts=(-sy, -sx), dims=(1, 2))
    win = window_partition(x, M)  # (B*nW, M*M, C)
    qkv = F.linear(win, qkv_weight, qkv_bias).view(win.shape[0], M * M, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # each (B*nW, heads, M*M, d)
    logits = (q * d ** -0.5) @ k.transpose(-2, -1)  # (B*nW, heads, M*M, M*M)
    logits = logits + bias_table[relative_position_index(M).to(x.device)].permute(2, 0, 1)  # + (heads, M*M, M*M)
    if sy or sx:
        mask = shift_mask(Hp, Wp, M, (sy, sx), device=x.device)  # (nW, M*M, M*M)
        nW = mask.shape[0]
        logits = (logits.view(B, nW, heads, M * M, M * M) + mask[None, :, None]).view_as(logits)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(win.shape[0], M * M, C)  # heads side by side
    out = window_reverse(F.linear(out, proj_weight, proj_bias), M, Hp, Wp)
    if sy or sx:
        out = torch.roll(out, shifts=(sy, sx), dims=(1, 2))
    return out[:, :H, :W].contiguous()


class ShiftedWindowAttention(nn.Module):
    """(Shifted) window attention as a layer, ``Tensor[B, H, W, C] -> Tensor[B, H, W, C]``: ``qkv``
    (``nn.Linear(C, 3C)``), ``proj`` (``nn.Linear(C, C)``), ``relative_position_bias_table``
    (``Parameter[(2M-1)^2, heads]``, truncated normal, std 0.02) and the buffer ``relative_position_index``
    (flattened, ``[M^4]``), named as torchvision's."""

    def __init__(self, dim: int, window: int, heads: int, shift: int = 0) -> None:
        super().__init__()
        self.window, self.heads, self.shift = window, heads, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window).flatten())

    def forward(self, x: Tensor) -> Tensor:
        return shifted_window_attention(x, self.qkv.weight, self.proj.weight, self.relative_position_bias_table,
                                        self.window, self.heads, self.shift, self.qkv.bias, self.proj.bias)


# ---------------------------------------------------------------------------------------------------
# patch merging, the block, the network
# ---------------------------------------------------------------------------------------------------
class PatchMerging(nn.Module):
    """``Tensor[B, H, W, C] -> Tensor[B, ceil(H/2), ceil(W/2), 2C]``: each 2 x 2 neighbourhood's four pixels
    concatenated as ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (row offset first varying: torchvision's order), an odd
    side padded with zeros, then ``norm`` (LayerNorm(4C)) and ``reduction`` (``nn.Linear(4C, 2C, bias=False)``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinBlock(nn.Module):
    """Pre-norm block, ``Tensor[B, H, W, C] -> Tensor[B, H, W, C]``: ``x = x + attn(norm1(x));
    x = x + mlp(norm2(x))`` with ``attn`` a :class:`ShiftedWindowAttention` (``shift`` 0 or ``M // 2``) and
    ``mlp = Sequential(Linear(C, r C), GELU(), Dropout, Linear(r C, C), Dropout)``."""

    def __init__(self, dim: int, heads: int, window: int, shift: int = 0, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, window, heads, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    """A small Swin for CIFAR: ``Tensor[B, 3, H, W] -> logits Tensor[B, num_classes]``.

    ``patch_embed`` (``Conv2d(C_in, dim, p, stride=p)``, read channels last) and ``patch_norm`` (LayerNorm);
    ``stages``: an ``nn.ModuleList`` of ``nn.Sequential`` of :class:`SwinBlock` (stage ``s`` of width
    ``dim * 2**s`` with ``heads[s]`` heads; blocks alternate shift 0 and ``window // 2``); ``merges``: a
    :class:`PatchMerging` after every stage but the last; ``norm`` (LayerNorm), the mean over all positions, and
    ``head`` (``nn.Linear``)."""

    def __init__(self, patch_size: int = 2, in_channels: int = 3, num_classes: int = 10, dim: int = 64,
                 depths: tuple[int, ...] = (2, 2, 2), heads: tuple[int, ...] = (2, 4, 8), window: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError(f"one number of heads per stage: depths {depths}, heads {heads}")
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(dim)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s, (depth, nh) in enumerate(zip(depths, heads)):
            width = dim * 2 ** s
            self.stages.append(nn.Sequential(*[SwinBlock(width, nh, window, 0 if i % 2 == 0 else window // 2,
                                                         mlp_ratio, dropout) for i in range(depth)]))
            if s < len(depths) - 1:
                self.merges.append(PatchMerging(width))
        self.norm = nn.LayerNorm(dim * 2 ** (len(depths) - 1))
        self.head = nn.Linear(dim * 2 ** (len(depths) - 1), num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_norm(self.patch_embed(images).permute(0, 2, 3, 1))  # (B, H/p, W/p, dim)
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if s < len(self.merges):
                x = self.merges[s](x)
        return self.head(self.norm(x).mean(dim=(1, 2)))


# ---------------------------------------------------------------------------------------------------
# the adapter: torchvision's names -> ours (answers nothing; ships with the student copy)
# ---------------------------------------------------------------------------------------------------
_BLOCK = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
          "attn.relative_position_bias_table", "norm2.weight", "norm2.bias", "mlp.0.weight", "mlp.0.bias",
          "mlp.3.weight", "mlp.3.bias")


def torchvision_names(depths: tuple[int, ...]) -> dict[str, str]:
    """The parameter names of the notebook's :class:`Swin` with ``depths``, each with the name of the same
    parameter in ``torchvision.models.SwinTransformer`` (``features.0`` the patch embedding, then a stage and a
    patch merging in turn, ``norm``, ``head``)."""
    names = {"patch_embed.weight": "features.0.0.weight", "patch_embed.bias": "features.0.0.bias",
             "patch_norm.weight": "features.0.2.weight", "patch_norm.bias": "features.0.2.bias",
             "norm.weight": "norm.weight", "norm.bias": "norm.bias",
             "head.weight": "head.weight", "head.bias": "head.bias"}
    for s, depth in enumerate(depths):
        for i in range(depth):
            names.update({f"stages.{s}.{i}.{n}": f"features.{1 + 2 * s}.{i}.{n}" for n in _BLOCK})
        if s < len(depths) - 1:
            names.update({f"merges.{s}.{n}": f"features.{2 + 2 * s}.{n}"
                          for n in ("norm.weight", "norm.bias", "reduction.weight")})
    return names


def load_torchvision_weights(model: nn.Module, tv: nn.Module) -> nn.Module:
    """Copy the weights of a ``torchvision.models.SwinTransformer`` ``tv`` (stochastic depth 0) into ``model``, a
    Swin with the notebook's names and the same sizes, and return ``model``. Buffers (the relative position
    index) are the model's own. Raises ``ValueError`` naming what is missing, left over or of another shape."""
    theirs = tv.state_dict()
    depths = []
    while any(k.startswith(f"features.{1 + 2 * len(depths)}.") for k in theirs):
        s = 1 + 2 * len(depths)
        depths.append(len({k.split(".")[2] for k in theirs if k.startswith(f"features.{s}.")}))
    names = torchvision_names(tuple(depths))
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("relative_position_index")}
    missing = [n for n in names if n not in ours]
    extra = [n for n in ours if n not in names]
    if missing or extra:
        raise ValueError(f"the model's parameters are not those of the notebook's Swin (depths {tuple(depths)}): "
                         f"missing {missing[:6]}, unexpected {extra[:6]}")
    state = {}
    for n, t in names.items():
        if theirs[t].shape != ours[n].shape:
            raise ValueError(f"{n}: shape {list(ours[n].shape)} in the model, {list(theirs[t].shape)} in "
                             f"torchvision's {t}")
        state[n] = theirs[t]
    model.load_state_dict(state, strict=False)
    return model
