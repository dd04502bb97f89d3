try:
    from IPython.display import display
except ImportError:  # no Jupyter here: figures are only saved
    def display(*objs, **kwargs):
        pass
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch._dynamo  # noqa: F401  (the first optimizer step imports it: ~1 s, paid here once)
import torch.nn as nn
import torch.nn.functional as F

import course.nn  # reference blocks: used by the grade cells only, never in your code
from course import plots
from course.data import (TranslationBatch, Vocab, detokenize, encode_pairs, load_multi30k,
                         make_batches, synthetic_multi30k_root, tokenize)
from course.device import Timer, autocast, get_device, peak_memory_mb, reset_peak_memory, seed_everything
from course.profile import describe, pick, profile
from course.results import record
from course.testing import (check_causal, check_close, check_no_delegation, check_permutation_equivariance,
                            check_rows_sum_to_one, check_shape, check_zero_where, passed, rel_error, seeded)
from course.train import cosine_with_warmup, count_parameters, fit

if profile() == "quick":
    # tiny tensors while grading: one thread is as fast and avoids oversubscribing a busy machine
    torch.set_num_threads(1)
print(describe())
device = get_device()
seed_everything(0)


@contextmanager
def substituted(**objects):
    """Temporarily replace names of this notebook, e.g. ``substituted(causal_mask=course.nn.causal_mask)``.

    The grade cells use it to grade one exercise with reference versions of the pieces it builds on,
    so that a mistake in an earlier exercise does not cost points twice.
    """
    g = globals()
    missing = object()
    saved = {name: g.get(name, missing) for name in objects}
    g.update(objects)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                g.pop(name, None)
            else:
                g[name] = value


def reference_attention(q, k, v, mask=None, dropout_p=0.0):
    """The reference for exercise 1: ``course.nn.scaled_dot_product_attention`` returning its weights."""
    return course.nn.scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p, need_weights=True)

