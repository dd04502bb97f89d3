"""course.nn: the reference blocks agree with PyTorch's own implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course import nn as cnn
from course.testing import check_causal, check_close, check_permutation_equivariance

B, T, C, NH = 2, 7, 32, 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _masks() -> dict[str, torch.Tensor | None]:
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[1, 5:] = False  # the second sequence is padded after 5 tokens
    additive = torch.zeros(T, T).masked_fill(~cnn.causal_mask(T), float("-inf"))
    return {
        "none": None,
        "causal": cnn.causal_mask(T),
        "padding": keep[:, None, None, :],  # (B, 1, 1, Tk)
        "additive": additive,
    }


@pytest.mark.parametrize("mask_name", ["none", "causal", "padding", "additive"])
def test_sdpa_reference_matches_torch(mask_name: str):
    q, k, v = (torch.randn(B, NH, T, C // NH) for _ in range(3))
    mask = _masks()[mask_name]
    out, w = cnn.scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, name="output")
    check_close(w.sum(-1), torch.ones(B, NH, T), name="row sums")
    assert cnn.scaled_dot_product_attention(q, k, v, mask)[1] is None


def test_sdpa_fully_masked_rows_are_zero_not_nan():
    q, k, v = (torch.randn(1, 1, 3, 4) for _ in range(3))
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    out, w = cnn.scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (w[0, 0, 1] == 0).all() and (out[0, 0, 1] == 0).all()


@pytest.mark.parametrize("mask_name", ["none", "causal", "padding", "additive"])
def test_mha_fast_path_equals_reference_path(mask_name: str):
    mha = cnn.MultiHeadAttention(C, NH).eval()
    x, mem = torch.randn(B, T, C), torch.randn(B, T, C)
    mask = _masks()[mask_name]
    fast, none = mha(x, mem, mem, mask=mask)
    ref, w = mha(x, mem, mem, mask=mask, need_weights=True)
    assert none is None and w.shape == (B, NH, T, T)
    check_close(fast, ref, atol=1e-5, name="fast path")


def _copy_to_torch_mha(mine: cnn.MultiHeadAttention) -> nn.MultiheadAttention:
    theirs = nn.MultiheadAttention(C, NH, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        theirs.out_proj.weight.copy_(mine.out_proj.weight)
        theirs.out_proj.bias.copy_(mine.out_proj.bias)
    return theirs


def test_mha_matches_torch_multihead_attention():
    mine = cnn.MultiHeadAttention(C, NH).eval()
    theirs = _copy_to_torch_mha(mine)
    q, kv = torch.randn(B, 5, C), torch.randn(B, T, C)
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[0, 4:] = False
    out, w = mine(q, kv, kv, mask=keep[:, None, None, :], need_weights=True)
    # torch's masks are the other way round: True = may NOT attend
    ref, ref_w = theirs(q, kv, kv, key_padding_mask=~keep, need_weights=True, average_attn_weights=False)
    check_close(out, ref, atol=1e-5, name="MHA output")
    check_close(w, ref_w, atol=1e-6, dims=("batch", "head", "query", "key"), name="MHA weights")


def test_mha_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        cnn.MultiHeadAttention(30, 4)


def test_mha_properties():
    mha = cnn.MultiHeadAttention(C, NH).eval()
    x = torch.randn(B, T, C)
    check_permutation_equivariance(lambda t: mha(t, t, t), x)
    check_causal(lambda t: mha(t, t, t, mask=cnn.causal_mask(T)), x)


def test_sinusoidal_positional_encoding():
    pe = cnn.sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16) and pe.dtype == torch.float32
    t, i = 7, 3  # PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...)
    angle = t / 10000 ** (2 * i / 16)
    assert pe[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    check_close(pe[0], torch.tensor([0.0, 1.0] * 8))
    assert cnn.sinusoidal_positional_encoding(10, 7).shape == (10, 7)  # odd d_model


def test_causal_mask():
    m = cnn.causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m[2, 2] and m[2, 0] and not m[2, 3]


def test_mlp():
    mlp = cnn.MLP(C, 4 * C, dropout=0.0, activation="relu")
    x = torch.randn(B, T, C)
    check_close(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))
    with pytest.raises(ValueError, match="activation"):
        cnn.MLP(C, C, activation="swish")


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_matches_torch_encoder_layer(norm_first: bool):
    block = cnn.TransformerBlock.from_config(
        cnn.BlockConfig(d_model=C, n_heads=NH, d_ff=64, dropout=0.1, norm_first=norm_first)
    ).eval()
    theirs = nn.TransformerEncoderLayer(
        C, NH, 64, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first
    ).eval()
    theirs.self_attn = _copy_to_torch_mha(block.attn)
    with torch.no_grad():
        for a, b in [(theirs.linear1, block.mlp.fc1), (theirs.linear2, block.mlp.fc2),
                     (theirs.norm1, block.ln1), (theirs.norm2, block.ln2)]:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    x = torch.randn(B, T, C)
    check_close(block(x), theirs(x), atol=1e-5, name="block output")
    causal = cnn.causal_mask(T)
    check_close(block(x, mask=causal), theirs(x, src_mask=~causal), atol=1e-5, name="causal block output")


def test_block_trains_and_dropout_is_active():
    block = cnn.TransformerBlock(C, NH, 64, dropout=0.5).train()
    x = torch.randn(B, T, C)
    assert not torch.equal(block(x), block(x))
    block(x).square().mean().backward()
    assert all(p.grad is not None for p in block.parameters())
