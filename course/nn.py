"""Reference transformer blocks that later assignments build on (ViT, Swin, ...).

Not for assignment 02, whose students write these themselves. Layouts:
``B`` batch, ``T`` tokens (``Tq`` queries, ``Tk`` keys), ``C = d_model`` channels,
``nh`` heads, ``hs = C // nh`` head size.

Mask semantics everywhere (as in ``F.scaled_dot_product_attention``): a boolean mask is
True where a query *may attend* to a key; a float mask is *added* to the scores (use
``-inf`` to block). Either broadcasts to ``(B, nh, Tq, Tk)``: a causal mask is
``causal_mask(T)`` of shape ``(T, T)``, a key-padding mask ``keep[:, None, None, :]``.

Numeric fingerprint. The float32/float64 results of :func:`scaled_dot_product_attention`
(output and weights) and of :class:`MultiHeadAttention` (output) are moved one unit in the
last place toward zero (:func:`fingerprint`): a relative change below 1.2e-7 in float32, far
inside every tolerance, that no plain implementation reproduces. The graders of assignment
02 use it to recognise a submission that returns these references' results instead of its
own (``autograder/delegation.py``). Gradients pass through unchanged; other dtypes
(bfloat16, float16 under autocast) are left as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "scaled_dot_product_attention",
    "MultiHeadAttention",
    "sinusoidal_positional_encoding",
    "causal_mask",
    "MLP",
    "BlockConfig",
    "TransformerBlock",
    "fingerprint",
]


def fingerprint(t: Tensor) -> Tensor:
    """``t`` with every finite nonzero element moved one ulp toward zero (float32/float64 only).

    The forward value is exactly ``torch.nextafter(t, 0)``; the gradient is the identity
    (the shift is a detached constant). Zeros, infinities and NaNs are kept.
    """
    if t.dtype not in (torch.float32, torch.float64):
        return t
    base = t.detach()
    shift = torch.nextafter(base, base.new_zeros(())) - base  # exact (Sterbenz); NaN/inf where base is not finite
    return t + shift.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``softmax(q k^T / sqrt(d_k) + mask) v``, written out (the reference path).

    Args:
        q: ``Tensor[..., Tq, d_k]``; k: ``Tensor[..., Tk, d_k]``; v: ``Tensor[..., Tk, d_v]``.
        mask: bool (True = may attend) or additive float, broadcastable to ``[..., Tq, Tk]``.
        dropout_p: dropout on the attention weights.
        need_weights: also return the weights (before dropout).

    Returns:
        ``(out, weights)``: ``Tensor[..., Tq, d_v]`` and ``Tensor[..., Tq, Tk]`` or None.
        A query whose keys are all masked gets zero weights (and a zero output).
        Both carry the module's :func:`fingerprint` (one ulp toward zero).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., Tq, Tk)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = scores.softmax(dim=-1)
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)  # fully masked rows: 0, not NaN
    weights = weights.masked_fill(blocked, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    out = attn @ v  # (..., Tq, d_v)
    return fingerprint(out), (fingerprint(weights) if need_weights else None)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (``batch_first`` layouts).

    ``forward`` uses ``F.scaled_dot_product_attention`` (fused kernels) unless the
    weights are asked for, then the explicit reference path; both give the same output
    (within float rounding). The output carries the module's :func:`fingerprint`.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: Tensor) -> Tensor:
        B, T, C = x.size()
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``query: Tensor[B, Tq, C]``, ``key``/``value: Tensor[B, Tk, C]`` ->
        ``(Tensor[B, Tq, C], weights Tensor[B, nh, Tq, Tk] or None)``."""
        B, Tq, C = query.size()
        q = self._split(self.q_proj(query))  # (B, nh, Tq, hs)
        k = self._split(self.k_proj(key))  # (B, nh, Tk, hs)
        v = self._split(self.v_proj(value))  # (B, nh, Tk, hs)
        p = self.dropout if self.training else 0.0
        if need_weights:
            y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p, need_weights=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, Tq, hs)
            weights = None
        y = y.transpose(1, 2).contiguous().view(B, Tq, C)  # (B, Tq, C): heads side by side
        return fingerprint(self.out_proj(y)), weights


def sinusoidal_positional_encoding(max_len: int, d_model: int, base: float = 10000.0) -> Tensor:
    """``Tensor[max_len, d_model]`` with ``PE[t, 2i] = sin(t / base^(2i/d))``, ``PE[t, 2i+1] = cos(...)``."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(base) / d_model))  # (ceil(D/2),)
    angles = pos * freq  # (T, ceil(D/2))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe


def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """``BoolTensor[T, T]``, True on and below the diagonal: query t may attend to keys <= t."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


class MLP(nn.Module):
    """Position-wise feed-forward: ``Linear(C, d_ff) -> activation -> Linear(d_ff, C) -> dropout``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, not {activation!r}")
        self.fc1 = nn.Linear(d_model, d_ff)
        self.act = _ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[B, T, C] -> Tensor[B, T, C]``."""
        return self.dropout(self.fc2(self.act(self.fc1(x))))


@dataclass
class BlockConfig:
    d_model: int = 128  # channels C of the residual stream
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    d_ff: int = 512  # hidden width of the MLP (usually 4 * d_model)
    dropout: float = 0.0  # on attention weights, after attention and in the MLP
    norm_first: bool = True  # pre-norm (GPT-2, ViT) if True, post-norm (original Transformer) if False
    activation: str = "gelu"  # MLP nonlinearity: gelu, relu or gelu_tanh


class TransformerBlock(nn.Module):
    """Self-attention encoder block.

    pre-norm:  ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``
    post-norm: ``x = ln1(x + attn(x)); x = ln2(x + mlp(x))``
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, dropout=dropout, activation=activation)

    @classmethod
    def from_config(cls, cfg: BlockConfig) -> TransformerBlock:
        return cls(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.norm_first, cfg.activation)

    def _sa(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.drop(self.attn(x, x, x, mask=mask)[0])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``Tensor[B, T, C] -> Tensor[B, T, C]``; ``mask`` as in :class:`MultiHeadAttention`."""
        if self.norm_first:
            x = x + self._sa(self.ln1(x), mask)
            x = x + self.mlp(self.ln2(x))
        else:
            x = self.ln1(x + self._sa(x, mask))
            x = self.ln2(x + self.mlp(x))
        return x
