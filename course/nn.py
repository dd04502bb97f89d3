"""Reference transformer blocks: one home for the answers of assignment 02 (used by its grade
cells and hidden checks; the class's copy of ``course`` holds them only once 02 is closed,
see ``autograder/classroom.py``), the blocks later assignments build on (ViT, Swin, ...), and
adapters that load their weights into PyTorch's layers (``to_torch_mha`` ...). Layouts:
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
    "EncoderBlock",
    "DecoderBlock",
    "TransformerConfig",
    "Transformer",
    "to_torch_mha",
    "to_torch_encoder_layer",
    "to_torch_decoder_layer",
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
        self.head_dim = d_model // n_heads
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


# -- the encoder-decoder Transformer of assignment 02 (parameter names as in PyTorch's layers) -------------
class EncoderBlock(nn.Module):
    """Encoder block, parameters named as in ``nn.TransformerEncoderLayer`` (relu FFN):
    ``self_attn, linear1, linear2, norm1, norm2``; dropouts ``dropout`` (FFN hidden),
    ``dropout1`` (attention branch), ``dropout2`` (FFN branch).

    pre-norm:  ``x = x + Drop(SA(LN1(x))); x = x + FFN(LN2(x))``
    post-norm: ``x = LN1(x + Drop(SA(x))); x = LN2(x + FFN(x))``
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _sa_block(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x: Tensor[B, S, C]``, ``mask`` broadcastable to ``[B, nh, S, S]`` (True = may attend) -> ``[B, S, C]``."""
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), mask)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, mask))
        return self.norm2(x + self._ff_block(x))


class DecoderBlock(nn.Module):
    """Decoder block, parameters named as in ``nn.TransformerDecoderLayer`` except ``cross_attn``
    (PyTorch: ``multihead_attn``): ``self_attn, cross_attn, linear1, linear2, norm1..3``; dropouts
    ``dropout`` (FFN hidden), ``dropout1..3`` (the three branches). After each forward,
    ``cross_attn_weights`` holds the cross-attention weights ``Tensor[B, nh, T, S]`` (detached)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.cross_attn_weights: Tensor | None = None

    def _sa_block(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ca_block(self, x: Tensor, memory: Tensor, mask: Tensor | None) -> Tensor:
        out, weights = self.cross_attn(x, memory, memory, mask=mask, need_weights=True)
        self.cross_attn_weights = weights.detach()  # (B, nh, T, S)
        return self.dropout2(out)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        """``x: Tensor[B, T, C]``, ``memory: Tensor[B, S, C]``; masks broadcastable to ``[B, nh, T, T]``
        and ``[B, nh, T, S]`` -> ``Tensor[B, T, C]``."""
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask)
            x = x + self._ca_block(self.norm2(x), memory, memory_mask)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask))
        x = self.norm2(x + self._ca_block(x, memory, memory_mask))
        return self.norm3(x + self._ff_block(x))


@dataclass
class TransformerConfig:
    src_vocab_size: int  # number of source token ids (specials included)
    tgt_vocab_size: int  # number of target token ids (specials included)
    d_model: int = 256  # width C of the residual stream
    n_heads: int = 8  # attention heads; d_model % n_heads == 0
    n_layers: int = 3  # encoder blocks = decoder blocks = n_layers
    d_ff: int = 1024  # hidden width of the feed-forward networks
    dropout: float = 0.1  # on embeddings, attention weights, FFN hidden units and residual branches
    norm_first: bool = True  # pre-norm (True) or post-norm (False) blocks
    tie_weights: bool = True  # share the target embedding matrix with the output projection
    max_len: int = 256  # longest sequence the positional encoding covers
    pad_id: int = 0  # padding token id