# ---- next cell ----
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """softmax(q k^T / sqrt(d_k) + mask) v.

    Args:
        q: Tensor[..., Tq, d_k] queries.
        k: Tensor[..., Tk, d_k] keys.
        v: Tensor[..., Tk, d_v] values.
        mask: None; a BoolTensor broadcastable to [..., Tq, Tk], True where a query may attend to a key;
            or a float tensor broadcastable to [..., Tq, Tk] that is added to the scores.
        dropout_p: dropout probability on the attention weights (0.0 when evaluating).

    Returns:
        out: Tensor[..., Tq, d_v].
        weights: Tensor[..., Tq, Tk], every row sums to 1 (all zero for a fully masked row), before dropout.
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., Tq, Tk)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    # a query whose keys are all masked: softmax(-inf, ..., -inf) = 0/0 = NaN -> define as 0
    blocked = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., Tq, 1)
    weights = weights.masked_fill(blocked, 0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    out = attn @ v  # (..., Tq, d_v)
    return out, weights

# ---- next cell ----
with seeded(0):
    B, nh, Tq, Tk, d_k, d_v = 2, 3, 5, 7, 8, 4
    q, k, v = torch.randn(B, nh, Tq, d_k), torch.randn(B, nh, Tk, d_k), torch.randn(B, nh, Tk, d_v)
    dims = ("batch", "head", "query", "key")

    # no mask
    out, w = scaled_dot_product_attention(q, k, v)
    check_shape(out, (B, nh, Tq, d_v), "out")
    check_shape(w, (B, nh, Tq, Tk), "weights")
    check_rows_sum_to_one(w, name="weights", dims=dims)
    check_close(out, F.scaled_dot_product_attention(q, k, v), name="out (no mask)",
                dims=("batch", "head", "query", "channel"), hint="did you scale by sqrt(d_k)?")

    # boolean padding mask: sentence 0 has 7 keys, sentence 1 only 4
    lengths = torch.tensor([7, 4])
    keep = torch.arange(Tk)[None, :] < lengths[:, None]  # (B, Tk), True = real token
    pad_mask = keep[:, None, None, :]                    # (B, 1, 1, Tk)
    out, w = scaled_dot_product_attention(q, k, v, mask=pad_mask)
    check_zero_where(w, ~pad_mask, name="weights", what="padded keys", dims=dims)
    check_rows_sum_to_one(w, name="weights (padding mask)", dims=dims)
    check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=pad_mask), name="out (padding mask)",
                dims=("batch", "head", "query", "channel"), hint="True in a boolean mask means 'may attend'")

    # additive float mask
    bias = torch.randn(Tq, Tk)
    out, w = scaled_dot_product_attention(q, k, v, mask=bias)
    check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), name="out (float mask)",
                dims=("batch", "head", "query", "channel"), hint="a float mask is added to the scaled scores")

    # a fully masked query row: zeros, not NaN
    m = torch.ones(Tq, Tk, dtype=torch.bool)
    m[2] = False
    out, w = scaled_dot_product_attention(q, k, v, mask=m)
    check_close(w[:, :, 2], torch.zeros(B, nh, Tk), name="weights of the fully masked query 2",
                hint="replace the NaN of softmax(-inf, ..., -inf) by 0")
    check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), name="out (fully masked row)")
passed("scaled_dot_product_attention", 9)

# ---- next cell ----
with seeded(1):
    q, k, v = torch.randn(3, 4, 16), torch.randn(3, 6, 16), torch.randn(3, 6, 5)
    out, w = scaled_dot_product_attention(q, k, v)
    assert out.shape == (3, 4, 5) and w.shape == (3, 4, 6), "wrong output shapes"
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5), "out differs from F.sdpa"
    assert torch.allclose(w.sum(-1), torch.ones(3, 4), atol=1e-5), "weights do not sum to 1"
passed("grade: scaled_dot_product_attention")

# ---- next cell ----
with seeded(0):
    print(f"{'d_k':>5} {'std(q.k)':>9} {'std(q.k/sqrt(d_k))':>19} {'max weight, raw':>16} {'max weight, scaled':>19}")
    for d_k in (4, 16, 64, 256, 1024):
        q, k = torch.randn(200, 1, d_k), torch.randn(200, 32, d_k)  # 200 queries, 32 keys each
        s = (q @ k.transpose(-2, -1)).squeeze(1)  # (200, 32) raw scores
        print(f"{d_k:5d} {s.std():9.2f} {(s / math.sqrt(d_k)).std():19.2f} "
              f"{s.softmax(-1).max(-1).values.mean():16.3f} {(s / math.sqrt(d_k)).softmax(-1).max(-1).values.mean():19.3f}")

# ---- next cell ----
class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first.

    Attributes:
        q_proj, k_proj, v_proj, out_proj: nn.Linear(d_model, d_model), with bias.
        d_model, n_heads, head_dim (= d_model // n_heads), dropout (probability on the attention weights).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None, need_weights=False):
        """
        Args:
            query: Tensor[B, Tq, C]; key, value: Tensor[B, Tk, C].
            mask: as in scaled_dot_product_attention, broadcastable to [B, nh, Tq, Tk]
                (e.g. a causal mask [Tq, Tk] or a padding mask [B, 1, 1, Tk]; True = may attend).
            need_weights: also return the attention weights of every head.

        Returns:
            out: Tensor[B, Tq, C].
            weights: Tensor[B, nh, Tq, Tk] if need_weights else None.
        """
        B, Tq, C = query.shape
        Tk = key.size(1)
        q = self.q_proj(query).view(B, Tq, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, Tq, hs)
        k = self.k_proj(key).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)    # (B, nh, Tk, hs)
        v = self.v_proj(value).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, Tk, hs)
        p = self.dropout if self.training else 0.0
        y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)  # (B, nh, Tq, hs), (B, nh, Tq, Tk)
        y = y.transpose(1, 2).reshape(B, Tq, C)  # (B, Tq, C): heads side by side
        out = self.out_proj(y)
        return out, (weights if need_weights else None)

# ---- next cell ----
def to_torch_mha(mha, ref=None):
    """An nn.MultiheadAttention(batch_first=True) in eval mode holding the weights of `mha`.

    Mapping: in_proj_weight = cat([q_proj.weight, k_proj.weight, v_proj.weight]) (rows), the same for the
    biases, and out_proj -> out_proj. With `ref`, copy into that module instead of a new one.
    """
    if ref is None:
        ref = nn.MultiheadAttention(mha.d_model, mha.n_heads, dropout=0.0, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()

# ---- next cell ----
with seeded(0):
    B, S, T, C, nh = 2, 7, 5, 16, 4
    mha = MultiHeadAttention(C, nh).eval()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert isinstance(getattr(mha, name, None), nn.Linear), f"MultiHeadAttention needs an nn.Linear `{name}`"
    ref = to_torch_mha(mha)
    dims = ("batch", "head", "query", "key")

    # self-attention
    x = torch.randn(B, T, C)
    out, w = mha(x, x, x, need_weights=True)
    check_shape(out, (B, T, C), "out")
    check_shape(w, (B, nh, T, T), "weights", dims=dims)
    ref_out, ref_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    check_close(w, ref_w, name="self-attention weights", dims=dims,
                hint="split heads with view(B, T, nh, hs).transpose(1, 2)")
    check_close(out, ref_out, name="self-attention output",
                hint="merge heads with transpose(1, 2).reshape(B, T, C) before out_proj")
    assert mha(x, x, x)[1] is None, "need_weights=False should return None as weights"

    # cross-attention with a key padding mask (sentence 1 has 4 real tokens)
    memory = torch.randn(B, S, C)
    key_padding_mask = torch.arange(S)[None, :] >= torch.tensor([S, 4])[:, None]  # (B, S), True = pad
    out, w = mha(x, memory, memory, mask=(~key_padding_mask)[:, None, None, :], need_weights=True)
    ref_out, ref_w = ref(x, memory, memory, key_padding_mask=key_padding_mask, need_weights=True,
                         average_attn_weights=False)
    check_close(w, ref_w, name="cross-attention weights (padding mask)", dims=dims)
    check_close(out, ref_out, name="cross-attention output (padding mask)")
passed("MultiHeadAttention", 6)

# ---- next cell ----
# Graded with the reference attention of part 1 (course.nn), so that part 1 is not graded twice.
with substituted(scaled_dot_product_attention=reference_attention), seeded(2):
    mha = MultiHeadAttention(12, 3).eval()
    x = torch.randn(2, 5, 12)
    out, w = mha(x, x, x, need_weights=True)
    assert out.shape == (2, 5, 12), f"out has shape {tuple(out.shape)}, expected (2, 5, 12)"
    assert w.shape == (2, 3, 5, 5), f"weights have shape {tuple(w.shape)}, expected (2, 3, 5, 5)"
    ref_out, ref_w = to_torch_mha(mha)(x, x, x, average_attn_weights=False)
    assert torch.allclose(out, ref_out, atol=1e-5), "output differs from nn.MultiheadAttention"
passed("grade: MultiHeadAttention")

# ---- next cell ----
def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """Tensor[max_len, d_model] with PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal_positional_encoding needs an even d_model, got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (d/2,): 0, 2, 4, ...
    freq = torch.exp(-math.log(10000.0) * two_i / d_model)  # (d/2,): 10000^(-2i/d)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)  # (T, d/2)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe

