"""Local self-attention for images: the course's answers to assignment 03.

Stand-alone self-attention (Ramachandran et al., 2019): every pixel ``(i, j)`` attends to the
``K x K`` neighbourhood ``N_K(i, j)`` around it,

    y_ij = sum_{(a, b) in N_K(i, j)} softmax_ab(q_ij . k_ab + q_ij . r_{a-i, b-j}) v_ab,

where ``r_{a-i, b-j}`` is the concatenation of a row-offset embedding (first half of the channels)
and a column-offset embedding (second half). Positions of the neighbourhood that fall outside the
image are never attended (weight exactly 0); there is no 1/sqrt(d) scale (the paper has none).

Layouts (``N`` heads, ``D`` channels per head, ``K`` the odd kernel size, ``P = K // 2``):

- ``q, k, v``: ``Tensor[B, N, D, H, W]``;
- ``rel_h, rel_w``: ``Tensor[N, K, D // 2]``: ``rel_h[n, P + dy]`` embeds the row offset ``dy`` in
  ``-P..P``, ``rel_w[n, P + dx]`` the column offset;
- attention weights: ``Tensor[B, N, H, W, K, K]``: ``weights[..., i, j, P + dy, P + dx]`` is the
  weight pixel ``(i, j)`` gives to pixel ``(i + dy, j + dx)``.

Also here: the layer (:class:`LocalAttention2d`), the non-local block of Wang et al. (2018), and the
CIFAR ResNet whose 3x3 convolutions can be replaced by local attention. Withheld from the student copy
while assignment 03 is open (:mod:`autograder.classroom`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["local_attention_naive", "local_attention", "local_attention_chunked", "LocalAttention2d",
           "NonLocalBlock", "ResBlock", "ResNet"]


def _check_args(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if q.dim() != 5 or q.shape != k.shape or q.shape[:2] + q.shape[3:] != v.shape[:2] + v.shape[3:]:
        raise ValueError("q, k, v must be [B, N, D, H, W] (v may have another D)")
    N, D = q.shape[1], q.shape[2]
    if D % 2:
        raise ValueError(f"the channels per head D={D} must be even (half rows, half columns)")
    if rel_h.shape != (N, kernel_size, D // 2) or rel_w.shape != (N, kernel_size, D // 2):
        raise ValueError(f"rel_h and rel_w must be [N, K, D // 2] = {[N, kernel_size, D // 2]}")


def local_attention_naive(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                          kernel_size: int) -> tuple[Tensor, Tensor]:
    """The definition, with loops over pixels and offsets: ``(out [B, N, Dv, H, W], weights [B, N, H, W, K, K])``."""
    _check_args(q, k, v, rel_h, rel_w, kernel_size)
    B, N, D, H, W = q.shape
    P = kernel_size // 2
    out = q.new_zeros(B, N, v.shape[2], H, W)
    weights = q.new_zeros(B, N, H, W, kernel_size, kernel_size)
    for i in range(H):
        for j in range(W):
            qij = q[:, :, :, i, j]  # (B, N, D)
            logits, values, where = [], [], []
            for dy in range(-P, P + 1):
                for dx in range(-P, P + 1):
                    a, b = i + dy, j + dx
                    if not (0 <= a < H and 0 <= b < W):
                        continue  # outside the image: never attended
                    r = torch.cat([rel_h[:, P + dy], rel_w[:, P + dx]], -1)  # (N, D)
                    logits.append((qij * (k[:, :, :, a, b] + r)).sum(-1))  # (B, N)
                    values.append(v[:, :, :, a, b])  # (B, N, Dv)
                    where.append((P + dy, P + dx))
            a_ = torch.stack(logits, -1).softmax(-1)  # (B, N, n)
            out[:, :, :, i, j] = (a_.unsqueeze(-1) * torch.stack(values, 2)).sum(2)
            for t, (y, x) in enumerate(where):
                weights[:, :, i, j, y, x] = a_[..., t]
    return out, weights


def local_attention(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                    kernel_size: int) -> tuple[Tensor, Tensor]:
    """Vectorised local attention: ``(out, weights)`` as :func:`local_attention_naive`.

    The keys and values are zero-padded by ``P`` and unfolded (``F.unfold``) into the ``K*K``
    neighbours of every pixel; neighbours outside the image get logit ``-inf``. Memory: the unfolded
    keys and values are ``K*K`` times the input, ``B * N * D * K*K * H * W`` elements each.
    """
    _check_args(q, k, v, rel_h, rel_w, kernel_size)
    B, N, D, H, W = q.shape
    K, P, half = kernel_size, kernel_size // 2, D // 2

    def neighbours(x: Tensor) -> Tensor:  # (B, N, C, H, W) -> (B, N, C, K*K, H, W), zero outside
        C = x.shape[2]
        cols = F.unfold(x.reshape(B * N, C, H, W), K, padding=P)  # (BN, C*K*K, H*W)
        return cols.view(B, N, C, K * K, H, W)

    logits = torch.einsum("bndhw,bndphw->bnphw", q, neighbours(k))  # content: q . k_ab, (B, N, K*K, H, W)
    lh = torch.einsum("bndhw,nyd->bnyhw", q[:, :, :half], rel_h)  # rows:    q[:D/2] . rel_h[dy]
    lw = torch.einsum("bndhw,nxd->bnxhw", q[:, :, half:], rel_w)  # columns: q[D/2:] . rel_w[dx]
    logits = logits + (lh[:, :, :, None] + lw[:, :, None, :]).flatten(2, 3)  # (B, N, K*K, H, W)
    inside = F.unfold(q.new_ones(1, 1, H, W), K, padding=P).view(K * K, H, W).bool()  # (K*K, H, W)
    weights = logits.masked_fill(~inside, float("-inf")).softmax(2)
    out = torch.einsum("bnphw,bndphw->bndhw", weights, neighbours(v))  # (B, N, Dv, H, W)
    return out, weights.view(B, N, K, K, H, W).permute(0, 1, 4, 5, 2, 3)  # weights (B, N, H, W, K, K)


def local_attention_chunked(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                            kernel_size: int, chunk: int) -> Tensor:
    """:func:`local_attention`'s output, ``chunk`` rows at a time. Returns ``out`` only.

    Rows ``r .. r + chunk - 1`` only see rows ``r - P .. r + chunk - 1 + P``: local attention over that
    slab gives them exactly (the slab's edges are either the image's or more than ``P`` rows away), and
    its unfolded neighbourhoods are ``(chunk + 2P) / H`` of the whole image's. When a gradient will be
    needed, each slab is recomputed in the backward pass (``torch.utils.checkpoint``) instead of keeping
    its unfolded neighbourhoods alive until then.
    """
    _check_args(q, k, v, rel_h, rel_w, kernel_size)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    H, P = q.shape[3], kernel_size // 2
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, rel_h, rel_w))

    def rows(r: int, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tensor:
        lo, hi = max(r - P, 0), min(r + chunk + P, H)  # the slab
        out, _ = local_attention(q[:, :, :, lo:hi], k[:, :, :, lo:hi], v[:, :, :, lo:hi], rel_h, rel_w, kernel_size)
        return out[:, :, :, r - lo:min(r + chunk, H) - lo]  # its rows r .. r + chunk - 1

    outs = [checkpoint(rows, r, q, k, v, rel_h, rel_w, use_reentrant=False) if training
            else rows(r, q, k, v, rel_h, rel_w) for r in range(0, H, chunk)]
    return torch.cat(outs, 3)  # (B, N, Dv, H, W)


class LocalAttention2d(nn.Module):
    """A stand-alone self-attention layer: a drop-in for a stride-1 ``K x K`` convolution.

    ``x [B, C_in, H, W] -> y [B, C_out, H, W]``: 1x1 projections (no bias) to queries, keys and values,
    split into ``heads`` heads of ``D = C_out // heads`` channels, local attention with relative
    embeddings ``rel_h, rel_w [heads, K, D // 2]``, heads concatenated. ``chunk``: rows at a time
    (:func:`local_attention_chunked`), ``None`` for all at once.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7, heads: int = 8,
                 chunk: int | None = None) -> None:
        super().__init__()
        if out_channels % heads or (out_channels // heads) % 2:
            raise ValueError(f"out_channels={out_channels} must split into {heads} heads of an even size")
        self.kernel_size, self.heads, self.chunk = kernel_size, heads, chunk
        D = out_channels // heads
        self.q_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.k_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.v_proj = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(heads, kernel_size, D // 2))
        self.rel_w = nn.Parameter(torch.randn(heads, kernel_size, D // 2))

    def _split(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        return x.view(B, self.heads, C // self.heads, H, W)  # (B, N, D, H, W)

    def forward(self, x: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        q, k, v = (self._split(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))
        if return_weights or self.chunk is None:
            out, weights = local_attention(q, k, v, self.rel_h, self.rel_w, self.kernel_size)
        else:
            out = local_attention_chunked(q, k, v, self.rel_h, self.rel_w, self.kernel_size, self.chunk)
        y = out.flatten(1, 2)  # (B, C_out, H, W)
        return (y, weights) if return_weights else y


class NonLocalBlock(nn.Module):
    """Wang et al.'s non-local block (embedded Gaussian), attention between all pixels:

    ``z = x + BN(W_z (softmax(theta(x)^T phi(x)) g(x)))``, with 1x1 convolutions ``theta, phi, g``
    to ``inner = channels // 2`` channels and ``W_z`` back. The BN's scale starts at zero, so the
    block starts as the identity and can be inserted into a trained network. ``x [B, C, H, W]``;
    memory ``B * (H * W)^2`` for the weights.
    """

    def __init__(self, channels: int, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.W_z = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, inner)
        phi = self.phi(x).flatten(2)  # (B, inner, HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, HW, inner)
        f = (theta @ phi).softmax(-1)  # (B, HW, HW): row i over all positions j
        y = (f @ g).transpose(1, 2).reshape(B, -1, H, W)  # (B, inner, H, W)
        return x + self.bn(self.W_z(y))


def _spatial(in_ch: int, out_ch: int, stride: int, mixer: str, kernel_size: int, heads: int) -> nn.Module:
    """The block's spatial mixing: a 3x3 convolution, or local attention (then 2x2 average pooling for stride 2)."""
    if mixer == "conv":
        return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
    if mixer == "attention":
        attn = LocalAttention2d(in_ch, out_ch, kernel_size, heads)
        return attn if stride == 1 else nn.Sequential(attn, nn.AvgPool2d(stride))
    raise ValueError(f"mixer must be 'conv' or 'attention', got {mixer!r}")


class ResBlock(nn.Module):
    """A basic residual block, ``relu(bn2(mix2(relu(bn1(mix1(x))))) + shortcut(x))``, whose two spatial
    layers are 3x3 convolutions (``mixer="conv"``) or local attention (``mixer="attention"``).
    ``x [B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``; the shortcut is the identity when the
    shape is kept, else (2x2 average pooling and) a 1x1 convolution with BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, mixer: str = "conv",
                 kernel_size: int = 5, heads: int = 4) -> None:
        super().__init__()
        self.mix1 = _spatial(in_channels, out_channels, stride, mixer, kernel_size, heads)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.mix2 = _spatial(out_channels, out_channels, 1, mixer, kernel_size, heads)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            pool = [nn.AvgPool2d(stride)] if stride != 1 else []
            self.shortcut = nn.Sequential(*pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.mix1(x)))
        return F.relu(self.bn2(self.mix2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR ResNet: a stem (3x3 conv, BN, ReLU), one stage per width (the first at full resolution, each next one
    halving it), global average pooling and a linear classifier. ``mixer`` picks the blocks' spatial
    layers; ``non_local`` inserts a :class:`NonLocalBlock` after that stage (index into ``widths``).
    ``x [B, 3, H, W] -> logits [B, num_classes]``."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256), depths: tuple[int, ...] = (2, 2, 2),
                 mixer: str = "conv", kernel_size: int = 5, heads: int = 4, non_local: int | None = None,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages, in_ch = [], widths[0]
        for s, (width, depth) in enumerate(zip(widths, depths)):
            blocks: list[nn.Module] = []
            for d in range(depth):
                stride = 2 if s > 0 and d == 0 else 1
                blocks.append(ResBlock(in_ch, width, stride, mixer, kernel_size, heads))
                in_ch = width
            if non_local == s:
                blocks.append(NonLocalBlock(width))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.head(x.mean((2, 3)))