class Transformer(nn.Module):
    """Encoder-decoder Transformer for translation: ``src: LongTensor[B, S]``, ``tgt: LongTensor[B, T]``
    -> logits ``Tensor[B, T, tgt_vocab_size]`` (``logits[:, t]`` predicts token ``t + 1``).

    Submodules ``src_embed, tgt_embed, encoder, decoder, enc_norm, dec_norm, generator``, the
    non-persistent buffer ``pe`` and ``dropout`` (on the embeddings). Token embeddings are scaled
    by ``sqrt(d_model)`` before ``pe[:T]`` is added."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model)
        self.register_buffer("pe", sinusoidal_positional_encoding(cfg.max_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        args = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.norm_first)
        self.encoder = nn.ModuleList([EncoderBlock(*args) for _ in range(cfg.n_layers)])
        self.decoder = nn.ModuleList([DecoderBlock(*args) for _ in range(cfg.n_layers)])
        self.enc_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.generator = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)
        if cfg.tie_weights:
            self.generator.weight = self.tgt_embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linear layers with zero bias; embeddings N(0, 1/d_model) (after the linears: tying)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=self.cfg.d_model ** -0.5)

    def src_mask(self, src: Tensor) -> Tensor:
        """``LongTensor[B, S]`` -> ``BoolTensor[B, 1, 1, S]``, True at real (non-pad) tokens."""
        return (src != self.cfg.pad_id)[:, None, None, :]

    def encode(self, src: Tensor) -> Tensor:
        x = self.dropout(self.src_embed(src) * math.sqrt(self.cfg.d_model) + self.pe[: src.size(1)])
        mask = self.src_mask(src)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_norm(x)

    def decode(self, tgt: Tensor, memory: Tensor, src: Tensor) -> Tensor:
        T = tgt.size(1)
        y = self.dropout(self.tgt_embed(tgt) * math.sqrt(self.cfg.d_model) + self.pe[:T])
        tgt_mask, memory_mask = causal_mask(T, device=tgt.device), self.src_mask(src)
        for block in self.decoder:
            y = block(y, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.generator(self.dec_norm(y))

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        return self.decode(tgt, self.encode(src), src)


# -- adapters: PyTorch's layers holding the weights of ours (tests compare against them) ---------------
def to_torch_mha(mha: nn.Module, ref: nn.MultiheadAttention | None = None) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention(batch_first=True)`` in eval mode holding the weights of ``mha``
    (anything with ``d_model``, ``n_heads`` and ``q_proj, k_proj, v_proj, out_proj``).

    Mapping: ``in_proj_weight = cat([q_proj.weight, k_proj.weight, v_proj.weight])`` (rows), the
    same for the biases, ``out_proj -> out_proj``. With ``ref``, copy into that module instead."""
    if ref is None:
        ref = nn.MultiheadAttention(mha.d_model, mha.n_heads, dropout=0.0, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()


def _copy_sublayers(block: nn.Module, ref: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        getattr(ref, name).load_state_dict(getattr(block, name).state_dict())


def to_torch_encoder_layer(block: nn.Module) -> nn.TransformerEncoderLayer:
    """``nn.TransformerEncoderLayer`` (batch_first, relu, same ``norm_first``) in eval mode with the
    weights of an :class:`EncoderBlock`: ``self_attn`` via :func:`to_torch_mha`, the rest by name."""
    ref = nn.TransformerEncoderLayer(block.linear1.in_features, block.self_attn.n_heads, block.linear1.out_features,
                                     dropout=0.0, activation="relu", batch_first=True, norm_first=block.norm_first)
    to_torch_mha(block.self_attn, ref.self_attn)
    _copy_sublayers(block, ref, ("linear1", "linear2", "norm1", "norm2"))
    return ref.eval()


def to_torch_decoder_layer(block: nn.Module) -> nn.TransformerDecoderLayer:
    """``nn.TransformerDecoderLayer`` (batch_first, relu, same ``norm_first``) in eval mode with the
    weights of a :class:`DecoderBlock`: ``cross_attn -> multihead_attn``, the rest by name."""
    ref = nn.TransformerDecoderLayer(block.linear1.in_features, block.self_attn.n_heads, block.linear1.out_features,
                                     dropout=0.0, activation="relu", batch_first=True, norm_first=block.norm_first)
    to_torch_mha(block.self_attn, ref.self_attn)
    to_torch_mha(block.cross_attn, ref.multihead_attn)
    _copy_sublayers(block, ref, ("linear1", "linear2", "norm1", "norm2", "norm3"))
    return ref.eval()