# ---- next cell ----
pe = sinusoidal_positional_encoding(50, 16)
check_shape(pe, (50, 16), "pe", dims=("position", "channel"))
assert pe.dtype == torch.float32, f"pe has dtype {pe.dtype}, expected torch.float32"
check_close(pe[0], torch.tensor([0.0, 1.0] * 8), name="pe[0] (sin 0 = 0, cos 0 = 1)")
check_close(pe[:, 0], torch.sin(torch.arange(50.0)), name="channel 0 (frequency 1)", dims=("position",))
check_close(pe[7, 1::2], torch.cos(7 / 10000 ** (torch.arange(0, 16, 2) / 16)), name="cosines at position 7",
            dims=("pair",), hint="the exponent is 2i/d with 2i = 0, 2, 4, ...")
passed("sinusoidal_positional_encoding", 5)

display(plots.plot_positional_encoding(sinusoidal_positional_encoding(100, 64)))

# ---- next cell ----
pe = sinusoidal_positional_encoding(10, 4)
assert tuple(pe.shape) == (10, 4), f"shape {tuple(pe.shape)}, expected (10, 4)"
assert torch.allclose(pe[:, 0], torch.sin(torch.arange(10.0)), atol=1e-6), "channel 0 should be sin(pos)"
assert torch.allclose(pe[:, 3], torch.cos(torch.arange(10.0) / 100.0), atol=1e-6), "channel 3 should be cos(pos / 10000^(2/4))"
passed("grade: sinusoidal_positional_encoding")

# ---- next cell ----
def is_permutation_equivariant(fn, x, dim=1, n_trials=3, atol=1e-5):
    """True if fn(x[perm]) == fn(x)[perm] along `dim` for `n_trials` random permutations.

    Args:
        fn: a function Tensor -> Tensor that keeps the size of `dim` (e.g. self-attention on [B, T, C]).
        x: the input, e.g. Tensor[B, T, C].
        dim: the dim that holds the tokens.
        n_trials: how many random permutations to try.
        atol: absolute tolerance of the comparison.
    """
    y = fn(x)
    for _ in range(n_trials):
        perm = torch.randperm(x.size(dim), device=x.device)
        y_of_permuted = fn(x.index_select(dim, perm))
        if not torch.allclose(y_of_permuted, y.index_select(dim, perm), atol=atol):
            return False
    return True

# ---- next cell ----
with seeded(0), torch.no_grad():
    T, C = 8, 16
    x = torch.randn(2, T, C)
    attn = MultiHeadAttention(C, 4).eval()
    pe = sinusoidal_positional_encoding(T, C)

    def self_attention(x):
        return attn(x, x, x)[0]

    def self_attention_with_positions(x):
        return self_attention(x + pe)

    def running_mean(x):  # position-dependent: mixes each token with the ones before it
        return x.cumsum(1) / torch.arange(1, x.size(1) + 1)[:, None]

    r1 = is_permutation_equivariant(self_attention, x)
    r2 = is_permutation_equivariant(self_attention_with_positions, x)
    r3 = is_permutation_equivariant(running_mean, x)
    print(f"self-attention: {r1} | with positional encoding: {r2} | running mean: {r3}")
    assert r1 is True, "self-attention without positions is permutation-equivariant, your test says otherwise"
    assert r2 is False, "adding positional encodings breaks equivariance, your test did not notice"
    assert r3 is False, "a running mean is not permutation-equivariant, your test did not notice"
    check_permutation_equivariance(self_attention, x, dim=1)  # the course's check agrees
passed("is_permutation_equivariant", 4)

# ---- next cell ----
with seeded(3), torch.no_grad():
    x = torch.randn(2, 6, 4)
    assert is_permutation_equivariant(lambda t: 2 * t + 1, x) is True, "an elementwise function is equivariant"
    assert is_permutation_equivariant(lambda t: t.cumsum(1), x) is False, "cumsum over the tokens is not equivariant"
passed("grade: is_permutation_equivariant")

# ---- next cell ----
def causal_mask(T: int, device=None) -> torch.Tensor:
    """BoolTensor[T, T], True on and below the diagonal: query i may attend to keys j <= i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()

# ---- next cell ----
m = causal_mask(4)
check_shape(m, (4, 4), "causal_mask(4)")
assert m.dtype == torch.bool, f"causal_mask should be a bool tensor, got {m.dtype}"
assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                      [True, True, True, False], [True, True, True, True]], f"causal_mask(4) is\n{m}"
with seeded(0), torch.no_grad():
    attn = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    check_causal(lambda x: attn(x, x, x, mask=causal_mask(x.size(1)))[0], x, dim=1, name="masked self-attention")
    out, w = attn(x, x, x, mask=causal_mask(6), need_weights=True)
    check_zero_where(w, ~causal_mask(6), name="causal attention weights", what="future keys")
passed("causal_mask", 4)

# ---- next cell ----
m = causal_mask(3)
assert m.dtype == torch.bool and tuple(m.shape) == (3, 3), "causal_mask(3) should be a (3, 3) bool tensor"
assert m.tolist() == [[True, False, False], [True, True, False], [True, True, True]], f"causal_mask(3) is\n{m}"
passed("grade: causal_mask")

# ---- next cell ----
class EncoderBlock(nn.Module):
    """Transformer encoder block: self-attention and FFN sublayers, post-norm or pre-norm.

    Parameters are named as in nn.TransformerEncoderLayer: self_attn, linear1, linear2, norm1, norm2.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)   # inside the FFN, after the ReLU
        self.dropout1 = nn.Dropout(dropout)  # end of the attention branch
        self.dropout2 = nn.Dropout(dropout)  # end of the FFN branch

    def _sa_block(self, x, mask):
        """Self-attention branch: Drop(MHA(x, x, x)). Tensor[B, S, C] -> Tensor[B, S, C]."""
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ff_block(self, x):
        """FFN branch: Drop(linear2(Drop(relu(linear1(x))))). Tensor[B, S, C] -> Tensor[B, S, C]."""
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, mask=None):
        """x: Tensor[B, S, C]; mask: broadcastable to [B, nh, S, S], True = may attend (e.g. padding
        [B, 1, 1, S]). Returns Tensor[B, S, C]."""
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), mask)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, mask))
            x = self.norm2(x + self._ff_block(x))
        return x

