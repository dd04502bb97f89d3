"""Hidden checks of assignment 02 (Transformer blocks), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that cell of
``02_transformer_blocks.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs, weights and expected values are
made here; the references are PyTorch's (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer`` ...) and the course's (``course.nn``: the one home of the solution's blocks, also used by
the notebook's grade cells). The patterns are :mod:`autograder.checkkit`'s. Conventions:

- each exercise is graded with the references of the parts it builds on (``h.substituted``), so a mistake costs
  points once (``tests/mutants/02_transformer_blocks/`` proves it);
- a check named "(the visible tests)" repeats its grade cell's visible asserts exactly (same inputs, same calls): if
  the notebook's run and this one disagree, something was tampered with;
- a failure message's first line says what is wrong; ``likely=`` names the classic mistake a result matches (no
  1/sqrt(d_k), sin/cos swapped, padding in the loss ...): those tables are this file's;
- each grade cell's checks stay well under 2 s (one request is one kernel round trip).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import course.nn as ref
from autograder.checkkit import (ATTN_DIMS, LOGIT_DIMS, TOKEN_DIMS, attribute, check_causal_remote, check_dropout_sites,
                                 check_every_parameter_learns, check_keeps_mode, check_module_grads, check_module_list,
                                 check_own_code, check_parameters, check_raises, check_vjp, drawn, module, module_like,
                                 pair, parameters, planted, quiet, rint, seed_kernel, tensor, what)
from autograder.delegation import (check_attention_not_delegated, check_not_reference, decoder_references,
                                   encoder_references, mha_honest, mha_references)
from autograder.trusted import StudentError, check
from course.testing import (CountingModel, FixedLogits, check_causal, check_close, check_rows_sum_to_one,
                            check_zero_where, greedy_one_by_one, randomize_norms, seeded)

# what each grade cell's code runs with (as the notebook's `substituted` does in the grade cells)
REF_ATTENTION = dict(scaled_dot_product_attention="__main__.reference_attention")  # course.nn's, with weights
REF_MHA = dict(MultiHeadAttention="course.nn.MultiHeadAttention")
REF_BLOCKS = dict(**REF_MHA, causal_mask="course.nn.causal_mask", EncoderBlock="course.nn.EncoderBlock",
                  sinusoidal_positional_encoding="course.nn.sinusoidal_positional_encoding",
                  DecoderBlock="course.nn.DecoderBlock")
F_SDPA, F_MHA = "torch.nn.functional.scaled_dot_product_attention", "torch.nn.functional.multi_head_attention_forward"
COURSE_NN = {"course.nn": "course.nn is the reference for later assignments"}


def _warm_up() -> None:
    """Import what PyTorch's references import on first use (~1-2 s) when the checks load, not in a grade cell."""
    with quiet():
        x, pad = torch.zeros(1, 2, 4), torch.tensor([[False, True]])
        F.scaled_dot_product_attention(x.clone().requires_grad_(), x, x, attn_mask=~pad).sum().backward()
        nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)(x, src_key_padding_mask=pad)
        nn.TransformerDecoderLayer(4, 2, 8, dropout=0.0, batch_first=True)(x, x, tgt_mask=pad.expand(2, 2))


_warm_up()


# -- 1. scaled dot-product attention --------------------------------------------------------------
def _sdpa(h, q, k, v, where: str = "", **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's (out, weights), of the right shapes."""
    out, w = pair(h.call("scaled_dot_product_attention", q, k, v, **kwargs), "scaled_dot_product_attention")
    return (tensor(out, f"out {where}".strip(), shape=(*q.shape[:-1], v.size(-1))),
            tensor(w, f"weights {where}".strip(), shape=(*q.shape[:-1], k.size(-2))))


def _attention_mistakes(q, k, v, mask) -> dict:
    """What the classic mistakes return for these inputs (None: not a mistake here)."""
    def attend(scale, dim=-1, m=mask, invert=False):
        s = q @ k.transpose(-2, -1) / scale
        if m is not None:
            s = s.masked_fill(m if invert else ~m, float("-inf")) if m.dtype == torch.bool else s + m
        return s.softmax(dim).nan_to_num(0.0) @ v
    d_k, boolean, floating = q.size(-1), mask is not None and mask.dtype == torch.bool, mask is not None
    r = math.sqrt(d_k)
    return {"attention without the 1/sqrt(d_k) scale (divide the scores by sqrt(d_k))": attend(1.0),
            "attention scaled by 1/d_k instead of 1/sqrt(d_k)": attend(d_k),
            "a softmax over the queries (dim=-2) instead of the keys (dim=-1)": attend(r, dim=-2),
            "attention scaled by a fixed 1/sqrt(64): the head size is d_k = q.size(-1)":
                attend(8.0) if d_k != 64 else None,
            "attention with the mask inverted: True means 'may attend' (masked_fill(~mask, -inf))":
                attend(r, invert=True) if boolean else None,
            "the float mask treated as a boolean one: a float mask is added to the scores":
                attend(r, m=mask != 0) if floating and not boolean else None}


@check("grade_sdpa", "shapes, F.scaled_dot_product_attention on (3, 4, 16) queries, weights sum to 1 (the visible "
                     "tests)", mirrors_visible=True)
def sdpa_visible(h):
    with seeded(1):
        q, k, v = torch.randn(3, 4, 16), torch.randn(3, 6, 16), torch.randn(3, 6, 5)
    out, w = _sdpa(h, q, k, v)
    check_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5,
                name="out vs F.scaled_dot_product_attention", likely=_attention_mistakes(q, k, v, None))
    check_close(w.sum(-1), torch.ones(3, 4), atol=1e-5, rtol=1e-5, name="sum of the weights over the keys")


def _sdpa_trial(trial: int):
    """Random sizes, leading dims and dtype; no mask, a boolean (Tq, Tk) or padding mask, or an additive float one."""
    lead = tuple(torch.randint(1, 4, (rint(0, 3),)).tolist())
    Tq, Tk, d_k, d_v = (rint(1, n) for n in (9, 9, 17, 9))
    dtype = torch.float64 if trial % 5 == 4 else torch.float32
    q, k, v = (torch.randn(*lead, T, d, dtype=dtype) for T, d in ((Tq, d_k), (Tk, d_k), (Tk, d_v)))
    mask, desc = None, "no mask"
    if trial % 4 == 1:
        mask, desc = torch.rand(Tq, Tk) < 0.6, "boolean (Tq, Tk) mask"
        mask[torch.arange(Tq), torch.randint(0, Tk, (Tq,))] = True  # at least one allowed key per query
    elif trial % 4 == 2:
        mask = torch.arange(Tk) < torch.randint(1, Tk + 1, lead + (1, 1))
        desc = f"boolean padding mask of shape {tuple(mask.shape)}"
    elif trial % 4 == 3:
        mask, desc = torch.randn(Tq, Tk, dtype=dtype), "float (additive) mask with -inf entries"
        mask[torch.rand(Tq, Tk) < 0.3] = float("-inf")
        mask[:, 0] = 0.0
    return q, k, v, mask, f"(leading dims {lead}, Tq={Tq}, Tk={Tk}, d_k={d_k}, d_v={d_v}, {desc}, {str(dtype)[6:]})"


@check("grade_sdpa", "matches F.scaled_dot_product_attention on random shapes, leading dims, dtypes and masks "
                     "(none, boolean, padding, additive float)")
def sdpa_random(h):
    for q, k, v, mask, where in drawn(1234, 24, _sdpa_trial):
        out, w = _sdpa(h, q, k, v, where, mask=mask)
        tensor(out, f"out {where}", dtype=q.dtype, why=" like the inputs")
        check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-4,
                    name=f"out {where}", likely=_attention_mistakes(q, k, v, mask))
        check_rows_sum_to_one(w, name=f"weights {where}")
        if mask is not None:
            blocked = ~mask if mask.dtype == torch.bool else torch.isneginf(mask)
            check_zero_where(w, blocked, name=f"weights {where}", what="masked keys")
        check_close(w.double() @ v.double(), out, atol=1e-5, name=f"weights @ v vs out {where}",
                    hint="return the weights that produced the output (before dropout)")


