"""Delegation detection by numerics (autograder/delegation.py) and the 02 checks that use it.

A dishonest submission can defeat every guard that runs in its own kernel (aliases in an
added cell, ``torch.ops.aten``, ``torch._C.DisableTorchFunction()``, a rewritten grading
agent, delegating only while ``NBGRADER_EXECUTION`` is set). These tests emulate each such
bypass as plain student code and check that

- every bypass is failed by the trusted side, from the bits of what it returns;
- the notebook's solution and independent honest variants are never failed, over many
  seeds (``DELEGATION_SEEDS``, default 40 for attention and 13 for multi-head attention);
- a reference that computes exactly like an honest formulation is reported as undecidable
  and not failed (``F.multi_head_attention_forward(need_weights=True)``), and the one
  known false positive (scaling both q and k by ``d ** -0.25``: PyTorch's math kernel) is
  pinned down so that it stays documented.

The 02 checks are driven through a real :class:`autograder.trusted.Handle` and the real
agent, run in this process instead of a kernel (as in ``tests/test_trusted_wire.py``).
"""
from __future__ import annotations

import base64
import json
import os
import re
import sys
import types

import nbformat
import pytest
import torch

import course.nn
from autograder import agent, delegation
from autograder.delegation import check_not_reference, judge, same_bits
from autograder.trusted import Handle, load_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AID = "02_transformer_blocks"
SEEDS = int(os.environ.get("DELEGATION_SEEDS", "40"))
MHA_SEEDS = max(1, SEEDS // 3)

# -- student code ----------------------------------------------------------------------------------
SETUP = """
import functools, math, os, sys
import torch
import torch.nn as nn
import torch.nn.functional as F
import course.nn

def reference_attention(q, k, v, mask=None, dropout_p=0.0):
    return course.nn.scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p, need_weights=True)
"""


def _solution_cells() -> dict[str, str]:
    nb = nbformat.read(os.path.join(ROOT, "source", AID, f"{AID}.ipynb"), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


SOLUTION = _solution_cells()

_SDPA_TAIL = """
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights
"""
HONEST_SDPA = {
    "the notebook's solution": SOLUTION["sdpa"],
    "einsum": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = scores.softmax(-1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    return torch.einsum("...ij,...jd->...id", weights, v), weights
""",
    "additive float masks": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = torch.matmul(q, k.transpose(-1, -2)) / q.size(-1) ** 0.5
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
        scores = scores + mask
    weights = F.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights
""",
    "scale applied to q": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    q = q / math.sqrt(q.size(-1))
    scores = q @ k.transpose(-2, -1)
""" + _SDPA_TAIL,
    "timm style: q * d ** -0.5": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scale = q.shape[-1] ** -0.5
    q = q * scale
    scores = q @ k.transpose(-2, -1)
""" + _SDPA_TAIL,
    "F.softmax, matmul, .mT, * (1 / sqrt(d))": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = torch.matmul(q, k.mT) * (1.0 / math.sqrt(q.size(-1)))
    if mask is not None:
        scores = torch.where(mask, scores, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = F.softmax(scores, dim=-1)
    weights = weights.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
    return torch.matmul(weights, v), weights
""",
    "float64 inside, then cast": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    dtype = q.dtype
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights @ v).to(dtype), weights.to(dtype)
""",
    "hand-written softmax, -1e9 for masked keys": """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9) if mask.dtype == torch.bool else scores + mask
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    weights = e / e.sum(dim=-1, keepdim=True)
    return weights @ v, weights
""",
}

_HONEST_WEIGHTS = """
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    weights = torch.softmax(s, -1).nan_to_num(0.0)
"""
_BOOL_TO_FLOAT = """
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
"""
# Each bypass: (cells of the graded exercise, added cells). The graded cell itself passes the
# source scan; what delegates lives in an added cell, as in the reproduced hole.
BYPASS_SDPA = {
    "torch.ops.aten._scaled_dot_product_attention_math": """
def _attend(q, k, v, mask=None, dropout_p=0.0):""" + _BOOL_TO_FLOAT + """
    out, w = torch.ops.aten._scaled_dot_product_attention_math(q, k, v, mask, dropout_p)
    return out, w
""",
    "F.scaled_dot_product_attention inside DisableTorchFunction (own weights)": """
def _attend(q, k, v, mask=None, dropout_p=0.0):""" + _HONEST_WEIGHTS + """
    with torch._C.DisableTorchFunction():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out, weights
""",
    "the flash-attention CPU op, math op where it refuses": """
def _attend(q, k, v, mask=None, dropout_p=0.0):""" + _HONEST_WEIGHTS + _BOOL_TO_FLOAT + """
    try:
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask)[0]
    except RuntimeError:
        out = torch.ops.aten._scaled_dot_product_attention_math(q, k, v, mask)[0]
    return out, weights
""",
    "course.nn.scaled_dot_product_attention, wrapped": """
def _attend(q, k, v, mask=None, dropout_p=0.0):
    return course.nn.scaled_dot_product_attention(q, k, v, mask, dropout_p, need_weights=True)
""",
    "course.nn.scaled_dot_product_attention, aliased with functools.partial": """
_attend = functools.partial(course.nn.scaled_dot_product_attention, need_weights=True)
""",
    "the notebook's reference_attention, aliased": """
_attend = reference_attention
""",
    "F.multi_head_attention_forward with identity projections (need_weights=False)": """
def _attend(q, k, v, mask=None, dropout_p=0.0):""" + _HONEST_WEIGHTS + """
    d, lead, Tq, Tk = q.size(-1), q.shape[:-2], q.size(-2), k.size(-2)
    if v.size(-1) != d:
        with torch._C.DisableTorchFunction():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), weights
    eye = torch.eye(d)
    am = None
    if mask is not None:
        am = (~mask if mask.dtype == torch.bool else mask).expand(*lead, Tq, Tk).reshape(-1, Tq, Tk)
    qq, kk, vv = (t.reshape(-1, t.size(-2), d).transpose(0, 1) for t in (q, k, v))
    with torch._C.DisableTorchFunction():
        out, _ = F.multi_head_attention_forward(
            qq, kk, vv, d, 1, None, torch.zeros(3 * d), None, None, False, 0.0, eye, torch.zeros(d),
            training=False, need_weights=False, attn_mask=am, use_separate_proj_weight=True,
            q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye)
    return out.transpose(0, 1).reshape(*lead, Tq, d), weights
""",
    "delegates only while NBGRADER_EXECUTION is set": """
_f = F.scaled_dot_product_attention
def _attend(q, k, v, mask=None, dropout_p=0.0):""" + _HONEST_WEIGHTS + """
    if os.environ.get("NBGRADER_EXECUTION"):
        return _f(q, k, v, attn_mask=mask, dropout_p=dropout_p), weights
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return attn @ v, weights
""",
    "rewrites the grading agent so that forbid does nothing": """
def _attend(q, k, v, mask=None, dropout_p=0.0):""" + _HONEST_WEIGHTS + """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), weights
""",
}
SDPA_CELL_CALLING_ATTEND = """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    return _attend(q, k, v, mask, dropout_p)
"""
UNDECIDABLE_SDPA = """
def _attend(q, k, v, mask=None, dropout_p=0.0):
    d, lead, Tq, Tk = q.size(-1), q.shape[:-2], q.size(-2), k.size(-2)
    if v.size(-1) != d:
        return reference_attention(q, k, v, mask)  # (caught separately)
    eye = torch.eye(d)
    am = None
    if mask is not None:
        am = (~mask if mask.dtype == torch.bool else mask).expand(*lead, Tq, Tk).reshape(-1, Tq, Tk)
    qq, kk, vv = (t.reshape(-1, t.size(-2), d).transpose(0, 1) for t in (q, k, v))
    with torch._C.DisableTorchFunction():
        out, w = F.multi_head_attention_forward(
            qq, kk, vv, d, 1, None, torch.zeros(3 * d), None, None, False, 0.0, eye, torch.zeros(d),
            training=False, need_weights=True, attn_mask=am, use_separate_proj_weight=True,
            q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye, average_attn_weights=False)
    return out.transpose(0, 1).reshape(*lead, Tq, d), w.reshape(*lead, Tq, Tk)
"""
SYMMETRIC_SCALING = """
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    c = q.size(-1) ** -0.25
    scores = (q * c) @ (k * c).transpose(-2, -1)
""" + _SDPA_TAIL

_MHA_INIT = """
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, dropout=0.0):
        super().__init__()
        self.d_model, self.n_heads, self.head_dim, self.dropout = d_model, n_heads, d_model // n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
"""
HONEST_MHA = {
    "the notebook's solution": SOLUTION["mha"],
    "fused qkv projection": _MHA_INIT + """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        W = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        q = F.linear(query, W, b)[..., :C]
        k = F.linear(key, W, b)[..., C:2 * C]
        v = F.linear(value, W, b)[..., 2 * C:]
        q, k, v = (t.reshape(B, -1, self.n_heads, self.head_dim).permute(0, 2, 1, 3) for t in (q, k, v))
        y, w = scaled_dot_product_attention(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.permute(0, 2, 1, 3).reshape(B, Tq, C)
        return self.out_proj(y), (w if need_weights else None)
""",
    "F.linear with the weights, contiguous heads": _MHA_INIT + """
    def _heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        q = self._heads(F.linear(query, self.q_proj.weight, self.q_proj.bias))
        k = self._heads(F.linear(key, self.k_proj.weight, self.k_proj.bias))
        v = self._heads(F.linear(value, self.v_proj.weight, self.v_proj.bias))
        y, w = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=self.dropout * self.training)
        out = F.linear(y.transpose(1, 2).contiguous().view(B, Tq, C), self.out_proj.weight, self.out_proj.bias)
        return out, w if need_weights else None
""",
    "projections written with @": _MHA_INIT + """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        nh, hs = self.n_heads, self.head_dim
        q = (query @ self.q_proj.weight.T + self.q_proj.bias).view(B, Tq, nh, hs).transpose(1, 2)
        k = (key @ self.k_proj.weight.T + self.k_proj.bias).view(B, -1, nh, hs).transpose(1, 2)
        v = (value @ self.v_proj.weight.T + self.v_proj.bias).view(B, -1, nh, hs).transpose(1, 2)
        y, w = scaled_dot_product_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, Tq, C)
        return y @ self.out_proj.weight.T + self.out_proj.bias, (w if need_weights else None)
""",
    "attention written inline (division by sqrt)": _MHA_INIT + """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        q, k, v = (p(x).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
                   for p, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        s = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
        w = s.softmax(-1).nan_to_num(0.0)
        y = (F.dropout(w, self.dropout, self.training) @ v).transpose(1, 2).reshape(B, Tq, C)
        return self.out_proj(y), (w if need_weights else None)
""",
    "attention inline in float64": _MHA_INIT + """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        q, k, v = (p(x).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2).double()
                   for p, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        s = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(self.head_dim)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
        w = s.softmax(-1).nan_to_num(0.0)
        y = torch.einsum("bhqk,bhkd->bhqd", w, v).float().transpose(1, 2).reshape(B, Tq, C)
        return self.out_proj(y), (w.float() if need_weights else None)
""",
}
TIMM_INLINE_MHA = _MHA_INIT + """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        q, k, v = (p(x).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
                   for p, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        q = q * self.head_dim ** -0.5
        attn = q @ k.transpose(-2, -1)
        if mask is not None:
            attn = attn.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else attn + mask
        attn = attn.softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, Tq, C)
        return self.out_proj(y), (attn if need_weights else None)
"""

_MHA_FORWARD_BODY = """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        Tk, nh = key.size(1), self.n_heads
        W = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        am = None
        if mask is not None:
            am = (~mask if mask.dtype == torch.bool else mask).expand(B, nh, Tq, Tk).reshape(B * nh, Tq, Tk)
        with torch._C.DisableTorchFunction():
            out, w = F.multi_head_attention_forward(
                query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), C, nh, W, b, None, None, False,
                self.dropout, self.out_proj.weight, self.out_proj.bias, training=self.training,
                need_weights=NEED_WEIGHTS, attn_mask=am, average_attn_weights=False)
        return out.transpose(0, 1), w
"""
BYPASS_MHA = {
    "subclass of course.nn.MultiHeadAttention in an added cell": """
class MultiHeadAttention(course.nn.MultiHeadAttention):
    def __init__(self, d_model, n_heads, dropout=0.0):
        super().__init__(d_model, n_heads, dropout)
        self.head_dim = d_model // n_heads
""",
    "alias of course.nn.MultiHeadAttention": "MultiHeadAttention = course.nn.MultiHeadAttention\n",
    "F.multi_head_attention_forward inside DisableTorchFunction": _MHA_INIT + _MHA_FORWARD_BODY.replace(
        "NEED_WEIGHTS", "need_weights"),
    "own projections, F.scaled_dot_product_attention inside DisableTorchFunction": _MHA_INIT + """
    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        q, k, v = (p(x).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
                   for p, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        _, w = scaled_dot_product_attention(q, k, v, mask)
        with torch._C.DisableTorchFunction():
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(B, Tq, C)), (w if need_weights else None)
""",
    "nn.MultiheadAttention only while NBGRADER_EXECUTION is set": SOLUTION["mha"] + """
_honest_forward = MultiHeadAttention.forward
def _forward(self, query, key, value, mask=None, need_weights=False):
    if not os.environ.get("NBGRADER_EXECUTION"):
        return _honest_forward(self, query, key, value, mask, need_weights)
    ref = nn.MultiheadAttention(self.d_model, self.n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
        ref.out_proj.load_state_dict(self.out_proj.state_dict())
    B, Tq, Tk = query.size(0), query.size(1), key.size(1)
    am = None if mask is None else (~mask).expand(B, self.n_heads, Tq, Tk).reshape(-1, Tq, Tk) \\
        if mask.dtype == torch.bool else mask.expand(B, self.n_heads, Tq, Tk).reshape(-1, Tq, Tk)
    return ref.eval()(query, key, value, attn_mask=am, need_weights=need_weights, average_attn_weights=False)
MultiHeadAttention.forward = _forward
""",
}
UNDECIDABLE_MHA = _MHA_INIT + _MHA_FORWARD_BODY.replace("NEED_WEIGHTS", "True").replace(
    "return out.transpose(0, 1), w", "return out.transpose(0, 1), (w if need_weights else None)")

ENCODER_BYPASS = """
class EncoderBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm_first=False):
        super().__init__()
        self.norm_first, self.n_heads = norm_first, n_heads
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x, mask=None):
        C = x.size(-1)
        ref = nn.TransformerEncoderLayer(C, self.n_heads, self.linear1.out_features, dropout=0.0,
                                         batch_first=True, norm_first=self.norm_first)
        a = self.self_attn
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            ref.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            ref.self_attn.out_proj.load_state_dict(a.out_proj.state_dict())
            for n in ("linear1", "linear2", "norm1", "norm2"):
                getattr(ref, n).load_state_dict(getattr(self, n).state_dict())
        kpm = None if mask is None else ~mask[:, 0, 0, :]
        return ref.eval()(x, src_key_padding_mask=kpm)
"""
DECODER_BYPASS = """
class DecoderBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm_first=False):
        super().__init__()
        self.norm_first, self.n_heads = norm_first, n_heads
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.cross_attn_weights = None

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        C = x.size(-1)
        ref = nn.TransformerDecoderLayer(C, self.n_heads, self.linear1.out_features, dropout=0.0,
                                         batch_first=True, norm_first=self.norm_first)
        with torch.no_grad():
            for mine, theirs in ((self.self_attn, ref.self_attn), (self.cross_attn, ref.multihead_attn)):
                theirs.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
                theirs.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
                theirs.out_proj.load_state_dict(mine.out_proj.state_dict())
            for n in ("linear1", "linear2", "norm1", "norm2", "norm3"):
                getattr(ref, n).load_state_dict(getattr(self, n).state_dict())
        return ref.eval()(x, memory, tgt_mask=None if tgt_mask is None else ~tgt_mask,
                          memory_key_padding_mask=None if memory_mask is None else ~memory_mask[:, 0, 0, :])
"""


def _namespace(*cells: str) -> dict:
    ns: dict = {"__name__": "__main__"}
    for code in (SETUP, *cells):
        exec(compile(code, "<cell>", "exec"), ns)
    return ns


# -- an in-process kernel: the real agent and a real trusted.Handle --------------------------------
@pytest.fixture
def kernel(monkeypatch):
    """``make(cells, graded=...)``: a Handle on a namespace holding ``cells`` (executed in order);
    ``graded`` maps grade ids to the source that ``h.source`` returns (what the source scan sees)."""
    import IPython.display

    published: list[dict] = []
    monkeypatch.setattr(IPython.display, "publish_display_data", lambda data, *a, **k: published.append(data))
    made: list[dict] = []

    def make(*cells: str, graded: dict[str, str] | None = None) -> Handle:
        ns = _namespace(*cells)
        ns["get_ipython"] = lambda: types.SimpleNamespace(user_ns=ns)
        monkeypatch.setattr(sys.modules["__main__"], "reference_attention", ns["reference_attention"], raising=False)
        nb = nbformat.v4.new_notebook()
        for gid, src in (graded or {}).items():
            nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"nbgrader": {"grade_id": gid, "solution": True}}))

        def run(code: str):
            published.clear()
            exec(code, ns)
            return [nbformat.NotebookNode(output_type="display_data", data={agent.MIME: published[-1][agent.MIME]})]

        exec(agent.install_code(), ns)  # RobustExecute installs it on the first request
        made.append(ns)
        h = Handle(run, nb)
        h.ns = ns
        return h

    yield make
    for ns in made:
        code = agent.request_code("restore_all")
        exec(code, ns)
    sys.modules.pop("_course_grader_agent", None)


def _rewrite_agent_to_ignore_forbid(h: Handle) -> None:
    """What a student can do from an added cell once the agent exists: replace its handler."""
    h.has("scaled_dot_product_attention")  # the first request installs the agent
    mod = sys.modules["_course_grader_agent"]
    real = mod.handle

    def handle(request_b64, ns):
        req = json.loads(base64.b64decode(request_b64))
        if req["op"] == "forbid":
            mod.SAVED.append({})
            from IPython.display import publish_display_data
            publish_display_data({agent.MIME: json.dumps({"ok": True, "value": None})})
            return
        real(request_b64, ns)

    mod.handle = handle


@pytest.fixture(scope="module")
def checks():
    load_checks(AID)
    return sys.modules[f"_checks_{AID}"]


# -- the builder -------------------------------------------------------------------------------------
def test_same_bits_is_exact():
    a = torch.tensor([1.0, float("nan"), -0.0])
    assert same_bits(a, a.clone())
    assert not same_bits(a, torch.tensor([1.0, float("nan"), 0.0]))  # -0.0 vs 0.0
    assert not same_bits(a, a.double())
    assert not same_bits(torch.ones(2), torch.nextafter(torch.ones(2), torch.zeros(2)))


def test_check_not_reference_flags_only_decidable_references():
    x = torch.randn(50)
    near = x + 1e-7 * torch.randn(50)
    refs = {"the fused kernel": x.clone(), "the plain route": near.clone()}
    honest = {"plain": near.clone()}
    with pytest.raises(AssertionError, match="bit-for-bit the output of the fused kernel") as e:
        check_not_reference(x, refs, honest, what="your output", advice="do it yourself")
    assert "tensor(" not in str(e.value) and f"{x[0].item():.4f}" not in str(e.value)  # never quotes inputs
    v = check_not_reference(near, refs, honest, what="your output")
    assert v.delegated is None and v.matches_undecidable == ("the plain route",)
    assert v.undecidable == (("the plain route", "plain"),) and v.decidable == ("the fused kernel",)
    assert check_not_reference(x + 1.0, refs, honest, what="your output").delegated is None


def test_course_nn_fingerprint_is_tiny_and_unreproducible():
    """course.nn's results are one ulp toward zero from a plain float32 computation: inside every
    tolerance, and different from honest float32 and float64 implementations in most elements."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 16, 12), torch.randn(2, 3, 40, 12), torch.randn(2, 3, 40, 12)
    ref_out, ref_w = course.nn.scaled_dot_product_attention(q, k, v, need_weights=True)
    ns = _namespace(HONEST_SDPA["the notebook's solution"], )
    out32, w32 = ns["scaled_dot_product_attention"](q, k, v)
    out64, _ = _namespace(HONEST_SDPA["float64 inside, then cast"])["scaled_dot_product_attention"](q, k, v)
    assert torch.equal(ref_out, torch.nextafter(out32, torch.zeros(())))  # exactly the fingerprint of the solution
    assert torch.equal(ref_w, torch.nextafter(w32, torch.zeros(())))
    for honest in (out32, out64):
        assert (honest != ref_out).float().mean() > 0.4
        torch.testing.assert_close(honest, ref_out, rtol=1e-6, atol=1e-6)
    # gradients pass through unchanged
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    course.nn.scaled_dot_product_attention(*leaves)[0].sum().backward()
    plain = [t.clone().requires_grad_() for t in (q, k, v)]
    ns["scaled_dot_product_attention"](*plain)[0].sum().backward()
    for a, b in zip(leaves, plain):
        assert torch.equal(a.grad, b.grad)


# -- attention over many seeds, without a kernel -----------------------------------------------------
def _attention_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi, (), generator=g))  # noqa: E731
    d = [5, 6, 7, 10, 12, 20, 24][seed % 7]  # not powers of 4
    Tq, Tk = r(3, 25), r(8, 65)
    lead = (r(1, 3), r(1, 4)) if seed % 3 else (r(1, 5),)
    q, k = torch.randn(*lead, Tq, d, generator=g), torch.randn(*lead, Tk, d, generator=g)
    v = torch.randn(*lead, Tk, d if seed % 4 else r(2, 9), generator=g)
    kind = seed % 4
    mask = None
    if kind == 1:
        mask = torch.rand(Tq, Tk, generator=g) < 0.7
        mask[:, 0] = True
    elif kind == 2:
        mask = (torch.arange(Tk) < torch.randint(Tk // 2, Tk + 1, (*lead[:1], 1, 1), generator=g)).reshape(
            *lead[:1], *([1] * (len(lead) - 1)), 1, Tk)
    elif kind == 3:
        mask = torch.randn(Tq, Tk, generator=g)
    return q, k, v, mask


def _judge_attention(fn, q, k, v, mask) -> tuple[str | None, list]:
    out, w = fn(q, k, v, mask)
    refs, honest = delegation.attention_references(q, k, v, mask), delegation.attention_honest(q, k, v, mask)
    vo = judge(out, {n: r[0] for n, r in refs.items()}, {n: h[0] for n, h in honest.items()}, what="out")
    vw = judge(w, {n: r[1] for n, r in refs.items() if r[1] is not None}, {n: h[1] for n, h in honest.items()},
               what="weights")
    return vo.delegated or vw.delegated, [vo, vw]


@pytest.mark.parametrize("variant", sorted(HONEST_SDPA))
def test_honest_attention_is_never_flagged(variant):
    fn = _namespace(HONEST_SDPA[variant])["scaled_dot_product_attention"]
    flagged = [(seed, d) for seed in range(SEEDS) for d in [_judge_attention(fn, *_attention_case(seed))[0]] if d]
    assert not flagged, f"{variant}: flagged as delegation on seeds {flagged[:5]}"


@pytest.mark.parametrize("bypass", sorted(BYPASS_SDPA))
def test_every_attention_bypass_is_flagged(bypass, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    fn = _namespace(BYPASS_SDPA[bypass], SDPA_CELL_CALLING_ATTEND)["scaled_dot_product_attention"]
    missed = [seed for seed in range(SEEDS) if _judge_attention(fn, *_attention_case(seed))[0] is None]
    assert not missed, f"{bypass}: not recognised on seeds {missed[:10]}"


def test_mha_forward_with_weights_is_undecidable_not_flagged():
    """F.multi_head_attention_forward(need_weights=True) computes exactly the honest 'q * d ** -0.5'
    formulation: a student who matches it is reported, never failed."""
    fn = _namespace(UNDECIDABLE_SDPA, SDPA_CELL_CALLING_ATTEND)["scaled_dot_product_attention"]
    for seed in range(1, SEEDS, 4):  # d_k == d_v there: the identity projections work
        delegated, (vo, vw) = _judge_attention(fn, *_attention_case(seed))
        assert delegated is None
        assert delegation.MHA_FORWARD_W in vo.matches_undecidable
        assert vo.honest_match is not None


def test_a_single_visible_key_is_undecidable_not_flagged():
    """With one key left per query, every formulation returns that key's value exactly: nothing can be
    decided, and a delegating student is not failed there (the checks choose inputs with many keys)."""
    q, k, v = torch.randn(1, 2, 6, 10), torch.randn(1, 2, 9, 10), torch.randn(1, 2, 9, 10)
    mask = torch.arange(9) < 1
    fn = _namespace(BYPASS_SDPA["torch.ops.aten._scaled_dot_product_attention_math"],
                    SDPA_CELL_CALLING_ATTEND)["scaled_dot_product_attention"]
    delegated, (vo, _) = _judge_attention(fn, q, k, v, mask)
    assert delegated is None and vo.matches_undecidable
    assert vo.decidable == (delegation.COURSE_SDPA,)  # only the fingerprint survives


def test_known_false_positive_symmetric_scaling_is_the_math_kernel():
    """Scaling q and k each by d ** -0.25 is, bit for bit, PyTorch's math kernel: flagged. It is the
    one plain formulation known to be; see HONEST_ATTENTION in autograder/delegation.py."""
    fn = _namespace(SYMMETRIC_SCALING)["scaled_dot_product_attention"]
    delegated, _ = _judge_attention(fn, *_attention_case(1))
    assert delegated is not None and "_scaled_dot_product_attention_math" in delegated


# -- multi-head attention over many seeds, without a kernel ----------------------------------------
def _mha_case(seed: int):
    g = torch.Generator().manual_seed(10_000 + seed)
    nh = [1, 2, 3, 4][seed % 4]
    hd = [5, 6, 7, 10, 12, 20][seed % 6]
    C, B, Tq = nh * hd, 1 + seed % 3, 3 + seed % 7
    cross = seed % 2 == 1
    Tk = 4 + seed % 9 if cross else Tq
    torch.manual_seed(seed)
    sd = course.nn.MultiHeadAttention(C, nh).state_dict()
    xq = torch.randn(B, Tq, C, generator=g)
    xk, xv = (torch.randn(B, Tk, C, generator=g), torch.randn(B, Tk, C, generator=g)) if cross else (xq, xq)
    mask = [None, torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=max(0, Tk - Tq)),
            (torch.arange(Tk) < torch.randint(max(2, Tk // 2), Tk + 1, (B, 1, 1, 1), generator=g)),
            torch.randn(Tq, Tk, generator=g)
            ][seed % 4]
    return nh, C, sd, xq, xk, xv, mask


def _judge_mha(ns: dict, case, need_weights: bool):
    nh, C, sd, xq, xk, xv, mask = case
    with torch.set_grad_enabled(C % 2 == 0):  # both: the bits must not depend on it
        m = ns["MultiHeadAttention"](C, nh)
        m.load_state_dict(sd)
        out = m.eval()(xq.clone(), xk.clone(), xv.clone(), mask=mask, need_weights=need_weights)[0]
    return judge(out, delegation.mha_references(sd, nh, xq, xk, xv, mask),
                 delegation.mha_honest(sd, nh, xq, xk, xv, mask), what="out")


def _with_reference_attention(ns: dict) -> dict:
    ns["scaled_dot_product_attention"] = ns["reference_attention"]  # what the checks substitute
    return ns


@pytest.mark.parametrize("variant", sorted(HONEST_MHA))
def test_honest_mha_is_never_flagged(variant):
    ns = _with_reference_attention(_namespace(HONEST_MHA[variant]))
    flagged = [(seed, nw, v.delegated) for seed in range(MHA_SEEDS) for nw in (False, True)
               for v in [_judge_mha(ns, _mha_case(seed), nw)] if v.delegated]
    assert not flagged, f"{variant}: flagged as delegation: {flagged[:3]}"


@pytest.mark.parametrize("bypass", sorted(BYPASS_MHA))
def test_every_mha_bypass_is_flagged(bypass, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    ns = _with_reference_attention(_namespace(SOLUTION["sdpa"], BYPASS_MHA[bypass]))
    missed = [seed for seed in range(MHA_SEEDS)
              if not any(_judge_mha(ns, _mha_case(seed), nw).delegated for nw in (False, True))]
    assert not missed, f"{bypass}: not recognised on seeds {missed}"


def test_timm_style_inline_mha_matches_an_undecidable_reference_and_passes():
    ns = _with_reference_attention(_namespace(TIMM_INLINE_MHA))
    for seed in range(0, MHA_SEEDS, 3):
        v = _judge_mha(ns, _mha_case(seed), True)
        assert v.delegated is None and any("need_weights=True" in n for n in v.matches_undecidable)


# -- the 02 checks, through the real agent and Handle ---------------------------------------------
def _graded(sdpa: str = SOLUTION["sdpa"], mha: str = SOLUTION["mha"]) -> dict[str, str]:
    return {"sdpa": sdpa, "mha": mha, "encoder_block": SOLUTION["encoder_block"],
            "decoder_block": SOLUTION["decoder_block"]}


def test_the_solution_passes_every_no_delegation_check(kernel, checks):
    h = kernel(SOLUTION["sdpa"], SOLUTION["mha"], SOLUTION["encoder_block"], SOLUTION["decoder_block"],
               graded=_graded())
    for name in ("sdpa_no_delegation", "mha_no_delegation", "encoder_no_delegation", "decoder_no_delegation"):
        getattr(checks, name)(h)


@pytest.mark.parametrize("variant", sorted(set(HONEST_SDPA) - {"the notebook's solution"}))
def test_honest_sdpa_passes_the_check(variant, kernel, checks):
    h = kernel(HONEST_SDPA[variant], graded=_graded(sdpa=HONEST_SDPA[variant]))
    checks.sdpa_no_delegation(h)


@pytest.mark.parametrize("variant", sorted(set(HONEST_MHA) - {"the notebook's solution"}) + ["timm inline"])
def test_honest_mha_passes_the_check(variant, kernel, checks):
    code = TIMM_INLINE_MHA if variant == "timm inline" else HONEST_MHA[variant]
    h = kernel(SOLUTION["sdpa"], code, graded=_graded(mha=code))
    checks.mha_no_delegation(h)


@pytest.mark.parametrize("bypass", sorted(BYPASS_SDPA))
def test_sdpa_check_fails_every_bypass(bypass, kernel, checks, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    h = kernel(BYPASS_SDPA[bypass], SDPA_CELL_CALLING_ATTEND, graded=_graded(sdpa=SDPA_CELL_CALLING_ATTEND))
    _rewrite_agent_to_ignore_forbid(h)  # the kernel-side guard is gone: only the numerics remain
    with pytest.raises(AssertionError, match="bit-for-bit the output of"):
        checks.sdpa_no_delegation(h)


@pytest.mark.parametrize("bypass", sorted(BYPASS_MHA))
def test_mha_check_fails_every_bypass(bypass, kernel, checks, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    h = kernel(SOLUTION["sdpa"], BYPASS_MHA[bypass], graded=_graded())  # the graded cell is the solution's
    _rewrite_agent_to_ignore_forbid(h)
    with pytest.raises(AssertionError, match="bit-for-bit the output of"):
        checks.mha_no_delegation(h)


def test_mha_check_passes_the_undecidable_mha_forward(kernel, checks):
    """Always asking F.multi_head_attention_forward for weights gives the plain formulation's
    bits: the check cannot tell, and does not fail (documented limitation)."""
    h = kernel(SOLUTION["sdpa"], UNDECIDABLE_MHA, graded=_graded())
    _rewrite_agent_to_ignore_forbid(h)
    checks.mha_no_delegation(h)


@pytest.mark.parametrize("block", ["encoder", "decoder"])
def test_block_checks_fail_pytorch_layers(block, kernel, checks):
    cells = [SOLUTION["sdpa"], SOLUTION["mha"], SOLUTION["encoder_block"], SOLUTION["decoder_block"],
             ENCODER_BYPASS if block == "encoder" else DECODER_BYPASS]
    h = kernel(*cells, graded=_graded())
    with pytest.raises(AssertionError, match=f"bit-for-bit the output of nn.Transformer{block.title()}"):
        getattr(checks, f"{block}_no_delegation")(h)


def test_delegation_messages_do_not_quote_inputs(kernel, checks):
    h = kernel(BYPASS_SDPA["course.nn.scaled_dot_product_attention, wrapped"], SDPA_CELL_CALLING_ATTEND,
               graded=_graded(sdpa=SDPA_CELL_CALLING_ATTEND))
    with pytest.raises(AssertionError) as e:
        checks.sdpa_no_delegation(h)
    msg = str(e.value)
    assert "course.nn.scaled_dot_product_attention" in msg and "tensor(" not in msg
    assert not re.search(r"\d\.\d", msg), msg  # no printed numbers