# ---- next cell ----
class DecoderBlock(nn.Module):
    """Transformer decoder block: causal self-attention, cross-attention, FFN; post-norm or pre-norm.

    Parameters are named as in nn.TransformerDecoderLayer, except cross_attn (PyTorch: multihead_attn):
    self_attn, cross_attn, linear1, linear2, norm1, norm2, norm3.
    After each forward, `cross_attn_weights` holds the cross-attention weights Tensor[B, nh, T, S] (detached).
    """

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
        self.cross_attn_weights = None

    def _sa_block(self, x, mask):
        """Masked self-attention branch. Tensor[B, T, C] -> Tensor[B, T, C]."""
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ca_block(self, x, memory, mask):
        """Cross-attention branch; stores the weights in self.cross_attn_weights. -> Tensor[B, T, C]."""
        out, weights = self.cross_attn(x, memory, memory, mask=mask, need_weights=True)
        self.cross_attn_weights = weights.detach()  # (B, nh, T, S)
        return self.dropout2(out)

    def _ff_block(self, x):
        """FFN branch. Tensor[B, T, C] -> Tensor[B, T, C]."""
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        """
        Args:
            x: Tensor[B, T, C] decoder input; memory: Tensor[B, S, C] encoder output.
            tgt_mask: broadcastable to [B, nh, T, T] (e.g. causal_mask(T)); True = may attend.
            memory_mask: broadcastable to [B, nh, T, S] (e.g. source padding [B, 1, 1, S]).
        Returns: Tensor[B, T, C].
        """
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask)
            x = x + self._ca_block(self.norm2(x), memory, memory_mask)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask))
            x = self.norm2(x + self._ca_block(x, memory, memory_mask))
            x = self.norm3(x + self._ff_block(x))
        return x

# ---- next cell ----
def to_torch_encoder_layer(block):
    """nn.TransformerEncoderLayer (batch_first, relu, same norm_first) in eval mode with the weights of `block`.

    Mapping: self_attn -> self_attn (see to_torch_mha); linear1, linear2, norm1, norm2 -> same names.
    """
    ref = nn.TransformerEncoderLayer(block.linear1.in_features, block.self_attn.n_heads, block.linear1.out_features,
                                     dropout=0.0, activation="relu", batch_first=True, norm_first=block.norm_first)
    to_torch_mha(block.self_attn, ref.self_attn)
    for name in ("linear1", "linear2", "norm1", "norm2"):
        getattr(ref, name).load_state_dict(getattr(block, name).state_dict())
    return ref.eval()


def to_torch_decoder_layer(block):
    """nn.TransformerDecoderLayer (batch_first, relu, same norm_first) in eval mode with the weights of `block`.

    Mapping: self_attn -> self_attn, cross_attn -> multihead_attn; linear1, linear2, norm1-3 -> same names.
    """
    ref = nn.TransformerDecoderLayer(block.linear1.in_features, block.self_attn.n_heads, block.linear1.out_features,
                                     dropout=0.0, activation="relu", batch_first=True, norm_first=block.norm_first)
    to_torch_mha(block.self_attn, ref.self_attn)
    to_torch_mha(block.cross_attn, ref.multihead_attn)
    for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
        getattr(ref, name).load_state_dict(getattr(block, name).state_dict())
    return ref.eval()