@check("grade_sdpa", "fully masked query rows give zero weights and outputs, not NaN (boolean and -inf float masks)")
def sdpa_fully_masked(h):
    with seeded(99):
        q, k, v = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 3)
        m = torch.rand(2, 4, 5) < 0.5
    m[0, 1], m[1, 3] = False, False
    m[0, 0, 0] = m[1, 0, 0] = True
    hint = "replace the NaN of softmax(-inf, ..., -inf) by 0"
    for mask, kind in ((m, "boolean mask"), (torch.zeros(2, 4, 5).masked_fill(~m, float("-inf")), "float -inf mask")):
        out, w = _sdpa(h, q, k, v, mask=mask)
        check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), dims=("batch", "query", "channel"),
                    name=f"out with fully masked rows ({kind})", hint=hint)
        check_close(w[1, 3], torch.zeros(5), name=f"weights of the fully masked query 3 of batch 1 ({kind})", hint=hint)


@check("grade_sdpa", "gradients with respect to q, k and v equal those of F.scaled_dot_product_attention")
def sdpa_gradients(h):
    with seeded(7):
        m2 = torch.rand(4, 6) < 0.7
        m2[:, 0] = True
        cases = [(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 2), torch.tensor([1, 1, 0, 1, 0]) > 0),
                 (torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3), m2)]
        grads = [torch.randn(*q.shape[:-1], v.size(-1)) for q, k, v, _ in cases]
    for (q, k, v, mask), g in zip(cases, grads):
        check_vjp(h, "scaled_dot_product_attention", (q, k, v), (g, torch.zeros(*q.shape[:-1], k.size(-2))),
                  lambda *qkv, mask: F.scaled_dot_product_attention(*qkv, attn_mask=mask), mask=mask, labels="qkv",
                  name=f"q {tuple(q.shape)}, k {tuple(k.shape)}, boolean mask {tuple(mask.shape)}")