def randomize_norms(module):
    """Random LayerNorm weights and biases (the defaults 1 and 0 would hide a swapped norm)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return module

# ---- next cell ----
# PyTorch's boolean masks mean "not allowed": we pass ~ours. Padding: src_key_padding_mask is True at pads.
with seeded(0), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    B, S, T, C, nh, d_ff = 2, 6, 5, 16, 4, 32
    src_pad = torch.arange(S)[None, :] >= torch.tensor([S, 3])[:, None]  # (B, S), True = pad
    tgt_causal = torch.ones(T, T, dtype=torch.bool).tril()               # (T, T), True = may attend
    for norm_first in (False, True):
        enc = randomize_norms(EncoderBlock(C, nh, d_ff, dropout=0.1, norm_first=norm_first)).eval()
        x = torch.randn(B, S, C)
        out = enc(x, mask=(~src_pad)[:, None, None, :])
        check_shape(out, (B, S, C), "EncoderBlock output")
        ref = to_torch_encoder_layer(enc)(x, src_key_padding_mask=src_pad)
        check_close(out, ref, atol=1e-5, name=f"EncoderBlock(norm_first={norm_first}) output",
                    dims=("batch", "token", "channel"))

        dec = randomize_norms(DecoderBlock(C, nh, d_ff, dropout=0.1, norm_first=norm_first)).eval()
        y, memory = torch.randn(B, T, C), torch.randn(B, S, C)
        out = dec(y, memory, tgt_mask=tgt_causal, memory_mask=(~src_pad)[:, None, None, :])
        check_shape(out, (B, T, C), "DecoderBlock output")
        ref = to_torch_decoder_layer(dec)(y, memory, tgt_mask=~tgt_causal, memory_key_padding_mask=src_pad)
        check_close(out, ref, atol=1e-5, name=f"DecoderBlock(norm_first={norm_first}) output",
                    dims=("batch", "token", "channel"))
        check_shape(dec.cross_attn_weights, (B, nh, T, S), "DecoderBlock.cross_attn_weights")
        check_zero_where(dec.cross_attn_weights, src_pad[:, None, None, :], name="cross-attention weights",
                         what="source padding")
passed("EncoderBlock and DecoderBlock", 10)

# ---- next cell ----
# Graded with the reference MultiHeadAttention (course.nn), so that part 2 is not graded twice.
with substituted(MultiHeadAttention=course.nn.MultiHeadAttention), seeded(6), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for norm_first in (False, True):
        enc = randomize_norms(EncoderBlock(8, 2, 16, dropout=0.0, norm_first=norm_first)).eval()
        x = torch.randn(2, 4, 8)
        out = enc(x)
        assert out.shape == (2, 4, 8), f"output shape {tuple(out.shape)}, expected (2, 4, 8)"
        assert torch.allclose(out, to_torch_encoder_layer(enc)(x), atol=1e-5), \
            f"EncoderBlock(norm_first={norm_first}) differs from nn.TransformerEncoderLayer"
passed("grade: EncoderBlock")

# ---- next cell ----
with substituted(MultiHeadAttention=course.nn.MultiHeadAttention), seeded(7), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    for norm_first in (False, True):
        dec = randomize_norms(DecoderBlock(8, 2, 16, dropout=0.0, norm_first=norm_first)).eval()
        y, memory = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
        out = dec(y, memory, tgt_mask=causal)
        assert out.shape == (2, 4, 8), f"output shape {tuple(out.shape)}, expected (2, 4, 8)"
        assert torch.allclose(out, to_torch_decoder_layer(dec)(y, memory, tgt_mask=~causal), atol=1e-5), \
            f"DecoderBlock(norm_first={norm_first}) differs from nn.TransformerDecoderLayer"
passed("grade: DecoderBlock")

# ---- next cell ----
@dataclass
class TransformerConfig:
    src_vocab_size: int        # number of source token ids (specials included)
    tgt_vocab_size: int        # number of target token ids (specials included)
    d_model: int = 256         # width C of the residual stream
    n_heads: int = 8           # attention heads; d_model % n_heads == 0
    n_layers: int = 3          # encoder blocks = decoder blocks = n_layers
    d_ff: int = 1024           # hidden width of the feed-forward networks
    dropout: float = 0.1       # on embeddings, attention weights, FFN hidden units and residual branches
    norm_first: bool = True    # pre-norm (True) or post-norm (False) blocks
    tie_weights: bool = True   # share the target embedding matrix with the output projection
    max_len: int = 256         # longest sequence the positional encoding covers
    pad_id: int = 0            # padding token id (Vocab.PAD)


class Transformer(nn.Module):
    """Encoder-decoder Transformer for translation. Token ids in, next-token logits out."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        # Define, with these names (the checks and the plots use them): src_embed, tgt_embed (nn.Embedding),
        # the `pe` buffer, dropout, encoder and decoder (nn.ModuleList of n_layers blocks each), enc_norm,
        # dec_norm, generator (nn.Linear(d_model, tgt_vocab_size) with bias), and the weight tying.
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model)
        self.register_buffer("pe", sinusoidal_positional_encoding(cfg.max_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        block_args = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.norm_first)
        self.encoder = nn.ModuleList([EncoderBlock(*block_args) for _ in range(cfg.n_layers)])
        self.decoder = nn.ModuleList([DecoderBlock(*block_args) for _ in range(cfg.n_layers)])
        self.enc_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.generator = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)
        if cfg.tie_weights:
            self.generator.weight = self.tgt_embed.weight
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform linear layers with zero bias; embeddings N(0, 1/d_model) (after the linears: tying)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=self.cfg.d_model ** -0.5)

    def src_mask(self, src):
        """LongTensor[B, S] -> BoolTensor[B, 1, 1, S], True at real (non-pad) source tokens."""
        return (src != self.cfg.pad_id)[:, None, None, :]

    def encode(self, src):
        """LongTensor[B, S] -> memory Tensor[B, S, C]."""
        S = src.size(1)
        x = self.dropout(self.src_embed(src) * math.sqrt(self.cfg.d_model) + self.pe[:S])  # (B, S, C)
        mask = self.src_mask(src)  # (B, 1, 1, S)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_norm(x)

    def decode(self, tgt, memory, src):
        """tgt: LongTensor[B, T] (starts with BOS), memory: Tensor[B, S, C], src: LongTensor[B, S]
        -> logits Tensor[B, T, tgt_vocab_size]: logits[:, t] predicts token t + 1."""
        T = tgt.size(1)
        y = self.dropout(self.tgt_embed(tgt) * math.sqrt(self.cfg.d_model) + self.pe[:T])  # (B, T, C)
        tgt_mask = causal_mask(T, device=tgt.device)  # (T, T)
        memory_mask = self.src_mask(src)  # (B, 1, 1, S)
        for block in self.decoder:
            y = block(y, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.generator(self.dec_norm(y))  # (B, T, V)

    def forward(self, src, tgt):
        """src: LongTensor[B, S], tgt: LongTensor[B, T] -> logits Tensor[B, T, tgt_vocab_size]."""
        return self.decode(tgt, self.encode(src), src)

# ---- next cell ----
with seeded(0), torch.no_grad():
    cfg = TransformerConfig(src_vocab_size=11, tgt_vocab_size=13, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                            dropout=0.1, max_len=32)
    model = Transformer(cfg).eval()
    src = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])  # BOS ... EOS, then PAD
    tgt = torch.tensor([[2, 9, 10, 4], [2, 11, 3, 0]])
    logits = model(src, tgt)
    check_shape(logits, (2, 4, cfg.tgt_vocab_size), "logits", dims=("batch", "position", "vocab"))
    assert model.generator.weight is model.tgt_embed.weight, "tie_weights=True: generator.weight should be tgt_embed.weight"
    untied = Transformer(TransformerConfig(11, 13, 16, 2, 2, 32, tie_weights=False))
    assert count_parameters(untied) - count_parameters(model) == 13 * 16, "weight tying should save V * d_model parameters"
    # causality: logits at position t do not depend on target tokens after t
    check_causal(lambda t: model(src, t), tgt, dim=1, name="Transformer (target positions)")
    # padding: sentence 1 alone, without padding, gives the same logits as in the padded batch
    alone = model(src[1:, :3], tgt[1:, :3])
    check_close(logits[1, :3], alone[0], atol=1e-5, name="logits of sentence 1 (padded batch vs alone)",
                hint="mask the padded source keys in the encoder AND in the decoder's cross-attention")
print(f"{count_parameters(model):,} parameters")
passed("Transformer", 5)

# ---- next cell ----
# Graded with the reference attention, positional encoding and causal mask (course.nn);
# your EncoderBlock and DecoderBlock are used.
_reference_parts = dict(MultiHeadAttention=course.nn.MultiHeadAttention, causal_mask=course.nn.causal_mask,
                        sinusoidal_positional_encoding=course.nn.sinusoidal_positional_encoding)
with substituted(**_reference_parts), seeded(8), torch.no_grad():
    model = Transformer(TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16)).eval()
    logits = model(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]]))
    assert logits.shape == (1, 3, 10), f"logits have shape {tuple(logits.shape)}, expected (1, 3, 10)"
passed("grade: Transformer")

# ---- next cell ----
@torch.no_grad()
def greedy_decode(model, src, max_len, bos, eos, pad=0):
    """Batched greedy decoding.

    Args:
        model: has encode(src) -> memory and decode(tgt, memory, src) -> logits [B, t, V].
        src: LongTensor[B, S] source ids (padded with pad).
        max_len: maximum number of tokens generated after BOS.
        bos, eos, pad: special token ids.

    Returns:
        LongTensor[B, L], L <= max_len + 1: BOS, the generated tokens up to and including EOS, then pad.
    """
    B = src.size(0)
    memory = model.encode(src)
    ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(ys, memory, src)  # (B, t, V)
        next_token = logits[:, -1].argmax(dim=-1)  # (B,)
        next_token = next_token.masked_fill(finished, pad)
        ys = torch.cat([ys, next_token[:, None]], dim=1)
        finished |= next_token == eos
        if finished.all():
            break
    return ys

# ---- next cell ----
class CountingModel(nn.Module):
    """A planted decoder: next token = (last token + src[b, 1]) % V, so EOS comes at a known step."""

    def __init__(self, vocab_size):
        super().__init__()
        self.V = vocab_size
        self.n_encode = 0
        self.n_decode = 0

    def encode(self, src):
        self.n_encode += 1
        return src[:, 1:2].float()[:, :, None]  # (B, 1, 1): the step of each sentence

    def decode(self, tgt, memory, src):
        self.n_decode += 1
        step = memory[:, 0, 0].long()  # (B,)
        nxt = (tgt + step[:, None]) % self.V  # (B, t)
        return F.one_hot(nxt, self.V).float() + 0.01 * torch.arange(self.V)  # (B, t, V)


def greedy_one_by_one(model, src, max_len, bos, eos):
    """Unbatched reference: decode each sentence alone; returns a list of token lists (BOS ... EOS)."""
    out = []
    for b in range(src.size(0)):
        memory = model.encode(src[b:b + 1])
        ys = [bos]
        for _ in range(max_len):
            logits = model.decode(torch.tensor([ys]), memory, src[b:b + 1])
            ys.append(int(logits[0, -1].argmax()))
            if ys[-1] == eos:
                break
        out.append(ys)
    return out

# ---- next cell ----
V, BOS, EOS, PAD = 11, 2, 3, 0
src = torch.tensor([[BOS, 1, EOS], [BOS, 4, EOS], [BOS, 2, EOS]])  # steps 1, 4, 2
model = CountingModel(V)
out = greedy_decode(model, src, max_len=10, bos=BOS, eos=EOS, pad=PAD)
print(out)
# step 1: 2, 3 (EOS at once); step 4: 2, 6, 10, 3 (mod 11); step 2: 2, 4, 6, 8, 10, 1, 3
expected = greedy_one_by_one(CountingModel(V), src, 10, BOS, EOS)
L = max(len(e) for e in expected)
check_shape(out, (3, L), "greedy_decode output", dims=("batch", "position"))
for b, e in enumerate(expected):
    assert out[b, : len(e)].tolist() == e, f"sentence {b}: got {out[b].tolist()}, expected {e} then padding"
    assert (out[b, len(e):] == PAD).all(), f"sentence {b}: after EOS every token should be pad ({out[b].tolist()})"
assert model.n_encode == 1, f"encode the source once, not {model.n_encode} times"
passed("greedy_decode", 3)

# ---- next cell ----
model = CountingModel(7)
out = greedy_decode(model, torch.tensor([[2, 1, 3]]), max_len=5, bos=2, eos=3, pad=0)
assert out.tolist() == [[2, 3]], f"a sentence whose first token is EOS: got {out.tolist()}, expected [[2, 3]]"
passed("grade: greedy_decode")

# ---- next cell ----
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]  # (B, T-1) each
    logits = model(batch.src, tgt_in)  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                           ignore_index=pad_id, label_smoothing=label_smoothing)