@check("grade_sdpa", "dropout_p > 0 drops attention weights; the returned weights are those before dropout")
def sdpa_dropout(h):
    with seeded(5):
        q, k, v = torch.randn(2, 6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    seed_kernel(h, 5)
    (o1, w1), (o2, w2) = _sdpa(h, q, k, v), _sdpa(h, q, k, v, dropout_p=0.5)
    if torch.allclose(o1, o2):
        raise AssertionError("dropout_p=0.5 did not change the output: apply F.dropout(weights, p=dropout_p) "
                             "before @ v")
    if not torch.allclose(w2, w1, atol=1e-5) and bool(((w2 == 0) | torch.isclose(w2, 2 * w1)).all()):
        raise AssertionError("with dropout_p=0.5 the returned weights are the weights after dropout (zeros and "
                             "doubled values): return the weights before dropout")
    check_close(w2, w1, name="weights returned with dropout_p=0.5", dims=("batch", "query", "key"),
                hint="return the weights before dropout")


@check("grade_sdpa", "does not call F.scaled_dot_product_attention, nn.MultiheadAttention or course.nn "
                     "(source, calls, and the bits of the results)")
def sdpa_no_delegation(h):
    advice = "write softmax(q k^T / sqrt(d_k)) v with @ and softmax"
    with seeded(11):  # where every reference differs bit for bit from plain code (autograder/delegation.py)
        q, k, v = torch.randn(2, 3, 16, 12), torch.randn(2, 3, 40, 12), torch.randn(2, 3, 40, 12)
        pad = (torch.arange(40) < torch.tensor([40, 27])[:, None])[:, None, None, :]
        q3, k3, v3, bias = torch.randn(4, 16, 12), torch.randn(4, 40, 12), torch.randn(4, 40, 7), torch.randn(16, 40)
    cases = ((q, k, v, None, "4-D heads, no mask"), (q, k, v, pad, "4-D heads, padding mask"),
             (q3, k3, v3, bias, "3-D, d_v != d_k, float mask"))

    def bits():
        for q_, k_, v_, mask, where in cases:
            check_attention_not_delegated(*_sdpa(h, q_, k_, v_, mask=mask), q_, k_, v_, mask,
                                          what=f"scaled_dot_product_attention ({where})",
                                          advice=f"implement attention yourself: {advice}")
    scan = dict.fromkeys(("scaled_dot_product_attention", "multi_head_attention_forward", "MultiheadAttention",
                          "reference_attention"), advice)
    check_own_code(h, "sdpa", scan | COURSE_NN, bits=bits,
                   forbidden=(F_SDPA, F_MHA, "course.nn.scaled_dot_product_attention"),
                   run=lambda: _sdpa(h, q3[:1, :2, :4], k3[:1, :3, :4], v3[:1, :3]))


# -- 2. multi-head attention, graded with the reference attention of part 1 -----------------------
def _mha_state(C: int, nh: int) -> dict:
    return ref.MultiHeadAttention(C, nh).state_dict()


def _torch_mha(sd: dict, nh: int, xq, xk, xv, **masks) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.MultiheadAttention with the weights ``sd``: (output, per-head weights)."""
    m = ref.MultiHeadAttention(xq.size(-1), nh)
    m.load_state_dict({k: v for k, v in sd.items() if k in m.state_dict()})
    with quiet():
        out, w = ref.to_torch_mha(m)(xq, xk, xv, average_attn_weights=False, **masks)
    return out.detach(), w.detach()


def _mha(mha, *inputs, **kwargs) -> tuple[torch.Tensor, object]:
    out, w = pair(mha(*inputs, **kwargs), "MultiHeadAttention")
    return tensor(out, "out"), w


def _head_mistakes(sd: dict, nh: int, xq, xk, xv, mask) -> dict:
    """Outputs of an MHA with a classic mistake: heads split or merged without the transpose, q_proj and k_proj
    swapped, values projected with k_proj."""
    B, Tq, C = xq.shape

    def run(bad_split=False, bad_merge=False, q="q", k="k", v="v"):
        def proj(p, x):
            y = F.linear(x, sd[f"{p}_proj.weight"], sd[f"{p}_proj.bias"])
            return y.reshape(B, nh, x.size(1), C // nh) if bad_split else y.view(B, -1, nh, C // nh).transpose(1, 2)
        y = ref.scaled_dot_product_attention(proj(q, xq), proj(k, xk), proj(v, xv), mask)[0]
        return F.linear(y.reshape(B, Tq, C) if bad_merge else y.transpose(1, 2).reshape(B, Tq, C),
                        sd["out_proj.weight"], sd["out_proj.bias"])
    return {"heads split with view(B, nh, T, hs) instead of view(B, T, nh, hs).transpose(1, 2)": run(bad_split=True),
            "heads merged without transpose(1, 2) before reshape(B, T, C)": run(bad_merge=True),
            "q_proj and k_proj swapped (queries come from q_proj(query), keys from k_proj(key))": run(q="k", k="q"),
            "values projected with k_proj instead of v_proj": run(v="k")}


@check("grade_mha", "output and weight shapes, output equals nn.MultiheadAttention on (2, 5, 12) (the visible tests)",
       mirrors_visible=True)
def mha_visible(h):
    with seeded(2):
        sd, x = _mha_state(12, 3), torch.randn(2, 5, 12)
    with h.substituted(**REF_ATTENTION):
        mha, sd = module_like(h, "MultiHeadAttention", 12, 3, state=sd)
        out, w = _mha(mha, x, x, x, need_weights=True)
    tensor(out, "out", shape=(2, 5, 12))
    tensor(w, "weights", shape=(2, 3, 5, 5))
    check_close(out, _torch_mha(sd, 3, x, x, x)[0], atol=1e-5, rtol=1e-5, name="output vs nn.MultiheadAttention",
                likely=_head_mistakes(sd, 3, x, x, x, None))


def _mha_trial(trial: int):
    """Random sizes; self-attention (one tensor object for query, key and value) or cross-attention; no mask, a key
    padding mask, a causal mask (self-attention) or both: as the notebook's (True = may attend) and PyTorch's."""
    nh = rint(1, 5)
    C, B, Tq, Tk = nh * rint(1, 6), rint(1, 4), rint(1, 8), rint(1, 8)
    cross = trial % 2 == 1
    Tk = Tk if cross else Tq
    sd, xq = _mha_state(C, nh), torch.randn(B, Tq, C)
    xk, xv = (torch.randn(B, Tk, C), torch.randn(B, Tk, C)) if cross else (xq, xq)
    kpm = torch.arange(Tk)[None, :] >= torch.randint(1, Tk + 1, (B,))[:, None] if trial % 4 >= 2 else None
    am = ~torch.ones(Tq, Tk, dtype=torch.bool).tril() if not cross and trial % 8 >= 4 else None
    mask = None if kpm is None else (~kpm)[:, None, None, :]
    if am is not None:
        mask = ~am if mask is None else mask & ~am
    masks = " + ".join(n for n, m in (("key padding mask", kpm), ("causal mask", am)) if m is not None) or "no mask"
    where = f"({'cross' if cross else 'self'}-attention, B={B}, Tq={Tq}, Tk={Tk}, d_model={C}, n_heads={nh}, {masks})"
    return sd, nh, (xq, xk, xv), mask, dict(key_padding_mask=kpm, attn_mask=am), where


@check("grade_mha", "matches nn.MultiheadAttention (outputs and per-head weights) on random sizes: self-attention "
                    "(mha(x, x, x)) and cross-attention with causal, key padding and combined masks")
def mha_random(h):
    with h.substituted(**REF_ATTENTION), quiet():
        for trial, (sd, nh, inputs, mask, torch_masks, where) in enumerate(drawn(4321, 8, _mha_trial)):
            B, Tq, C = inputs[0].shape
            mha = module(h, "MultiHeadAttention", C, nh, state=sd, train=True)  # dropout=0.0
            try:
                out, w = _mha(mha, *inputs, mask=mask, need_weights=True)
            except StudentError as e:
                if "is invalid for input of size" not in e.safe_message:
                    raise
                raise AssertionError(f"MultiHeadAttention could not reshape {where}: split queries with (B, Tq, "
                                     "n_heads, head_dim) and keys and values with the key length Tk, head_dim = "
                                     "d_model // n_heads (nothing hard-coded)") from None
            ref_out, ref_w = _torch_mha(sd, nh, *inputs, **torch_masks)
            tensor(out, f"out {where}", shape=(B, Tq, C))
            check_close(tensor(w, f"weights {where}"), ref_w, atol=1e-5, name=f"weights {where}", dims=ATTN_DIMS,
                        hint="q from query, k and v from key and value; split heads with view(B, T, nh, hs)"
                             ".transpose(1, 2)")
            check_close(out, ref_out, atol=1e-5, name=f"out {where}", likely=_head_mistakes(sd, nh, *inputs, mask),
                        hint="merge heads with transpose(1, 2).reshape(B, T, C) before out_proj")
            if trial % 4 == 0 and _mha(mha, *inputs, mask=mask)[1] is not None:
                raise AssertionError("need_weights=False should return None as weights")


@check("grade_mha", "parameters: the four projections q_proj, k_proj, v_proj, out_proj (nn.Linear with bias)")
def mha_parameters(h):
    linear = {f"{p}_proj.{t}": (8, 8) if t == "weight" else (8,) for p in ("q", "k", "v", "out")
              for t in ("weight", "bias")}
    check_parameters(h, h.construct("MultiHeadAttention", 8, 2), linear, name="MultiHeadAttention(8, 2)",
                     want="the parameters of four nn.Linear(8, 8) with bias")


@check("grade_mha", "dropout on the attention weights in training mode only")
def mha_dropout(h):
    with seeded(3):
        x, sd = torch.randn(2, 6, 16), _mha_state(16, 4)
    with h.substituted(**REF_ATTENTION):
        seed_kernel(h, 3)
        mha = module(h, "MultiHeadAttention", 16, 4, dropout=0.5, train=True)
        o1, o2 = (_mha(mha, x, x, x)[0] for _ in range(2))
        mha.eval()
        o3, o4 = (_mha(mha, x, x, x)[0] for _ in range(2))
        o5 = _mha(module(h, "MultiHeadAttention", 16, 4, dropout=1.0, state=sd, train=True), x, x, x)[0]
    if torch.allclose(o1, o2):
        raise AssertionError("MultiHeadAttention(dropout=0.5) in training mode gave the same output twice: "
                             "pass dropout_p=self.dropout to the attention while self.training")
    check_close(o4, o3, name="two outputs in eval mode",
                hint="no dropout in eval mode (dropout_p=0 unless self.training)")
    if not torch.allclose(o5, sd["out_proj.bias"].expand(2, 6, 16), atol=1e-6):
        raise AssertionError("dropout=1.0 in training mode should drop every attention weight (the output is then "
                             "out_proj's bias): apply the dropout to the attention weights, not to the output")


@check("grade_mha", "gradients (inputs and all four projections) equal those of the reference layer, "
                    "for self-attention (one input) and cross-attention")
def mha_gradients(h):
    with seeded(44):
        sd = _mha_state(8, 2)
        xq, xk, xv, g = torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    reference = ref.MultiHeadAttention(8, 2)
    reference.load_state_dict(sd)
    with h.substituted(**REF_ATTENTION):
        mha = module(h, "MultiHeadAttention", 8, 2, state=sd, train=True)
        for inputs, kind in (((xq, xk, xv), "cross-attention"), ((xq, xq, xq), "self-attention")):
            check_module_grads(mha, reference, inputs, g, f"MultiHeadAttention ({kind})")


@check("grade_mha", "does not use nn.MultiheadAttention, F.multi_head_attention_forward, "
                    "F.scaled_dot_product_attention or course.nn (source, calls, and the bits of the results)")
def mha_no_delegation(h):
    advice, mine = "write the projections and the head reshapes yourself", "call your scaled_dot_product_attention"
    C, nh = 36, 3  # head size 12: not a power of 4 (autograder/delegation.py)
    with seeded(12):
        sd = _mha_state(C, nh)
        x, xq, xk, xv = torch.randn(2, 8, C), torch.randn(2, 7, C), torch.randn(2, 9, C), torch.randn(2, 9, C)
        pad = (torch.arange(9) < torch.tensor([9, 5])[:, None])[:, None, None, :]
        bias = torch.randn(7, 9)
    cases = [((x, x, x), None, False, "self-attention, no mask"),
             ((x, x, x), torch.ones(8, 8).tril() > 0, True, "self-attention, causal mask, need_weights=True"),
             ((xq, xk, xv), pad, False, "cross-attention, padding mask"),
             ((xq, xk, xv), bias, True, "cross-attention, float mask, need_weights=True")]
    scan = dict.fromkeys(("MultiheadAttention", "multi_head_attention_forward", "to_torch_mha"), advice) | \
        dict.fromkeys(("F.scaled_dot_product_attention", "functional.scaled_dot_product_attention",
                       "reference_attention"), mine)

    def bits():
        for inputs, mask, nw, where in cases:
            out = _mha(mha, *inputs, mask=mask, need_weights=nw)[0]
            check_not_reference(out, mha_references(sd, nh, *inputs, mask), mha_honest(sd, nh, *inputs, mask),
                                what=f"MultiHeadAttention's output ({where})", advice=f"{advice} and {mine}")
    with h.substituted(**REF_ATTENTION):
        mha, x3 = module(h, "MultiHeadAttention", C, nh, state=sd), x[:1, :3]
        check_own_code(h, "mha", scan | COURSE_NN, follow=False, bits=bits,
                       forbidden=(F_SDPA, F_MHA, "torch.nn.MultiheadAttention", "course.nn.MultiHeadAttention"),
                       run=lambda: [mha(x3, x3, x3, need_weights=nw) for nw in (True, False)])


# -- 3. sinusoidal positional encoding -------------------------------------------------------------
def _pe_table(T: int, d: int, *, swap=False, concat=False, step=2) -> torch.Tensor:
    """The table in float64; with a classic mistake when asked (the ``likely`` of the checks)."""
    pos, i = torch.arange(T, dtype=torch.float64)[:, None], torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), (i if step == 2 else i / 2) / d)
    sin, cos = (torch.cos(ang), torch.sin(ang)) if swap else (torch.sin(ang), torch.cos(ang))
    if concat:
        return torch.cat([sin, cos], 1)
    return torch.stack([sin, cos], -1).reshape(T, d)


def _pe(h, T, d) -> torch.Tensor:
    return tensor(h.call("sinusoidal_positional_encoding", T, d), f"pe (max_len={T}, d_model={d})", shape=(T, d),
                  dtype=torch.float32, dims=("position", "channel"), why=" (torch.zeros and torch.arange's default)")


@check("grade_pe", "shape (10, 4), channel 0 = sin(pos), channel 3 = cos(pos / 100) (the visible tests)",
       mirrors_visible=True)
def pe_visible(h):
    pe, pos = _pe(h, 10, 4), torch.arange(10.0)  # a float32 table: the visible torch.allclose raises on another dtype
    check_close(pe[:, 0], torch.sin(pos), atol=1e-6, rtol=1e-5, name="channel 0 (should be sin(pos))",
                likely={"cos(pos): sin and cos swapped (sines go in the even channels)": torch.cos(pos)})
    check_close(pe[:, 3], torch.cos(pos / 100.0), atol=1e-6, rtol=1e-5,
                name="channel 3 (should be cos(pos / 10000^(2/4)))")


@check("grade_pe", "matches sin/cos(pos / 10000^(2i/d)) for random max_len and even d_model, as float32")
def pe_random(h):
    for T, d in drawn(777, 8, lambda _: (rint(1, 300), 2 * rint(1, 65))) + [(5, 2)]:
        likely = {"sin and cos swapped: sines go in the even channels 0, 2, 4, ..., cosines in the odd ones":
                  _pe_table(T, d, swap=True), "sines and cosines concatenated [sin | cos] instead of interleaved "
                  "(pe[:, 0::2] = sin, pe[:, 1::2] = cos)": _pe_table(T, d, concat=True),
                  "frequency 10000^(-i/d) instead of 10000^(-2i/d) (i counts channel pairs)": _pe_table(T, d, step=1)}
        check_close(_pe(h, T, d), _pe_table(T, d), atol=2e-4 if T > 5 else 1e-6, rtol=0, dims=("position", "channel"),
                    name=f"pe (max_len={T}, d_model={d})", likely=likely, hint="sines in channels 0, 2, 4, ..., "
                    "cosines in 1, 3, 5, ...; frequency 10000^(-2i/d), 2i = 0, 2, 4, ...")


@check("grade_pe", "odd d_model raises ValueError; the table does not depend on max_len; no course.nn")
def pe_edge_cases(h):
    check_raises(h, "sinusoidal_positional_encoding", 8, 7, error="ValueError", why="odd d_model")
    check_close(_pe(h, 40, 32)[:10], _pe(h, 10, 32), atol=1e-6, name="first 10 rows of pe(40, 32) vs pe(10, 32)",
                dims=("position", "channel"))
    check_own_code(h, "pe", COURSE_NN, forbidden=["course.nn.sinusoidal_positional_encoding"], run=lambda: _pe(h, 6, 8))


# -- 4. is_permutation_equivariant: the student's test runs on functions built in their kernel -----
def _is_eq(h, fn, x, dim, desc, **kwargs) -> bool:
    got = h.call("is_permutation_equivariant", fn, x, dim=dim, **kwargs)
    if type(got) is not bool:
        raise AssertionError(f"is_permutation_equivariant should return True or False, got {what(got)} ({desc})")
    return got


@check("grade_perm", "True for 2 * t + 1, False for a cumsum over the tokens (the visible tests)", mirrors_visible=True)
def perm_visible(h):
    with seeded(3):
        x = torch.randn(2, 6, 4)
    seed_kernel(h, 3)
    partial = h.library("functools.partial")
    two_t_plus_1 = partial(h.library("torch.lerp"), end=torch.tensor(-1.0), weight=-1.0)  # t - (-1 - t) = 2t + 1
    if _is_eq(h, two_t_plus_1, x, 1, "2 * t + 1") is not True:
        raise AssertionError("an elementwise function (2 * t + 1) is permutation-equivariant: your test says False, "
                             "expected True (compare fn(x[perm]) with fn(x)[perm]: the same permutation on both sides)")
    if _is_eq(h, partial(h.library("torch.cumsum"), dim=1), x, 1, "cumsum over the tokens") is not False:
        raise AssertionError("cumsum over the tokens is not permutation-equivariant: your test says True, expected "
                             "False")


@check("grade_perm", "right answer for attention blocks, per-token layers, normalisations, sorting, shifts and "
                     "position-dependent functions, with the tokens on dim 0, 1 or 2; differences below atol are equal")
def perm_cases(h):
    with seeded(2024):
        x, x0, x2 = torch.randn(2, 9, 12), torch.randn(7, 3), torch.randn(2, 3, 8)
        pe = ref.sinusoidal_positional_encoding(9, 12)
    lib, partial = h.library, h.library("functools.partial")
    seed_kernel(h, 2024)
    add, pos, block = lib("torch.add"), torch.arange(9.0)[:, None], lib("torch.nn.TransformerEncoderLayer")(
        12, 3, 24, dropout=0.0, batch_first=True)
    per_token = lib("torch.nn.Sequential")(lib("torch.nn.LayerNorm")(12), lib("torch.nn.Linear")(12, 5))
    future = ~torch.ones(9, 9, dtype=torch.bool).tril()  # nn's convention: True = may not attend
    cases = [  # (what, fn, input, the tokens' dim, equivariant?, is_permutation_equivariant's keywords)
        ("t + 1e-7 * position with atol=1e-5 (below atol: equal)", partial(add, other=1e-7 * pos), x, 1, True, 1e-5),
        ("t + 1e-3 * position with atol=1e-5 (above atol: different)", partial(add, other=1e-3 * pos), x, 1, False,
         1e-5),
        ("a self-attention block (nn.TransformerEncoderLayer)", block, x, 1, True, None),
        ("the same block with a causal mask", partial(block, src_mask=future), x, 1, False, None),
        ("adding a positional encoding", partial(add, other=pe), x, 1, False, None),
        ("LayerNorm + Linear on each token", per_token, x, 1, True, None),
        ("normalising over the tokens", partial(lib("torch.nn.functional.normalize"), dim=1), x, 1, True, None),
        ("shifting by one token (torch.roll)", partial(lib("torch.roll"), shifts=1, dims=1), x, 1, False, None),
        ("reversing the tokens (torch.flip)", partial(lib("torch.flip"), dims=[1]), x, 1, False, None),
        ("tanh, tokens on dim 0", lib("torch.tanh"), x0, 0, True, None),
        ("sorting along the tokens, tokens on dim 0", lib("torch.msort"), x0, 0, False, None),
        ("weighting by position, tokens on dim 0", partial(lib("torch.mul"), other=pos[:7]), x0, 0, False, None),
        ("softmax over the tokens, tokens on dim 2", partial(lib("torch.softmax"), dim=2), x2, 2, True, None),
        ("cumsum over the tokens, tokens on dim 2", partial(lib("torch.cumsum"), dim=2), x2, 2, False, None)]
    with torch.no_grad():
        for desc, fn, inp, dim, expected, atol in cases:
            got = _is_eq(h, fn, inp, dim, desc, **({} if atol is None else dict(atol=atol)))
            if got is not expected:
                where = "" if dim == 1 else ": permute along the dim argument, not always dim 1"
                raise AssertionError(f"{desc} (tokens on dim {dim}): your test says {got}, expected {expected}{where}")


# -- 5. causal mask --------------------------------------------------------------------------------
def _check_mask(h, T: int, name: str = "", **kwargs) -> None:
    """The student's causal_mask(T) is a (T, T) bool tensor, True exactly where key j <= query i; else its
    mistake is named."""
    name = name or f"causal_mask({T})"
    m = tensor(h.call("causal_mask", T, **kwargs), name, shape=(T, T), dtype=torch.bool, dims=("query", "key"),
               why=" (True = may attend)")
    ones = torch.ones(T, T, dtype=torch.bool)
    if torch.equal(m, ones.tril()):
        return
    for wrong, why in ((~ones.tril(), "True above the diagonal, i.e. on future keys: the mask is inverted (True must "
                                      "mean 'may attend': key j <= query i)"),
                       (ones.tril(-1), "the diagonal is False: a token must attend to itself (True where key j <= "
                                       "query i, diagonal included: tril(), not tril(-1))"),
                       (ones.tril(1), "True one step above the diagonal: the mask is shifted, query i sees key i + 1 "
                                      "(use tril(), diagonal 0)"),
                       (ones.tril().t(), "it is transposed: rows are queries, columns keys (True where key j <= "
                                         "query i)")):
        if torch.equal(m, wrong):
            raise AssertionError(f"{name}: {why}")
    i, j = (m != ones.tril()).nonzero()[0].tolist()
    raise AssertionError(f"{name}: it is wrong at query {i}, key {j}: True exactly where key j <= query i")


@check("grade_causal", "causal_mask(3) is a (3, 3) bool tensor, lower-triangular (the visible tests)",
       mirrors_visible=True)
def causal_visible(h):
    _check_mask(h, 3)


@check("grade_causal", "True exactly where key j <= query i, for T = 1, 2, 5, 17, 64; accepts a device argument; "
                       "makes nn.MultiheadAttention causal as ~causal_mask(T)")
def causal_sizes(h):
    for T in (1, 2, 5, 17, 64):
        _check_mask(h, T)
    for dev, desc in (("cpu", "device='cpu'"), (h.library("torch.device")("cpu"), "device=torch.device('cpu')")):
        _check_mask(h, 4, f"causal_mask(4, {desc})", device=dev)
    # on PyTorch's "meta" device (no data, so any machine has it): the mask stays in the kernel, only its device
    # type comes back: list(map(attrgetter("device.type"), map(partial(causal_mask, device="meta"), [3])))
    lib = h.library
    made = lib("builtins.map")(lib("functools.partial")(lib("__main__.causal_mask"), device="meta"), [3])
    where = lib("builtins.list")(lib("builtins.map")(lib("operator.attrgetter")("device.type"), made))
    if where != ["meta"]:
        raise AssertionError(f"causal_mask(3, device='meta') made its mask on {where}: create it on the device given "
                             "(torch.ones(T, T, dtype=torch.bool, device=device))")
    m = tensor(h.call("causal_mask", 7), "causal_mask(7)", shape=(7, 7), dtype=torch.bool)
    with seeded(55), quiet():
        mha, x = nn.MultiheadAttention(8, 2, batch_first=True).eval(), torch.randn(2, 7, 8)
    check_causal(lambda t: mha(t, t, t, attn_mask=~m, need_weights=False)[0], x, dim=1,
                 name="nn.MultiheadAttention with attn_mask=~causal_mask(7)")
    check_own_code(h, "causal", COURSE_NN)


# -- 6. encoder and decoder blocks ("enc", "dec"), graded with the reference MultiHeadAttention ---
BLOCK = {"enc": "EncoderBlock", "dec": "DecoderBlock"}
DROPOUT_SITES = {"enc": {"dropout": "inside the FFN, after the ReLU", "dropout1": "to the self-attention branch",
                         "dropout2": "to the FFN branch"},
                 "dec": {"dropout": "inside the FFN, after the ReLU", "dropout1": "to the self-attention branch",
                         "dropout2": "to the cross-attention branch", "dropout3": "to the FFN branch"}}


def _ref_block(kind: str, C, nh, d_ff, norm_first, sd: dict | None = None) -> nn.Module:
    """course.nn's block: with random LayerNorms (``sd`` None), else with the weights ``sd`` in eval mode."""
    block = (ref.EncoderBlock if kind == "enc" else ref.DecoderBlock)(C, nh, d_ff, 0.0, norm_first)
    if sd is None:
        return randomize_norms(block)
    block.load_state_dict({k: v for k, v in sd.items() if k in block.state_dict()})
    return block.eval()


def _torch_layer(kind: str, sd: dict, C, nh, d_ff, norm_first) -> nn.Module:
    """PyTorch's layer with the weights ``sd`` (masks: True = may *not* attend)."""
    with quiet():
        block = _ref_block(kind, C, nh, d_ff, norm_first, sd)
        return (ref.to_torch_encoder_layer if kind == "enc" else ref.to_torch_decoder_layer)(block)


def _block_mistakes(kind, sd, C, nh, d_ff, norm_first, *inputs) -> dict:
    """What a block with a classic mistake returns for ``inputs`` (masks as the notebook's: True = may attend)."""
    out, (x, *rest) = {}, (*inputs, None, None, None)  # rest: (mask, ...) or (memory, tgt_mask, memory_mask)
    with torch.no_grad():
        want = "pre-norm" if norm_first else "post-norm"
        out[f"{'post' if norm_first else 'pre'}-norm, but norm_first={norm_first} asks for {want}"] = \
            _ref_block(kind, C, nh, d_ff, not norm_first, sd)(*inputs)
        b = _ref_block(kind, C, nh, d_ff, norm_first, sd)
        with planted([b], "_ff_block", lambda b: lambda t: b.linear2(F.gelu(b.linear1(t)))):
            out["an FFN with GELU: the notebook's blocks use ReLU"] = b(*inputs)
        if kind == "dec":
            b.norm2, b.norm3 = b.norm3, b.norm2
            out["norm2 and norm3 swapped: norm2 goes with the cross-attention, norm3 with the FFN"] = b(*inputs)
            b.norm2, b.norm3 = b.norm3, b.norm2
        if norm_first:  # x = LN(x); x = x + f(x) for each sublayer
            steps = [(b.norm1, lambda t: b._sa_block(t, rest[0] if kind == "enc" else rest[1]))]
            steps += [(b.norm2, lambda t: b._ca_block(t, rest[0], rest[2]))] if kind == "dec" else []
            for norm, f in steps + [(b.norm2 if kind == "enc" else b.norm3, b._ff_block)]:
                x = norm(x)
                x = x + f(x)
            out["pre-norm with the residual taken after the norm: x + f(LN(x)) adds the un-normalised x"] = x
    return out


def _block_visible(h, kind: str, seed: int) -> None:
    """The visible tests: Block(8, 2, 16), post-norm and pre-norm, equals PyTorch's layer (the decoder: causal)."""
    name, causal = BLOCK[kind], torch.ones(4, 4, dtype=torch.bool).tril()
    mine, theirs, masks = ({}, {}, ()) if kind == "enc" else (dict(tgt_mask=causal), dict(tgt_mask=~causal), (causal,))
    with seeded(seed), h.substituted(**REF_MHA), quiet():
        for nf in (False, True):  # the visible cell draws the block's weights, then the inputs, under one seed
            blk, sd = module_like(h, name, 8, 2, 16, dropout=0.0, norm_first=nf,
                                  state=_ref_block(kind, 8, 2, 16, nf).state_dict())
            inputs = (torch.randn(2, 4, 8),) if kind == "enc" else (torch.randn(2, 4, 8), torch.randn(2, 3, 8))
            out = tensor(blk(*inputs, **mine), f"{name} output", shape=(2, 4, 8), dims=TOKEN_DIMS)
            check_close(out, _torch_layer(kind, sd, 8, 2, 16, nf)(*inputs, **theirs).detach(), atol=1e-5, rtol=1e-5,
                        name=f"{name}(norm_first={nf}) output", dims=TOKEN_DIMS,
                        likely=_block_mistakes(kind, sd, 8, 2, 16, nf, *inputs, *masks))


def _block_trial(kind: str, trial: int):
    """Random sizes, post-norm or pre-norm, dropout 0.2 or 0 (in eval mode), a source padding mask (True = padded)."""
    nh = rint(1, 4)
    C, d_ff, B, S = nh * rint(2, 6), rint(4, 40), rint(1, 4), rint(2, 9)
    T, nf = rint(1, 8) if kind == "dec" else S, bool(trial % 2)
    pad = torch.arange(S)[None, :] >= torch.randint(1, S + 1, (B,))[:, None]
    if kind == "enc":
        pad[0, -1] = True  # at least one padded key
    sd = _ref_block(kind, C, nh, d_ff, nf).state_dict()
    inputs = (torch.randn(B, T, C),) + ((torch.randn(B, S, C),) if kind == "dec" else ())
    p = 0.2 if trial < 2 else 0.0  # eval() must switch every dropout off
    where = f"(B={B}, T={T}, S={S}, d_model={C}, n_heads={nh}, d_ff={d_ff}, norm_first={nf}, dropout={p}, eval mode)"
    return (C, nh, d_ff, nf), sd, inputs, pad, p, where


def _student_block(h, kind: str, size: tuple, sd: dict, p: float = 0.0):
    """The student's block of ``size`` (d_model, n_heads, d_ff, norm_first) with the weights ``sd``, in eval mode."""
    return module(h, BLOCK[kind], *size[:3], dropout=p, norm_first=size[3], state=sd)


def _blocks_not_delegated(h, kind: str, seed: int, norm_first: bool) -> None:
    name, part = BLOCK[kind], {"enc": "encoder", "dec": "decoder"}[kind]
    advice = "build the block from your own sublayers (MultiHeadAttention, nn.Linear, nn.LayerNorm)"
    C, nh, d_ff = 36, 3, 40  # with course.nn's fingerprinted MHA, PyTorch's layers cannot give the same bits
    with seeded(seed):
        sd = _ref_block(kind, C, nh, d_ff, norm_first).state_dict()
        y, memory = torch.randn(2, 5, C), torch.randn(2, 6, C)
    pad, causal = (torch.arange(6) < torch.tensor([6, 4])[:, None])[:, None, None, :], torch.ones(5, 5).tril() > 0
    inputs = (memory, pad) if kind == "enc" else (y, memory, causal, pad)

    def bits():
        with h.substituted(**REF_MHA):
            blk = module(h, name, C, nh, d_ff, dropout=0.0, norm_first=norm_first, state=sd)
            out = tensor(blk(memory, mask=pad) if kind == "enc" else blk(y, memory, tgt_mask=causal, memory_mask=pad),
                         name)
        with torch.no_grad():
            honest = {f"{name} built from MultiHeadAttention": _ref_block(kind, C, nh, d_ff, norm_first, sd)(*inputs)}
        refs = (encoder_references if kind == "enc" else decoder_references)(sd, nh, d_ff, norm_first, *inputs)
        check_not_reference(out, refs, honest, what=f"the output of {name}(norm_first={norm_first})", advice=advice)
    check_own_code(h, f"{part}_block", {f"Transformer{part.title()}Layer": "write the sublayers with your own modules",
                                        f"to_torch_{part}_layer": advice} | COURSE_NN | dict.fromkeys(
        ("MultiheadAttention", "to_torch_mha"), "use your MultiHeadAttention"), bits=bits)


@check("grade_encoder_block", "EncoderBlock(8, 2, 16) equals nn.TransformerEncoderLayer, post-norm and pre-norm "
                              "(the visible tests)", mirrors_visible=True)
def encoder_visible(h):
    _block_visible(h, "enc", 6)


@check("grade_encoder_block", "matches nn.TransformerEncoderLayer with and without a source padding mask "
                              "(random sizes, post-norm and pre-norm, eval mode with and without dropout)")
def encoder_random(h):
    with h.substituted(**REF_MHA), quiet():
        for size, sd, (x,), pad, p, where in drawn(6006, 4, lambda t: _block_trial("enc", t)):
            enc, layer = _student_block(h, "enc", size, sd, p), _torch_layer("enc", sd, *size)
            keep = (~pad)[:, None, None, :]
            likely = _block_mistakes("enc", sd, *size, x, keep) | {
                "the block without its mask: pass mask to the self-attention": layer(x).detach()}
            check_close(tensor(enc(x, mask=keep), "EncoderBlock output"), layer(x, src_key_padding_mask=pad).detach(),
                        atol=1e-5, name=f"EncoderBlock output with a padding mask {where}", dims=TOKEN_DIMS,
                        likely=likely)
            check_close(tensor(enc(x), "EncoderBlock output"), layer(x).detach(), atol=1e-5, dims=TOKEN_DIMS,
                        name=f"EncoderBlock output without a mask {where}")


@check("grade_encoder_block", "each dropout (dropout, dropout1, dropout2) acts in training mode only; gradients "
                              "equal those of the reference block")
def encoder_dropout_and_gradients(h):
    with seeded(61):
        x, g, sd = torch.randn(2, 5, 8), torch.randn(2, 5, 8), _ref_block("enc", 8, 2, 16, False).state_dict()
    with h.substituted(**REF_MHA):
        enc = module(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=True)
        check_dropout_sites(h, enc, DROPOUT_SITES["enc"], lambda: enc(x), name="EncoderBlock", seed=61)
        enc = module(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=False, state=sd, train=True)
        check_module_grads(enc, _ref_block("enc", 8, 2, 16, False, sd), (x,), g, "EncoderBlock(norm_first=False)")


@check("grade_encoder_block", "does not use nn.TransformerEncoderLayer, nn.MultiheadAttention or course.nn "
                              "(source, and the bits of the results)")
def encoder_no_delegation(h):
    _blocks_not_delegated(h, "enc", 62, False)


@check("grade_decoder_block", "DecoderBlock(8, 2, 16) with a causal tgt_mask equals nn.TransformerDecoderLayer, "
                              "post-norm and pre-norm (the visible tests)", mirrors_visible=True)
def decoder_visible(h):
    _block_visible(h, "dec", 7)


@check("grade_decoder_block", "matches nn.TransformerDecoderLayer with causal and source padding masks, and without "
                              "masks (random sizes, post-norm and pre-norm); the output depends on the memory; "
                              "cross_attn_weights stored, detached, zero on source padding")
def decoder_random(h):
    with h.substituted(**REF_MHA), quiet():
        trials = drawn(7007, 4, lambda t: _block_trial("dec", t))
        for trial, (size, sd, (y, memory), pad, p, where) in enumerate(trials):
            (B, T, _), causal = y.shape, torch.ones(y.size(1), y.size(1), dtype=torch.bool).tril()
            dec, layer = _student_block(h, "dec", size, sd, p), _torch_layer("dec", sd, *size)
            if trial == 0:
                a, b = (tensor(dec(y, m), "DecoderBlock output") for m in (memory, memory.flip(1) + 1.0))
                if torch.allclose(a, b, atol=1e-6):
                    raise AssertionError("DecoderBlock's output does not depend on the encoder memory: the "
                                         "cross-attention takes its queries from x and its keys and values from memory")
            out = tensor(dec(y, memory, tgt_mask=causal, memory_mask=(~pad)[:, None, None, :]), "DecoderBlock output")
            check_close(out, layer(y, memory, tgt_mask=~causal, memory_key_padding_mask=pad).detach(), atol=1e-5,
                        name=f"DecoderBlock output with causal and padding masks {where}", dims=TOKEN_DIMS,
                        likely=_block_mistakes("dec", sd, *size, y, memory, causal, (~pad)[:, None, None, :]))
            w = tensor(dec.attr("cross_attn_weights"), f"cross_attn_weights {where}", dims=ATTN_DIMS,
                       shape=(B, size[1], T, pad.size(1)))
            check_rows_sum_to_one(w, name=f"cross_attn_weights {where}", dims=ATTN_DIMS)
            check_zero_where(w, pad[:, None, None, :], name=f"cross_attn_weights {where}", what="source padding",
                             dims=ATTN_DIMS)
            if trial == 0 and attribute(h, dec, "cross_attn_weights.requires_grad") is not False:
                raise AssertionError("store the cross-attention weights detached (weights.detach())")
            if trial % 2 == 1:
                check_close(tensor(dec(y, memory), "DecoderBlock output"), layer(y, memory).detach(), atol=1e-5,
                            name=f"DecoderBlock output without masks {where}", dims=TOKEN_DIMS)


@check("grade_decoder_block", "causal with tgt_mask=causal_mask(T); each dropout acts in training mode only; "
                              "gradients (input, memory, every parameter) equal those of the reference block")
def decoder_causal_dropout_gradients(h):
    with seeded(72):
        y, memory, g = torch.randn(2, 6, 8), torch.randn(2, 4, 8), torch.randn(2, 6, 8)
        sd = _ref_block("dec", 8, 2, 16, True).state_dict()
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with h.substituted(**REF_MHA):
        dec = module(h, "DecoderBlock", 8, 2, 16, dropout=0.0, norm_first=True, state=sd)
        check_causal_remote(lambda t, mem: dec(t, mem, tgt_mask=causal), y, repeat=(memory,),
                            name="DecoderBlock(norm_first=True) with tgt_mask=causal_mask(6)")
        check_dropout_sites(h, dec, DROPOUT_SITES["dec"], lambda: dec(y, memory), name="DecoderBlock", seed=72)
        check_module_grads(dec.train(), _ref_block("dec", 8, 2, 16, True, sd), (y, memory), g,
                           "DecoderBlock(norm_first=True)")


@check("grade_decoder_block", "does not use nn.TransformerDecoderLayer, nn.MultiheadAttention or course.nn "
                              "(source, and the bits of the results)")
def decoder_no_delegation(h):
    _blocks_not_delegated(h, "dec", 73, True)


# -- 7. the Transformer, graded with the references of parts 2-6 (course.nn) -----------------------
def _batch(B, L, V, pad):
    lengths = torch.randint(2, L + 1, (B,))
    lengths[0] = L
    x = torch.randint(4, V, (B, L))
    x[:, 0], x[torch.arange(B), lengths - 1] = 2, 3
    x[torch.arange(L)[None, :] >= lengths[:, None]] = pad
    return x


def _transformer(h, cfg: ref.TransformerConfig, state=None, shared=False):
    """The student's Transformer built from their TransformerConfig; ``shared``: built once per grade cell
    (``h.cache``) for the checks that only read it."""
    key = ("transformer", repr(cfg))
    if shared and key in h.cache:
        return h.cache[key]
    model = module(h, "Transformer", h.construct("TransformerConfig", **cfg.__dict__), state=state)
    return h.cache.setdefault(key, model) if shared else model


def _case(trial: int):
    """Pre-norm tied (pad id 0) or post-norm untied (pad id 1): configuration, reference with random norms, batches."""
    cfg = ref.TransformerConfig(12 + trial, 14, d_model=16, n_heads=2, n_layers=2, d_ff=24, dropout=0.3,
                                norm_first=trial == 0, tie_weights=trial == 0, max_len=20, pad_id=trial)
    model = randomize_norms(ref.Transformer(cfg)).eval()
    return cfg, model, _batch(3, 7, cfg.src_vocab_size, trial), _batch(3, 6, cfg.tgt_vocab_size, trial)


def _expected(model: ref.Transformer, src, tgt) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The reference logits; those with positions counted from 1 (``pe[1:T+1]``, accepted); what classic mistakes
    give (``likely``)."""
    cfg, pe, scale, embeds = model.cfg, model.pe, math.sqrt(model.cfg.d_model), (model.src_embed, model.tgt_embed)
    mistakes = {  # the mistake: what is planted (objects, attribute, its value for each)
        "embeddings not scaled by sqrt(d_model) before adding the positional encoding":
            (embeds, "forward", lambda e: lambda ids: F.embedding(ids, e.weight) / scale),
        # (E + pe) * s = (E + pe (s - 1) / s) * s + pe
        "(embeddings + pe) * sqrt(d_model): scale the embeddings first, then add the positional encoding":
            (embeds, "forward", lambda e: lambda ids: F.embedding(ids, e.weight)
             + pe[:ids.size(1)] * (scale - 1) / scale),
        "a decoder whose cross-attention gets no source padding mask: pass memory_mask=src_mask(src)":
            (model.decoder, "forward", lambda b: lambda y, mem, tgt_mask=None, memory_mask=None:
             ref.DecoderBlock.forward(b, y, mem, tgt_mask))}
    if cfg.pad_id != 0:
        mistakes["the padding mask built with src != 0 instead of src != cfg.pad_id"] = ([cfg], "pad_id", lambda c: 0)
    likely = {}
    with torch.no_grad():
        with planted([model], "pe", lambda m: torch.cat([pe[1:], pe[:1]])):
            shifted = model(src, tgt)
        for why, (objs, name, make) in mistakes.items():
            with planted(objs, name, make):
                likely[why] = model(src, tgt)
        return model(src, tgt), shifted, likely


@check("grade_transformer", "logits of shape (1, 3, 10) (the visible tests)", mirrors_visible=True)
def transformer_visible(h):
    cfg = ref.TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16)
    with h.substituted(**REF_BLOCKS):
        logits = _transformer(h, cfg)(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]]))
    tensor(logits, "logits", shape=(1, 3, 10), dims=LOGIT_DIMS)


@check("grade_transformer", "logits equal the reference Transformer with the same weights: pre-norm and post-norm, "
                            "tied and untied, pad id 0 and 1, padded batches; decode(tgt, encode(src), src) == forward")
def transformer_logits(h):
    with h.substituted(**REF_BLOCKS):
        for cfg, model, src, tgt in drawn(8080, 2, _case):
            desc = f"(norm_first={cfg.norm_first}, tie_weights={cfg.tie_weights}, pad_id={cfg.pad_id})"
            mine = _transformer(h, cfg, model.state_dict(), shared=True)
            check_causal_remote(lambda t, s: mine(s, t), tgt, repeat=(src,), name=f"Transformer over the target "
                                f"positions {desc}")
            want, shifted, likely = _expected(model, src, tgt)
            got = tensor(mine(src, tgt), f"logits {desc}", shape=want.shape, dims=LOGIT_DIMS)
            # logits at padded target positions are never used (the loss ignores them): compared as 0
            real = (tgt != cfg.pad_id)[..., None]
            got, want, shifted = (t.masked_fill(~real, 0.0) for t in (got, want, shifted))
            if not torch.allclose(got, shifted, atol=1e-4):  # positions counted from 1 (pe[1:T+1]) are fine too
                check_close(got, want, atol=1e-4, name=f"logits {desc}", dims=LOGIT_DIMS,
                            likely={k: v.masked_fill(~real, 0.0) for k, v in likely.items()},
                    hint="sqrt(d_model) * embeddings + pe[:T], dropout, your blocks with src_mask and causal_mask, "
                         "the final norms, the generator")
            decoded = mine.call_method("decode", tgt, tensor(mine.call_method("encode", src), "encode(src)"), src)
            check_close(tensor(decoded, "decode").masked_fill(~real, 0.0), got, atol=1e-5, dims=LOGIT_DIMS,
                        name=f"decode(tgt, encode(src), src) vs forward(src, tgt) {desc}")


@check("grade_transformer", "structure: n_layers blocks each, final LayerNorms for pre-norm (nn.Identity for "
                            "post-norm), pe not saved, weight tying as configured, every parameter gets a gradient; "
                            "dropout on the embeddings in training mode")
def transformer_structure(h):
    with h.substituted(**REF_BLOCKS):
        for cfg, model, src, tgt in drawn(8080, 2, _case):
            nf, mine = f"norm_first={cfg.norm_first}", _transformer(h, cfg, model.state_dict(), shared=True)
            check_module_list(h, mine, "encoder", "EncoderBlock", cfg.n_layers, name="Transformer")
            check_module_list(h, mine, "decoder", "DecoderBlock", cfg.n_layers, name="Transformer")
            want = "LayerNorm" if cfg.norm_first else "Identity"
            for norm in ("enc_norm", "dec_norm"):
                got = attribute(h, mine, norm)
                got = getattr(got, "type_name", what(got))
                if got != want:
                    raise AssertionError(f"{norm} is {got}, expected nn.{want} for {nf}")
            if "pe" in mine.state_dict():
                raise AssertionError("the positional encoding is in the state dict: register it with persistent=False")
            tied = not {"generator.weight", "tgt_embed.weight"} <= set(parameters(h, mine))
            if tied != cfg.tie_weights:
                raise AssertionError(f"tie_weights={cfg.tie_weights}, but generator.weight "
                                     f"{'is' if tied else 'is not'} the same parameter as tgt_embed.weight ({nf})")
            check_every_parameter_learns(h, mine, src, tgt, grad_output=torch.ones(*tgt.shape, cfg.tgt_vocab_size),
                                         name=nf)
        cfg = ref.TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0, max_len=16)
        mine = _transformer(h, cfg)
        check_dropout_sites(h, mine, {"dropout": "to the sum of the scaled embeddings and the positional encoding"},
                            lambda: mine(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]])), name="Transformer",
                            seed=82)


@check("grade_transformer", "does not use nn.Transformer, nn.TransformerEncoder/Decoder or course.nn")
def transformer_no_delegation(h):
    layers = ("Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
              "TransformerDecoderLayer")
    cfg = ref.TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16)
    with h.substituted(**REF_BLOCKS):
        check_own_code(h, "transformer", {f"nn.{n}": "build the model from your blocks" for n in layers} | COURSE_NN,
                       forbidden=[f"torch.nn.{n}" for n in layers] + ["course.nn.Transformer"],
                       run=lambda: _transformer(h, cfg)(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]])))


# -- 8. greedy decoding, on the planted CountingModel (course.testing) -----------------------------
def _counting(src, V, max_len, bos, eos, step_extra=0) -> list[list[int]]:
    """What greedy decoding of CountingModel gives (step_extra=1: the model left in training mode)."""
    out = []
    for b in range(src.size(0)):
        ys = [bos]
        for _ in range(max_len):
            ys.append((ys[-1] + int(src[b, 1]) + step_extra) % V)
            if ys[-1] == eos:
                break
        out.append(ys)
    return out


def _greedy(h, V, src, max_len, bos, eos, pad, where):
    """The student's greedy_decode on CountingModel(V): a LongTensor, the classic mistakes named, else every row."""
    model = h.construct("CountingModel", V)
    out = h.call("greedy_decode", model, src, max_len=max_len, bos=bos, eos=eos, pad=pad)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.long:
        raise AssertionError(f"greedy_decode should return a LongTensor, got {what(out)} {where}")
    expected = greedy_one_by_one(CountingModel(V), src, max_len, bos, eos)
    assert expected == _counting(src, V, max_len, bos, eos), "internal: CountingModel and its description disagree"
    L, first = max(len(e) for e in expected), [[bos] + [(bos + int(s)) % V] * max_len for s in src[:, 1]]
    mistakes = {"the model was left in training mode (dropout on) while decoding: call model.eval() in greedy_decode":
                _counting(src, V, max_len, bos, eos, step_extra=1),
                "the next token taken from the logits of the first position: use the last one, logits[:, -1]":
                [f[: f.index(eos) + 1] if eos in f else f for f in first],
                "one token fewer than max_len new tokens when no EOS comes": _counting(src, V, max_len - 1, bos, eos)}
    if eos != 3:
        mistakes["decoding stops at token 3, not at the eos argument (hard-coded EOS id?)"] = \
            _counting(src, V, max_len, bos, 3)
    for why, seqs in mistakes.items():
        alt = torch.tensor([q + [pad] * (max(map(len, seqs)) - len(q)) for q in seqs])
        if seqs != expected and out.shape == alt.shape and torch.equal(out, alt):
            raise AssertionError(f"{why} (got {out.tolist()[:2]}..., expected {expected[:2]}...) {where}")
    if tuple(out.shape) != (src.size(0), L):
        raise AssertionError(f"output shape {tuple(out.shape)}, expected {(src.size(0), L)}: BOS, at most max_len "
                             f"tokens, and no column after every sentence has finished (stop at EOS) {where}")
    for b, (e, got) in enumerate(zip(expected, out.tolist())):
        if got[: len(e)] != e:
            then = f" then {pad}s" if len(e) < L else ""
            raise AssertionError(f"sentence {b}: got {got}, expected {e}{then} {where}")
        if any(t != pad for t in got[len(e):]):
            raise AssertionError(f"sentence {b}: got {got}: after EOS every token should be pad={pad} {where}")
    return model, L


@check("grade_greedy", "a sentence whose first token is EOS gives [[2, 3]] (the visible test)", mirrors_visible=True)
def greedy_visible(h):
    _greedy(h, 7, torch.tensor([[2, 1, 3]]), 5, 2, 3, 0, "(CountingModel(7), src [[2, 1, 3]], max_len=5)")


def _greedy_trial(_):
    V, B = rint(6, 20), rint(1, 6)
    src = torch.full((B, 3), 3)
    src[:, 0], src[:, 1] = 2, torch.randint(1, V, (B,))
    return V, src, rint(1, 12)


@check("grade_greedy", "batched greedy decoding equals one-sentence-at-a-time decoding in eval mode: stops at EOS, "
                       "pads after it, encodes once, no extra decode steps; other bos/eos/pad ids; max_len without EOS")
def greedy_random(h):
    for V, src, max_len in drawn(31337, 10, _greedy_trial):
        where = f"(V={V}, batch of {src.size(0)}, max_len={max_len}, bos=2, eos=3, pad=0)"
        model, L = _greedy(h, V, src, max_len, 2, 3, 0, where)
        n_encode, n_decode = attribute(h, model, "n_encode", "n_decode")
        if n_encode != 1:
            raise AssertionError(f"model.encode was called {n_encode} times, expected once {where}")
        if not isinstance(n_decode, int) or n_decode > L - 1:
            raise AssertionError(f"model.decode was called {n_decode} times for {L - 1} generated tokens: stop as soon "
                                 f"as every sentence has finished {where}")
    _greedy(h, 9, torch.tensor([[2, 2, 3]] * 2), 3, 2, 3, 0, "(no EOS within max_len=3)")
    _greedy(h, 10, torch.tensor([[5, 1, 5], [5, 3, 5]]), 6, 5, 7, 9, "(bos=5, eos=7, pad=9)")
    check_keeps_mode(h, lambda: h.construct("CountingModel", 9), lambda m: h.call(
        "greedy_decode", m, torch.tensor([[2, 2, 3]]), max_len=3, bos=2, eos=3, pad=0), name="greedy_decode")


# -- 9. the teacher-forcing loss, on the planted FixedLogits (course.testing) ----------------------
def _smoothed(logits, target, keep, eps, per_sentence=False) -> torch.Tensor:
    logp = logits.double().log_softmax(-1)
    token = -((1 - eps) * logp.gather(-1, target[..., None]).squeeze(-1) + eps * logp.mean(-1))  # (B, T)
    return ((token * keep).sum(1) / keep.sum(1).clamp(min=1)).mean() if per_sentence else token[keep].mean()


def _loss(h, V, seed, src, tgt, **kwargs):
    model = h.construct("FixedLogits", V, seed=seed)
    loss = h.call("translation_loss", model, h.construct("TranslationBatch", src=src, tgt=tgt), **kwargs)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise AssertionError(f"translation_loss should return a scalar tensor (to call .backward() on), got "
                             f"{what(loss)}")
    return model, loss


def _same(t, want: torch.Tensor) -> bool:
    return isinstance(t, torch.Tensor) and t.shape == want.shape and torch.equal(t, want)


def _logits(V: int, seed: int, B: int, T: int) -> torch.Tensor:
    """What the planted FixedLogits(V, seed) returns for a (B, T) decoder input (course.testing's, run here)."""
    return FixedLogits(V, seed)(torch.zeros(B, 1, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)).detach()


@check("grade_loss", "equals F.cross_entropy on a one-sentence batch without label smoothing (the visible test)",
       mirrors_visible=True)
def loss_visible(h):
    _, loss = _loss(h, 6, 0, torch.tensor([[2, 5, 3]]), torch.tensor([[2, 4, 3]]), label_smoothing=0.0)
    check_close(loss, F.cross_entropy(_logits(6, 0, 1, 2)[0], torch.tensor([4, 3])), atol=1e-5, rtol=1e-5,
                name="loss without label smoothing")


def _loss_trial(trial: int):
    V, B, T = rint(5, 30), rint(2, 5), rint(3, 9)
    pad_id, tgt = 0 if trial % 3 else 1, torch.randint(2, V, (B, T))
    if pad_id != 0:
        tgt[:, 1] = 0  # a real token with id 0: the pad id is pad_id
    lengths = torch.randint(2, T + 1, (B,))
    lengths[0] = 2  # at least one padded position
    tgt[torch.arange(T)[None, :] >= lengths[:, None]] = pad_id
    return trial, V, pad_id, [0.0, 0.1, 0.2][trial % 3], torch.randint(2, V, (B, 5)), tgt


@check("grade_loss", "teacher forcing (model gets src and tgt[:, :-1]), padding ignored, label smoothing, other "
                     "pad ids: equals the smoothed cross-entropy on random batches")
def loss_random(h):
    for seed, V, pad_id, eps, src, tgt in drawn(4242, 8, _loss_trial):
        where = f"(V={V}, B={tgt.size(0)}, T={tgt.size(1)}, pad_id={pad_id}, label_smoothing={eps})"
        model, loss = _loss(h, V, seed, src, tgt, pad_id=pad_id, label_smoothing=eps)
        calls = model.attr("calls")
        if not (isinstance(calls, list) and calls and isinstance(calls[-1], list) and len(calls[-1]) == 2):
            raise AssertionError(f"translation_loss should call model(batch.src, tgt_in) once {where}")
        if not _same(calls[-1][0], src):
            raise AssertionError(f"the model must get the source batch.src unchanged {where}")
        if not _same(calls[-1][1], tgt[:, :-1]):
            raise AssertionError(f"teacher forcing: the decoder input must be tgt[:, :-1] (BOS, y_1, ...), and it "
                                 f"predicts tgt[:, 1:] {where}")
        logits, target = _logits(V, seed, tgt.size(0), tgt.size(1) - 1), tgt[:, 1:]
        keep = target != pad_id
        likely = {"a loss with padding id 0 instead of pad_id": _smoothed(logits, target, target != 0, eps),
                  "the loss over the padding too: ignore_index=pad_id": _smoothed(logits, target, target >= 0, eps),
                  "a loss without label smoothing (pass label_smoothing)": _smoothed(logits, target, keep, 0.0),
                  "the mean of per-sentence means: average over all real tokens of the batch at once":
                      _smoothed(logits, target, keep, eps, per_sentence=True)}
        check_close(loss, _smoothed(logits, target, keep, eps), atol=1e-5, name=f"loss {where}", likely=likely,
                    hint="predict tgt[:, 1:], ignore_index=pad_id, label_smoothing as given, mean over real tokens")