# ---- next cell ----
class FixedLogits(nn.Module):
    """A stand-in model that records its inputs and returns fixed random logits [B, T, V]."""

    def __init__(self, V, seed=0):
        super().__init__()
        self.V, self.seed, self.calls = V, seed, []

    def forward(self, src, tgt):
        self.calls.append((src, tgt))
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(tgt.size(0), tgt.size(1), self.V, generator=g, dtype=torch.float64).float().requires_grad_()

# ---- next cell ----
batch = TranslationBatch(src=torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]), tgt=torch.tensor([[2, 8, 9, 3], [2, 4, 3, 0]]))
model = FixedLogits(V=10)
loss = translation_loss(model, batch)
src_seen, tgt_seen = model.calls[-1]
assert torch.equal(tgt_seen, batch.tgt[:, :-1]), f"the decoder input should be tgt[:, :-1], got\n{tgt_seen}"
logits = model(batch.src, batch.tgt[:, :-1])
target = batch.tgt[:, 1:]
keep = target != 0
logp = logits.log_softmax(-1)[keep]  # (N, V)
expected = -(0.9 * logp.gather(1, target[keep][:, None]).squeeze(1) + 0.1 * logp.mean(1)).mean()
check_close(loss, expected, atol=1e-5, name="translation_loss",
            hint="predict tgt[:, 1:], ignore PAD, label_smoothing=0.1")
passed("translation_loss", 2)

# ---- next cell ----
batch = TranslationBatch(src=torch.tensor([[2, 5, 3]]), tgt=torch.tensor([[2, 4, 3]]))
loss = translation_loss(FixedLogits(V=6), batch, label_smoothing=0.0)
logits = FixedLogits(V=6)(batch.src, batch.tgt[:, :-1])
assert torch.allclose(loss, F.cross_entropy(logits[0], torch.tensor([4, 3])), atol=1e-5), "wrong loss without smoothing"
passed("grade: translation_loss")

# ---- next cell ----
SRC, TGT = "de", "en"

if profile() == "quick":
    data_kw = dict(root=synthetic_multi30k_root(seed=0), download=False, verify=False)
else:
    data_kw = {}  # the real Multi30k, downloaded once
train_pairs = load_multi30k("train", SRC, TGT, **data_kw)
val_pairs = load_multi30k("val", SRC, TGT, **data_kw)
test_pairs = load_multi30k("test_2016_flickr", SRC, TGT, **data_kw)
print(f"{len(train_pairs):,} train / {len(val_pairs):,} val / {len(test_pairs):,} test pairs")
for s, t in train_pairs[:3]:
    print(f"  {SRC}: {s}\n  {TGT}: {t}")

src_vocab = Vocab.build((tokenize(s) for s, _ in train_pairs), min_freq=2)
tgt_vocab = Vocab.build((tokenize(t) for _, t in train_pairs), min_freq=2)
print(f"vocabularies: {SRC} {len(src_vocab):,} tokens, {TGT} {len(tgt_vocab):,} tokens")

# ---- next cell ----
hp = pick(
    quick=dict(d_model=64, n_heads=4, n_layers=1, d_ff=128, dropout=0.0, lr=3e-3, warmup=20,
               tokens_per_batch=600, epochs=None, max_steps=200, max_time_s=15, decode_n=100),
    cpu=dict(d_model=128, n_heads=4, n_layers=2, d_ff=256, dropout=0.1, lr=2e-3, warmup=100,
             tokens_per_batch=2000, epochs=None, max_steps=None, max_time_s=240, decode_n=None),
    full=dict(d_model=512, n_heads=8, n_layers=3, d_ff=2048, dropout=0.3, lr=7e-4, warmup=400,
              tokens_per_batch=4096, epochs=None, max_steps=None, max_time_s=290, decode_n=None),
)
MAX_TOKENS = 50  # drop longer training sentences (words, per side)
seed_everything(0)

train_data = encode_pairs(train_pairs, src_vocab, tgt_vocab, max_len=MAX_TOKENS)
val_data = encode_pairs(val_pairs, src_vocab, tgt_vocab)
train_loader = make_batches(train_data, tokens_per_batch=hp["tokens_per_batch"], shuffle=True, seed=0)
val_loader = make_batches(val_data, tokens_per_batch=hp["tokens_per_batch"], shuffle=False)

cfg = TransformerConfig(src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab), d_model=hp["d_model"],
                        n_heads=hp["n_heads"], n_layers=hp["n_layers"], d_ff=hp["d_ff"], dropout=hp["dropout"],
                        norm_first=True, tie_weights=True, max_len=256, pad_id=Vocab.PAD)
model = Transformer(cfg).to(device)
print(cfg)
print(f"{count_parameters(model):,} parameters | {len(train_loader)} batches per epoch | device {device}")

# ---- next cell ----
def val_loss(model):
    total, n = 0.0, 0
    for batch in val_loader:
        batch = batch.to(device)
        k = batch.num_tgt_tokens
        total += translation_loss(model, batch, label_smoothing=0.0).item() * k
        n += k
    return {"val_loss": total / n}


def warmup_cosine_by_time(optimizer, warmup_steps, budget_s, min_lr_ratio=0.05):
    """Linear warmup over `warmup_steps` steps, then a cosine decay that reaches `min_lr_ratio` when `budget_s`
    seconds have passed: with a time budget the schedule ends with the budget on any hardware."""
    start = time.perf_counter()

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (time.perf_counter() - start) / budget_s)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=(0.9, 0.98), eps=1e-9, weight_decay=0.01)
if hp["max_steps"]:  # a step budget
    scheduler = cosine_with_warmup(optimizer, hp["warmup"], total_steps=hp["max_steps"], min_lr_ratio=0.05)
else:  # a time budget
    scheduler = warmup_cosine_by_time(optimizer, hp["warmup"], budget_s=hp["max_time_s"], min_lr_ratio=0.05)
history = fit(model, train_loader, optimizer=optimizer, loss_fn=translation_loss, scheduler=scheduler,
              epochs=hp["epochs"], max_steps=hp["max_steps"], max_time_s=hp["max_time_s"],
              eval_fn=val_loss, device=device, grad_clip=1.0, amp=True, compile=False)
display(history.plot())

# ---- next cell ----
import sacrebleu


def translate(model, sentences, batch_size=128):
    """Greedy translations (strings) of source sentences, in their order."""
    model.eval()
    encoded = [src_vocab.encode(tokenize(s)) for s in sentences]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        S = max(len(encoded[i]) for i in idx)
        src = torch.full((len(idx), S), Vocab.PAD, dtype=torch.long)
        for row, i in enumerate(idx):
            src[row, : len(encoded[i])] = torch.tensor(encoded[i])
        src = src.to(device)
        with autocast(device):
            ys = greedy_decode(model, src, max_len=min(int(1.5 * S) + 10, cfg.max_len - 1),
                               bos=Vocab.BOS, eos=Vocab.EOS, pad=Vocab.PAD)
        for row, i in enumerate(idx):
            tokens = [t for t in tgt_vocab.decode(ys[row].cpu()) if t != "<unk>"]  # an unknown word cannot match
            out[i] = detokenize(tokens)
    return out


eval_pairs = test_pairs[: hp["decode_n"]] if hp["decode_n"] else test_pairs
with Timer(device) as t:
    hypotheses = translate(model, [s for s, _ in eval_pairs])
references = [t for _, t in eval_pairs]
bleu = sacrebleu.corpus_bleu(hypotheses, [references])
print(f"test 2016 {SRC}->{TGT}: {bleu.score:.2f} BLEU on {len(eval_pairs)} sentences "
      f"(decoding {t.s:.1f} s) | {bleu}")
for (s, ref), hyp in list(zip(eval_pairs, hypotheses))[:5]:
    print(f"\n  source:    {s}\n  reference: {ref}\n  model:     {hyp}")

record("02_transformer_blocks", {
    "bleu_test2016": bleu.score, "n_test_sentences": len(eval_pairs), "train_time_s": history.time_s,
    "steps": history.steps, "epochs": history.epochs, "params": count_parameters(model),
    "final_val_loss": history.last("val_loss"), "src": SRC, "tgt": TGT, "d_model": cfg.d_model,
    "n_layers": cfg.n_layers, "decoding": "greedy",
})

# ---- next cell ----
model.eval()
examples = sorted(test_pairs[:50], key=lambda p: len(p[0]))[10:13]
for s, ref in examples:
    src = torch.tensor([src_vocab.encode(tokenize(s))], device=device)
    ys = greedy_decode(model, src, max_len=40, bos=Vocab.BOS, eos=Vocab.EOS, pad=Vocab.PAD)
    with torch.no_grad():
        model(src, ys[:, :-1])  # fills cross_attn_weights of every decoder block
    weights = model.decoder[-1].cross_attn_weights[0].float().mean(0).cpu()  # (T, S), heads averaged
    src_tokens = [src_vocab.itos[i] for i in src[0].tolist()]
    out_tokens = [tgt_vocab.itos[i] for i in ys[0, 1:].tolist()]  # row t predicts token t + 1
    display(plots.plot_attention(weights, x_labels=src_tokens, y_labels=out_tokens,
                                 title=f"{detokenize(tgt_vocab.decode(ys[0].cpu()))}"))

# ---- next cell ----
seq_lens = pick(quick=[64, 128, 256, 512], cpu=[128, 256, 512, 1024, 2048, 4096],
                full=[256, 512, 1024, 2048, 4096, 8192, 16384])
B, nh, hs = pick(quick=(1, 4, 32), cpu=(2, 8, 64), full=(2, 8, 64))
dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
on_gpu = device.type == "cuda"
implementations = {
    "yours": lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=causal_mask(q.size(-2), device=q.device))[0],
    "F.scaled_dot_product_attention": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
}
times = {name: [] for name in implementations}
mems = {name: [] for name in implementations}
for T in seq_lens:
    q, k, v = (torch.randn(B, nh, T, hs, device=device, dtype=dtype) for _ in range(3))
    for name, fn in implementations.items():
        try:
            with torch.no_grad():
                fn(q, k, v)  # warm-up
                reset_peak_memory(device)
                base = torch.cuda.memory_allocated(device) / 2**20 if on_gpu else 0.0
                runs = []
                for _ in range(3):
                    with Timer(device) as t:
                        fn(q, k, v)
                    runs.append(t.ms)
            times[name].append(sorted(runs)[1])  # median of 3
            mems[name].append(peak_memory_mb(device) - base if on_gpu else float("nan"))
        except torch.OutOfMemoryError:
            times[name].append(float("nan"))
            mems[name].append(float("nan"))
    del q, k, v
    scores_mb = B * nh * T * T * torch.finfo(dtype).bits / 8 / 2**20
    print(f"T={T:6d} | " + " | ".join(f"{n}: {times[n][-1]:8.2f} ms" for n in implementations)
          + f" | one T x T matrix: {scores_mb:8.1f} MB")
display(plots.plot_scaling(seq_lens, list(times.values()), list(mems.values()) if on_gpu else None,
                           labels=list(implementations), title=f"causal attention, B={B}, heads={nh}, head size={hs}, "
                           f"{str(dtype).removeprefix('torch.')}, {device.type}"))
