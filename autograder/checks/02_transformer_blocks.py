"""Hidden checks of assignment 02 (Transformer blocks), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that
cell of ``02_transformer_blocks.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs,
weights and expected values are made here; the references are PyTorch's (``F.scaled_dot_product_attention``,
``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` ...) and the course's (``course.nn``: the
one home of the solution's blocks, also used by the notebook's grade cells). The patterns are
:mod:`autograder.checkkit`'s. Conventions:

- each exercise is graded with the references of the parts it builds on (``h.substituted``), so
  a mistake costs points once (``tests/mutants/02_transformer_blocks/`` proves it);
- a check named "(the visible tests)" repeats its grade cell's visible asserts exactly (same
  inputs, same calls): if the notebook's run and this one disagree, something was tampered with;
- a failure message's first line says what is wrong; ``likely=`` names the classic mistake a
  result matches (no 1/sqrt(d_k), sin/cos swapped, padding in the loss ...);
- each grade cell's checks stay well under 2 s (one request is one kernel round trip).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import course.nn as ref
from autograder.checkkit import (ATTN_DIMS, LOGIT_DIMS, TOKEN_DIMS, check_causal_remote, check_dropout_sites,
                                 check_grads, module, module_like, pair, quiet, reference_grads, seed_kernel, tensor,
                                 what)
from autograder.delegation import (check_attention_not_delegated, check_not_reference, decoder_references,
                                   encoder_references, mha_honest, mha_references)
from autograder.trusted import StudentError, check
from course.testing import (CountingModel, FixedLogits, check_close, check_no_delegation, check_rows_sum_to_one, check_shape,
                            check_zero_where, greedy_one_by_one, randomize_norms, seeded)

# what each grade cell's code runs with (as the notebook's `substituted` does in the grade cells)
REF_ATTENTION = dict(scaled_dot_product_attention="__main__.reference_attention")  # course.nn's, with weights
REF_MHA = dict(MultiHeadAttention="course.nn.MultiHeadAttention")
REF_BLOCKS = dict(**REF_MHA, causal_mask="course.nn.causal_mask", EncoderBlock="course.nn.EncoderBlock",
                  sinusoidal_positional_encoding="course.nn.sinusoidal_positional_encoding",
                  DecoderBlock="course.nn.DecoderBlock")
F_SDPA = "torch.nn.functional.scaled_dot_product_attention"
F_MHA = "torch.nn.functional.multi_head_attention_forward"
COURSE_NN = "course.nn is the reference for later assignments"


def _warm_up() -> None:
    """Import what PyTorch's references import on first use (~1-2 s) when the checks load, not in a grade cell."""
    with quiet():
        x, pad = torch.zeros(1, 2, 4), torch.tensor([[False, True]])
        F.scaled_dot_product_attention(x.clone().requires_grad_(), x, x, attn_mask=~pad).sum().backward()
        nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)(x, src_key_padding_mask=pad)
        nn.TransformerDecoderLayer(4, 2, 8, dropout=0.0, batch_first=True)(x, x, tgt_mask=pad.expand(2, 2))


_warm_up()


# ==================================================================================================
# 1. scaled dot-product attention
# ==================================================================================================
def _sdpa(h, q, k, v, **kwargs):
    out, w = pair(h.call("scaled_dot_product_attention", q, k, v, **kwargs), "scaled_dot_product_attention")
    return tensor(out, "out"), tensor(w, "weights")


def _attention_mistakes(q, k, v, mask) -> dict:
    """What the classic mistakes return for these inputs (the ``likely`` of check_close)."""
    def attend(scores, dim=-1, m=mask, invert=False):
        if m is not None and m.dtype == torch.bool:
            scores = scores.masked_fill(m if invert else ~m, float("-inf"))
        elif m is not None:
            scores = scores + m
        return scores.softmax(dim).nan_to_num(0.0) @ v
    s, d_k = q @ k.transpose(-2, -1), q.size(-1)
    out = {"attention without the 1/sqrt(d_k) scale (divide the scores by sqrt(d_k))": attend(s),
           "attention scaled by 1/d_k instead of 1/sqrt(d_k)": attend(s / d_k),
           "a softmax over the queries (dim=-2) instead of the keys (dim=-1)": attend(s / math.sqrt(d_k), dim=-2)}
    if d_k != 64:
        out["attention scaled by a fixed 1/sqrt(64): the head size is d_k = q.size(-1)"] = attend(s / 8.0)
    if mask is not None and mask.dtype == torch.bool:
        out["attention with the mask inverted: True means 'may attend' (masked_fill(~mask, -inf))"] = \
            attend(s / math.sqrt(d_k), invert=True)
    elif mask is not None:
        out["the float mask treated as a boolean one: a float mask is added to the scores"] = \
            attend(s / math.sqrt(d_k), m=mask != 0)
    return out


@check("grade_sdpa", "shapes, F.scaled_dot_product_attention on (3, 4, 16) queries, weights sum to 1 (the visible tests)",
       mirrors_visible=True)
def sdpa_visible(h):
    with seeded(1):
        q, k, v = torch.randn(3, 4, 16), torch.randn(3, 6, 16), torch.randn(3, 6, 5)
    out, w = _sdpa(h, q, k, v)
    check_shape(out, (3, 4, 5), "out")
    check_shape(w, (3, 4, 6), "weights")
    check_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5, name="out vs F.scaled_dot_product_attention",
                likely=_attention_mistakes(q, k, v, None))
    check_close(w.sum(-1), torch.ones(3, 4), atol=1e-5, rtol=1e-5, name="sum of the weights over the keys")


def _sdpa_trial(trial: int):
    lead = tuple(int(n) for n in torch.randint(1, 4, (int(torch.randint(0, 3, ())),)))
    Tq, Tk, d_k, d_v = (int(torch.randint(1, n, ())) for n in (9, 9, 17, 9))
    dtype = torch.float64 if trial % 5 == 4 else torch.float32
    q, k, v = torch.randn(*lead, Tq, d_k, dtype=dtype), torch.randn(*lead, Tk, d_k, dtype=dtype), \
        torch.randn(*lead, Tk, d_v, dtype=dtype)
    kind = trial % 4
    if kind == 0:
        mask, desc = None, "no mask"
    elif kind == 1:  # boolean (Tq, Tk), at least one allowed key per row
        mask = torch.rand(Tq, Tk) < 0.6
        mask[torch.arange(Tq), torch.randint(0, Tk, (Tq,))] = True
        desc = "boolean (Tq, Tk) mask"
    elif kind == 2:
        mask = torch.arange(Tk) < torch.randint(1, Tk + 1, lead + (1, 1))
        desc = f"boolean padding mask of shape {tuple(mask.shape)}"
    else:
        mask = torch.randn(Tq, Tk, dtype=dtype)
        mask[torch.rand(Tq, Tk) < 0.3] = float("-inf")
        mask[:, 0] = 0.0
        desc = "float (additive) mask with -inf entries"
    return q, k, v, mask, f"(leading dims {lead}, Tq={Tq}, Tk={Tk}, d_k={d_k}, d_v={d_v}, {desc}, {str(dtype)[6:]})"


@check("grade_sdpa", "matches F.scaled_dot_product_attention on random shapes, leading dims, dtypes and masks "
                     "(none, boolean, padding, additive float)")
def sdpa_random(h):
    with seeded(1234):
        trials = [_sdpa_trial(t) for t in range(24)]
    for q, k, v, mask, where in trials:
        out, w = _sdpa(h, q, k, v, mask=mask)
        check_shape(out, (*q.shape[:-1], v.size(-1)), f"out {where}")
        check_shape(w, (*q.shape[:-1], k.size(-2)), f"weights {where}")
        if out.dtype != q.dtype:
            raise AssertionError(f"out has dtype {out.dtype}, expected {q.dtype} like the inputs {where}")
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
        check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), name=f"out with fully masked rows ({kind})",
                    dims=("batch", "query", "channel"), hint=hint)
        check_close(w[1, 3], torch.zeros(5), name=f"weights of the fully masked query 3 of batch 1 ({kind})", hint=hint)


@check("grade_sdpa", "gradients with respect to q, k and v equal those of F.scaled_dot_product_attention")
def sdpa_gradients(h):
    with seeded(7):
        m2 = torch.rand(4, 6) < 0.7
        m2[:, 0] = True
        cases = [(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 2), torch.tensor([True, True, False, True, False])),
                 (torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3), m2)]
        grads = [torch.randn(*q.shape[:-1], v.size(-1)) for q, k, v, _ in cases]
    for (q, k, v, mask), g in zip(cases, grads):
        where = f"(q {tuple(q.shape)}, k {tuple(k.shape)}, boolean mask {tuple(mask.shape)})"
        got = h.vjp("scaled_dot_product_attention", (q, k, v), (g, torch.zeros(*q.shape[:-1], k.size(-2))), mask=mask)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        F.scaled_dot_product_attention(*leaves, attn_mask=mask).backward(g)
        for name, d, leaf in zip("qkv", got, leaves):
            check_close(tensor(d, f"gradient of {name}"), leaf.grad, atol=1e-5, rtol=1e-4, name=f"gradient with respect to {name} {where}",
                        hint="every step must be a differentiable torch operation (no .detach(), .item() or numpy)")


@check("grade_sdpa", "dropout_p > 0 drops attention weights; the returned weights are those before dropout")
def sdpa_dropout(h):
    with seeded(5):
        q, k, v = torch.randn(2, 6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    seed_kernel(h, 5)
    o1, w1 = _sdpa(h, q, k, v)
    o2, w2 = _sdpa(h, q, k, v, dropout_p=0.5)
    if torch.allclose(o1, o2):
        raise AssertionError("dropout_p=0.5 did not change the output: apply F.dropout(weights, p=dropout_p) before @ v")
    if not torch.allclose(w2, w1, atol=1e-5) and bool(((w2 == 0) | torch.isclose(w2, 2 * w1)).all()):
        raise AssertionError("with dropout_p=0.5 the returned weights are the weights after dropout (zeros and "
                             "doubled values): return the weights before dropout")
    check_close(w2, w1, name="weights returned with dropout_p=0.5", dims=("batch", "query", "key"),
                hint="return the weights before dropout")


@check("grade_sdpa", "does not call F.scaled_dot_product_attention, nn.MultiheadAttention or course.nn "
                     "(source, calls, and the bits of the results)")
def sdpa_no_delegation(h):
    advice = "write softmax(q k^T / sqrt(d_k)) v with @ and softmax"
    check_no_delegation(h.source("sdpa"), {"scaled_dot_product_attention": advice, "multi_head_attention_forward": advice,
                                           "MultiheadAttention": advice, "course.nn": COURSE_NN, "reference_attention": advice})
    with seeded(11):  # where every reference differs bit for bit from plain code (autograder/delegation.py)
        q, k, v = torch.randn(2, 3, 16, 12), torch.randn(2, 3, 40, 12), torch.randn(2, 3, 40, 12)
        pad = (torch.arange(40) < torch.tensor([40, 27])[:, None])[:, None, None, :]
        q3, k3, v3, bias = torch.randn(4, 16, 12), torch.randn(4, 40, 12), torch.randn(4, 40, 7), torch.randn(16, 40)
    for q_, k_, v_, mask, where in ((q, k, v, None, "4-D heads, no mask"), (q, k, v, pad, "4-D heads, padding mask"),
                                    (q3, k3, v3, bias, "3-D, d_v != d_k, float mask")):
        out, w = _sdpa(h, q_, k_, v_, mask=mask)
        check_attention_not_delegated(out, w, q_, k_, v_, mask, what=f"scaled_dot_product_attention ({where})",
                                      advice="implement attention yourself: " + advice)
    with h.forbidden(F_SDPA, F_MHA, "course.nn.scaled_dot_product_attention"):
        _sdpa(h, q3[:1, :2, :4], k3[:1, :3, :4], v3[:1, :3])


# ==================================================================================================
# 2. multi-head attention, graded with the reference attention of part 1
# ==================================================================================================
def _mha_state(C: int, nh: int) -> dict:
    return ref.MultiHeadAttention(C, nh).state_dict()


def _head_mistakes(sd: dict, nh: int, xq, xk, xv, mask) -> dict:
    """Outputs of an MHA with a classic mistake: heads split or merged without the transpose,
    q_proj and k_proj swapped, values projected with k_proj."""
    B, Tq, C = xq.shape
    lin = {p: (lambda x, p=p: F.linear(x, sd[f"{p}_proj.weight"], sd[f"{p}_proj.bias"])) for p in ("q", "k", "v", "out")}

    def run(bad_split=False, bad_merge=False, q="q", k="k", v="v"):
        def split(x):
            return x.reshape(B, nh, x.size(1), C // nh) if bad_split else x.view(B, x.size(1), nh, C // nh).transpose(1, 2)
        y = ref.scaled_dot_product_attention(split(lin[q](xq)), split(lin[k](xk)), split(lin[v](xv)), mask)[0]
        return lin["out"](y.reshape(B, Tq, C) if bad_merge else y.transpose(1, 2).reshape(B, Tq, C))
    return {"heads split with view(B, nh, T, hs) instead of view(B, T, nh, hs).transpose(1, 2)": run(bad_split=True),
            "heads merged without transpose(1, 2) before reshape(B, T, C)": run(bad_merge=True),
            "q_proj and k_proj swapped (queries come from q_proj(query), keys from k_proj(key))": run(q="k", k="q"),
            "values projected with k_proj instead of v_proj": run(v="k")}


@check("grade_mha", "output and weight shapes, output equals nn.MultiheadAttention on (2, 5, 12) (the visible tests)",
       mirrors_visible=True)
def mha_visible(h):
    with seeded(2):
        sd = _mha_state(12, 3)
        x = torch.randn(2, 5, 12)
    with h.substituted(**REF_ATTENTION):
        mha, sd = module_like(h, "MultiHeadAttention", 12, 3, state=sd)
        out, w = pair(mha(x, x, x, need_weights=True), "MultiHeadAttention")
    check_shape(tensor(out, "out"), (2, 5, 12), "out")
    check_shape(tensor(w, "weights"), (2, 3, 5, 5), "weights")
    with quiet():
        expected = ref.to_torch_mha(_as_mha(sd, 12, 3))(x, x, x, average_attn_weights=False)[0].detach()
    check_close(out, expected, atol=1e-5, rtol=1e-5, name="output vs nn.MultiheadAttention",
                likely=_head_mistakes(sd, 3, x, x, x, None))


def _as_mha(sd: dict, C: int, nh: int) -> ref.MultiHeadAttention:
    m = ref.MultiHeadAttention(C, nh)
    m.load_state_dict({k: v for k, v in sd.items() if k in m.state_dict()})
    return m


@check("grade_mha", "matches nn.MultiheadAttention (outputs and per-head weights) on random sizes: self-attention "
                    "(mha(x, x, x)) and cross-attention with causal, key padding and combined masks")
def mha_random(h):
    trials = []
    with seeded(4321):
        for trial in range(8):
            nh = int(torch.randint(1, 5, ()))
            C, B, Tq, Tk = nh * int(torch.randint(1, 6, ())), int(torch.randint(1, 4, ())), int(torch.randint(1, 8, ())), int(torch.randint(1, 8, ()))
            cross = trial % 2 == 1
            Tk = Tk if cross else Tq
            sd, xq = _mha_state(C, nh), torch.randn(B, Tq, C)
            xk, xv = (torch.randn(B, Tk, C), torch.randn(B, Tk, C)) if cross else (xq, xq)  # self: one tensor object
            kind = trial % 4
            kpm = (torch.arange(Tk)[None, :] >= torch.randint(1, Tk + 1, (B,))[:, None]) if kind >= 2 else None
            am = ~torch.ones(Tq, Tk, dtype=torch.bool).tril() if (kind % 2 == 1 and not cross) else None
            trials.append((trial, nh, C, B, Tq, Tk, cross, sd, xq, xk, xv, kpm, am))
    with h.substituted(**REF_ATTENTION), quiet():
        for trial, nh, C, B, Tq, Tk, cross, sd, xq, xk, xv, kpm, am in trials:
            mask = None if kpm is None else (~kpm)[:, None, None, :]
            if am is not None:
                mask = ~am if mask is None else (mask & ~am)
            masks = " + ".join(m for m, on in (("key padding mask", kpm is not None), ("causal mask", am is not None)) if on)
            where = f"({'cross' if cross else 'self'}-attention, B={B}, Tq={Tq}, Tk={Tk}, d_model={C}, n_heads={nh}, {masks or 'no mask'})"
            mha = module(h, "MultiHeadAttention", C, nh, state=sd, train=True)  # dropout=0.0
            try:
                out, w = pair(mha(xq, xk, xv, mask=mask, need_weights=True), "MultiHeadAttention")
            except StudentError as e:
                if "is invalid for input of size" not in e.safe_message:
                    raise
                raise AssertionError(f"MultiHeadAttention could not reshape {where}: split queries with (B, Tq, n_heads, "
                                     "head_dim) and keys and values with the key length Tk, head_dim = d_model // "
                                     "n_heads (nothing hard-coded)") from None
            ref_out, ref_w = ref.to_torch_mha(_as_mha(sd, C, nh))(xq, xk, xv, key_padding_mask=kpm, attn_mask=am,
                                                                   average_attn_weights=False)
            check_shape(tensor(out, f"out {where}"), (B, Tq, C), f"out {where}")
            likely = _head_mistakes(sd, nh, xq, xk, xv, mask)
            check_close(tensor(w, f"weights {where}"), ref_w.detach(), atol=1e-5, name=f"weights {where}", dims=ATTN_DIMS,
                        hint="q from query, k and v from key and value; split heads with view(B, T, nh, hs).transpose(1, 2)")
            check_close(out, ref_out.detach(), atol=1e-5, name=f"out {where}", likely=likely,
                        hint="merge heads with transpose(1, 2).reshape(B, T, C) before out_proj")
            if trial % 4 == 0 and pair(mha(xq, xk, xv, mask=mask), "MultiHeadAttention")[1] is not None:
                raise AssertionError("need_weights=False should return None as weights")


@check("grade_mha", "parameters: the four projections q_proj, k_proj, v_proj, out_proj (nn.Linear with bias)")
def mha_parameters(h):
    mha = h.construct("MultiHeadAttention", 8, 2)
    got = {k: tuple(tensor(v, k).shape) for k, v in h.library("builtins.dict")(mha.call_method("named_parameters")).items()}
    expected = {f"{p}_proj.{t}": (8, 8) if t == "weight" else (8,) for p in "qkv" for t in ("weight", "bias")}
    expected.update({"out_proj.weight": (8, 8), "out_proj.bias": (8,)})
    if got != expected:
        extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
        wrong = [f"{k} has shape {got[k]}, expected {expected[k]}" for k in sorted(set(got) & set(expected)) if got[k] != expected[k]]
        raise AssertionError("MultiHeadAttention(8, 2) should have exactly the parameters of four nn.Linear(8, 8) with bias: "
                             + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                         + ([f"unexpected parameters {', '.join(extra)}"] if extra else []) + wrong))


@check("grade_mha", "dropout on the attention weights in training mode only")
def mha_dropout(h):
    with seeded(3):
        x, sd = torch.randn(2, 6, 16), _mha_state(16, 4)
    with h.substituted(**REF_ATTENTION):
        seed_kernel(h, 3)
        mha = module(h, "MultiHeadAttention", 16, 4, dropout=0.5, train=True)
        o1, o2 = (tensor(pair(mha(x, x, x), "MultiHeadAttention")[0], "out") for _ in range(2))
        mha.eval()
        o3, o4 = (tensor(pair(mha(x, x, x), "MultiHeadAttention")[0], "out") for _ in range(2))
        every = module(h, "MultiHeadAttention", 16, 4, dropout=1.0, state=sd, train=True)
        o5 = tensor(pair(every(x, x, x), "MultiHeadAttention")[0], "out")
    if torch.allclose(o1, o2):
        raise AssertionError("MultiHeadAttention(dropout=0.5) in training mode gave the same output twice: "
                             "pass dropout_p=self.dropout to the attention while self.training")
    check_close(o4, o3, name="two outputs in eval mode", hint="no dropout in eval mode (dropout_p=0 unless self.training)")
    if not torch.allclose(o5, sd["out_proj.bias"].expand(2, 6, 16), atol=1e-6):
        raise AssertionError("dropout=1.0 in training mode should drop every attention weight (the output is then "
                             "out_proj's bias): apply the dropout to the attention weights, not to the output")


@check("grade_mha", "gradients (inputs and all four projections) equal those of the reference layer, "
                    "for self-attention (one input) and cross-attention")
def mha_gradients(h):
    with seeded(44):
        sd = _mha_state(8, 2)
        xq, xk, xv, g = torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    with h.substituted(**REF_ATTENTION):
        mha = module(h, "MultiHeadAttention", 8, 2, state=sd, train=True)
        for inputs, kind in (((xq, xk, xv), "cross-attention"), ((xq, xq, xq), "self-attention")):
            check_grads(mha.grads(*inputs, grad_output=g), reference_grads(_as_mha(sd, 8, 2), inputs, g),
                        f"MultiHeadAttention ({kind})")


@check("grade_mha", "does not use nn.MultiheadAttention, F.multi_head_attention_forward, "
                    "F.scaled_dot_product_attention or course.nn (source, calls, and the bits of the results)")
def mha_no_delegation(h):
    advice = "write the projections and the head reshapes yourself"
    mine = "call your scaled_dot_product_attention"
    check_no_delegation(h.source("mha"), {"MultiheadAttention": advice, "multi_head_attention_forward": advice,
                                          "F.scaled_dot_product_attention": mine, "functional.scaled_dot_product_attention": mine,
                                          "course.nn": COURSE_NN, "reference_attention": mine, "to_torch_mha": advice},
                        follow=False)
    C, nh = 36, 3  # head size 12: not a power of 4 (autograder/delegation.py)
    with seeded(12):
        sd = _mha_state(C, nh)
        x, xq, xk, xv = torch.randn(2, 8, C), torch.randn(2, 7, C), torch.randn(2, 9, C), torch.randn(2, 9, C)
        pad = (torch.arange(9) < torch.tensor([9, 5])[:, None])[:, None, None, :]
        bias = torch.randn(7, 9)
    cases = [((x, x, x), None, False, "self-attention, no mask"),
             ((x, x, x), torch.ones(8, 8, dtype=torch.bool).tril(), True, "self-attention, causal mask, need_weights=True"),
             ((xq, xk, xv), pad, False, "cross-attention, padding mask"),
             ((xq, xk, xv), bias, True, "cross-attention, float mask, need_weights=True")]
    with h.substituted(**REF_ATTENTION):
        mha = module(h, "MultiHeadAttention", C, nh, state=sd)
        outs = [pair(mha(*inputs, mask=mask, need_weights=nw), "MultiHeadAttention")[0] for inputs, mask, nw, _ in cases]
        with h.forbidden(F_SDPA, F_MHA, "torch.nn.MultiheadAttention", "course.nn.MultiHeadAttention"):
            mha(x[:1, :3], x[:1, :3], x[:1, :3], need_weights=True)
            mha(x[:1, :3], x[:1, :3], x[:1, :3])
    for (inputs, mask, _, where), out in zip(cases, outs):
        check_not_reference(tensor(out, f"out ({where})"), mha_references(sd, nh, *inputs, mask), mha_honest(sd, nh, *inputs, mask),
                            what=f"MultiHeadAttention's output ({where})",
                            advice="write the projections and the head reshapes yourself and call your scaled_dot_product_attention")


# ==================================================================================================
# 3. sinusoidal positional encoding
# ==================================================================================================
def _pe_table(T: int, d: int, *, swap=False, concat=False, step=2) -> torch.Tensor:
    """The table in float64; with a classic mistake when asked (the ``likely`` of the checks)."""
    pos, i = torch.arange(T, dtype=torch.float64)[:, None], torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), (i if step == 2 else i / 2) / d)
    sin, cos = (torch.cos(ang), torch.sin(ang)) if swap else (torch.sin(ang), torch.cos(ang))
    if concat:
        return torch.cat([sin, cos], 1)
    out = torch.zeros(T, d, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = sin, cos
    return out


def _pe_mistakes(T: int, d: int) -> dict:
    return {"sin and cos swapped: sines go in the even channels 0, 2, 4, ..., cosines in the odd ones": _pe_table(T, d, swap=True),
            "sines and cosines concatenated [sin | cos] instead of interleaved (pe[:, 0::2] = sin, pe[:, 1::2] = cos)":
                _pe_table(T, d, concat=True),
            "frequency 10000^(-i/d) instead of 10000^(-2i/d) (i counts channel pairs)": _pe_table(T, d, step=1)}


def _pe(h, T, d):
    return tensor(h.call("sinusoidal_positional_encoding", T, d), f"sinusoidal_positional_encoding({T}, {d})")


@check("grade_pe", "shape (10, 4), channel 0 = sin(pos), channel 3 = cos(pos / 100) (the visible tests)", mirrors_visible=True)
def pe_visible(h):
    pe = _pe(h, 10, 4)
    check_shape(pe, (10, 4), "pe")
    if pe.dtype != torch.float32:  # the visible torch.allclose raises on another dtype
        raise AssertionError(f"pe has dtype {pe.dtype}, expected torch.float32 (torch.zeros and torch.arange's default)")
    pos = torch.arange(10.0)
    check_close(pe[:, 0], torch.sin(pos), atol=1e-6, rtol=1e-5, name="channel 0 (should be sin(pos))",
                likely={"cos(pos): sin and cos swapped (sines go in the even channels)": torch.cos(pos)})
    check_close(pe[:, 3], torch.cos(pos / 100.0), atol=1e-6, rtol=1e-5, name="channel 3 (should be cos(pos / 10000^(2/4)))")


@check("grade_pe", "matches sin/cos(pos / 10000^(2i/d)) for random max_len and even d_model, as float32")
def pe_random(h):
    with seeded(777):
        sizes = [(int(torch.randint(1, 300, ())), 2 * int(torch.randint(1, 65, ()))) for _ in range(8)]
    for T, d in sizes + [(5, 2)]:
        pe = _pe(h, T, d)
        check_shape(pe, (T, d), f"pe (max_len={T}, d_model={d})", dims=("position", "channel"))
        if pe.dtype != torch.float32:
            raise AssertionError(f"pe (max_len={T}, d_model={d}) has dtype {pe.dtype}, expected torch.float32")
        check_close(pe, _pe_table(T, d), atol=2e-4 if T > 5 else 1e-6, rtol=0, name=f"pe (max_len={T}, d_model={d})",
                    dims=("position", "channel"), likely=_pe_mistakes(T, d),
                    hint="sines in channels 0, 2, 4, ..., cosines in 1, 3, 5, ...; frequency 10000^(-2i/d), 2i = 0, 2, 4, ...")


@check("grade_pe", "odd d_model raises ValueError; the table does not depend on max_len; no course.nn")
def pe_edge_cases(h):
    try:
        h.call("sinusoidal_positional_encoding", 8, 7)
    except StudentError as e:
        if e.type_name != "ValueError":
            raise AssertionError(f"sinusoidal_positional_encoding(8, 7) raised {e.shown_type}, expected ValueError") from None
    else:
        raise AssertionError("sinusoidal_positional_encoding(8, 7) should raise ValueError (odd d_model)")
    check_close(_pe(h, 40, 32)[:10], _pe(h, 10, 32), atol=1e-6, name="first 10 rows of pe(40, 32) vs pe(10, 32)",
                dims=("position", "channel"))
    check_no_delegation(h.source("pe"), {"course.nn": COURSE_NN})
    with h.forbidden("course.nn.sinusoidal_positional_encoding"):
        _pe(h, 6, 8)


# ==================================================================================================
# 4. is_permutation_equivariant: the student's test runs on functions built in their kernel
# ==================================================================================================
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
        raise AssertionError("cumsum over the tokens is not permutation-equivariant: your test says True, expected False")


@check("grade_perm", "right answer for attention blocks, per-token layers, normalisations, sorting, shifts and "
                     "position-dependent functions, with the tokens on dim 0, 1 or 2; differences below atol are equal")
def perm_cases(h):
    with seeded(2024):
        x, x0, x2 = torch.randn(2, 9, 12), torch.randn(7, 3), torch.randn(2, 3, 8)
        pe = ref.sinusoidal_positional_encoding(9, 12)
    future = ~torch.ones(9, 9, dtype=torch.bool).tril()  # nn's convention: True = may not attend
    lib, partial = h.library, h.library("functools.partial")
    seed_kernel(h, 2024)
    block = lib("torch.nn.TransformerEncoderLayer")(12, 3, 24, dropout=0.0, batch_first=True)
    per_token = lib("torch.nn.Sequential")(lib("torch.nn.LayerNorm")(12), lib("torch.nn.Linear")(12, 5))
    cases = [
        ("t + 1e-7 * position with atol=1e-5 (below atol: equal)", partial(lib("torch.add"), other=1e-7 * torch.arange(9.0)[:, None]),
         x, 1, True, dict(atol=1e-5)),
        ("t + 1e-3 * position with atol=1e-5 (above atol: different)",
         partial(lib("torch.add"), other=1e-3 * torch.arange(9.0)[:, None]), x, 1, False, dict(atol=1e-5)),
        ("a self-attention block (nn.TransformerEncoderLayer)", block, x, 1, True, {}),
        ("the same block with a causal mask", partial(block, src_mask=future), x, 1, False, {}),
        ("adding a positional encoding", partial(lib("torch.add"), other=pe), x, 1, False, {}),
        ("LayerNorm + Linear on each token", per_token, x, 1, True, {}),
        ("normalising over the tokens", partial(lib("torch.nn.functional.normalize"), dim=1), x, 1, True, {}),
        ("shifting by one token (torch.roll)", partial(lib("torch.roll"), shifts=1, dims=1), x, 1, False, {}),
        ("reversing the tokens (torch.flip)", partial(lib("torch.flip"), dims=[1]), x, 1, False, {}),
        ("tanh, tokens on dim 0", lib("torch.tanh"), x0, 0, True, {}),
        ("sorting along the tokens, tokens on dim 0", lib("torch.msort"), x0, 0, False, {}),
        ("weighting by position, tokens on dim 0", partial(lib("torch.mul"), other=torch.arange(7.0)[:, None]), x0, 0, False, {}),
        ("softmax over the tokens, tokens on dim 2", partial(lib("torch.softmax"), dim=2), x2, 2, True, {}),
        ("cumsum over the tokens, tokens on dim 2", partial(lib("torch.cumsum"), dim=2), x2, 2, False, {}),
    ]
    with torch.no_grad():
        for desc, fn, inp, dim, expected, kw in cases:
            got = _is_eq(h, fn, inp, dim, desc, **kw)
            if got is not expected:
                where = "" if dim == 1 else ": permute along the dim argument, not always dim 1"
                raise AssertionError(f"{desc} (tokens on dim {dim}): your test says {got}, expected {expected}{where}")


# ==================================================================================================
# 5. causal mask
# ==================================================================================================
def _mask(h, T, **kwargs) -> torch.Tensor:
    m = tensor(h.call("causal_mask", T, **kwargs), f"causal_mask({T})")
    if m.dtype != torch.bool:
        raise AssertionError(f"causal_mask({T}) has dtype {m.dtype}, expected torch.bool (True = may attend)")
    check_shape(m, (T, T), f"causal_mask({T})", dims=("query", "key"))
    return m


def _mask_diagnosis(m: torch.Tensor) -> str | None:
    T = m.size(0)
    right = torch.ones(T, T, dtype=torch.bool).tril()
    if torch.equal(m, right):
        return None
    for got, why in ((~right, "True above the diagonal, i.e. on future keys: the mask is "
                                                          "inverted (True must mean 'may attend': key j <= query i)"),
                     (torch.ones(T, T, dtype=torch.bool).tril(-1), "the diagonal is False: a token must attend to itself "
                                                                  "(True where key j <= query i, diagonal included: tril(), not tril(-1))"),
                     (torch.ones(T, T, dtype=torch.bool).tril(1), "True one step above the diagonal: the mask is shifted, "
                                                                 "query i sees key i + 1 (use tril(), diagonal 0)"),
                     (right.t(), "it is transposed: rows are queries, columns keys (True where key j <= query i)")):
        if torch.equal(m, got):
            return why
    i, j = (m != right).nonzero()[0].tolist()
    return f"it is wrong at query {i}, key {j}: True exactly where key j <= query i"


@check("grade_causal", "causal_mask(3) is a (3, 3) bool tensor, lower-triangular (the visible tests)", mirrors_visible=True)
def causal_visible(h):
    why = _mask_diagnosis(_mask(h, 3))
    if why:
        raise AssertionError(f"causal_mask(3): {why}")


@check("grade_causal", "True exactly where key j <= query i, for T = 1, 2, 5, 17, 64; accepts a device argument; "
                       "makes nn.MultiheadAttention causal as ~causal_mask(T)")
def causal_sizes(h):
    for T in (1, 2, 5, 17, 64):
        why = _mask_diagnosis(_mask(h, T))
        if why:
            raise AssertionError(f"causal_mask({T}): {why}")
    for dev, desc in (("cpu", "device='cpu'"), (h.library("torch.device")("cpu"), "device=torch.device('cpu')")):
        if _mask_diagnosis(_mask(h, 4, device=dev)):
            raise AssertionError(f"causal_mask(4, {desc}) differs from causal_mask(4)")
    # on PyTorch's "meta" device (no data, so any machine has it): the mask stays in the kernel, only its device
    # type comes back: list(map(attrgetter("device.type"), map(partial(causal_mask, device="meta"), [3])))
    lib = h.library
    made = lib("builtins.map")(lib("functools.partial")(lib("__main__.causal_mask"), device="meta"), [3])
    where = lib("builtins.list")(lib("builtins.map")(lib("operator.attrgetter")("device.type"), made))
    if where != ["meta"]:
        raise AssertionError(f"causal_mask(3, device='meta') made its mask on {where}: create it on the device given "
                             "(torch.ones(T, T, dtype=torch.bool, device=device))")
    m = _mask(h, 7)
    with seeded(55), quiet():
        mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
        x = torch.randn(2, 7, 8)
    from course.testing import check_causal
    check_causal(lambda t: mha(t, t, t, attn_mask=~m, need_weights=False)[0], x, dim=1,
                 name="nn.MultiheadAttention with attn_mask=~causal_mask(7)")
    check_no_delegation(h.source("causal"), {"course.nn": COURSE_NN})


# ==================================================================================================
# 6. encoder and decoder blocks, graded with the reference MultiHeadAttention
# ==================================================================================================
def _block_state(kind: str, C, nh, d_ff, norm_first) -> dict:
    block = (ref.EncoderBlock if kind == "enc" else ref.DecoderBlock)(C, nh, d_ff, 0.0, norm_first)
    return randomize_norms(block).state_dict()


def _torch_layer(kind: str, sd: dict, C, nh, d_ff, norm_first):
    block = (ref.EncoderBlock if kind == "enc" else ref.DecoderBlock)(C, nh, d_ff, 0.0, norm_first)
    block.load_state_dict({k: v for k, v in sd.items() if k in block.state_dict()})
    with quiet():
        return (ref.to_torch_encoder_layer if kind == "enc" else ref.to_torch_decoder_layer)(block), block.eval()


def _block_mistakes(kind, sd, C, nh, d_ff, norm_first, *inputs) -> dict:
    """What a block with a classic mistake returns for ``inputs`` (masks as the notebook's: True = may attend)."""
    def block(nf=norm_first, swap23=False):
        b = (ref.EncoderBlock if kind == "enc" else ref.DecoderBlock)(C, nh, d_ff, 0.0, nf).eval()
        names = {"norm2": "norm3", "norm3": "norm2"} if swap23 else {}
        b.load_state_dict({names.get(k.split(".")[0], k.split(".")[0]) + k[k.index("."):]: v for k, v in sd.items()
                           if "." in k}, strict=False)
        return b
    out = {}
    with torch.no_grad():
        want = "pre-norm" if norm_first else "post-norm"
        out[f"{'post' if norm_first else 'pre'}-norm, but norm_first={norm_first} asks for {want}"] = block(not norm_first)(*inputs)
        gelu = block()
        gelu._ff_block = lambda x: gelu.linear2(F.gelu(gelu.linear1(x)))
        out["an FFN with GELU: the notebook's blocks use ReLU"] = gelu(*inputs)
        if kind == "dec":
            out["norm2 and norm3 swapped: norm2 goes with the cross-attention, norm3 with the FFN"] = block(swap23=True)(*inputs)
        if norm_first:
            b = block()
            x, rest = inputs[0], inputs[1:]
            x = b.norm1(x)
            x = x + (b._sa_block(x, rest[0] if rest else None) if kind == "enc" else b._sa_block(x, rest[1] if len(rest) > 1 else None))
            if kind == "dec":
                x = b.norm2(x)
                x = x + b._ca_block(x, rest[0], rest[2] if len(rest) > 2 else None)
            x = (b.norm2 if kind == "enc" else b.norm3)(x)
            out["pre-norm with the residual taken after the norm: x + f(LN(x)) adds the un-normalised x"] = x + b._ff_block(x)
    return out


@check("grade_encoder_block", "EncoderBlock(8, 2, 16) equals nn.TransformerEncoderLayer, post-norm and pre-norm "
                              "(the visible tests)", mirrors_visible=True)
def encoder_visible(h):
    with seeded(6), h.substituted(**REF_MHA), quiet():
        for norm_first in (False, True):  # the visible cell draws the block's weights, then x, under one seed
            enc, sd = module_like(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=norm_first,
                                  state=_block_state("enc", 8, 2, 16, norm_first))
            x = torch.randn(2, 4, 8)
            out = tensor(enc(x), "EncoderBlock output")
            check_shape(out, (2, 4, 8), "EncoderBlock output", dims=TOKEN_DIMS)
            layer, _ = _torch_layer("enc", sd, 8, 2, 16, norm_first)
            check_close(out, layer(x).detach(), atol=1e-5, rtol=1e-5, name=f"EncoderBlock(norm_first={norm_first}) output",
                        dims=TOKEN_DIMS, likely=_block_mistakes("enc", sd, 8, 2, 16, norm_first, x))


@check("grade_encoder_block", "matches nn.TransformerEncoderLayer with and without a source padding mask "
                              "(random sizes, post-norm and pre-norm, eval mode with and without dropout)")
def encoder_random(h):
    trials = []
    with seeded(6006):
        for trial in range(4):
            nh = int(torch.randint(1, 4, ()))
            C, d_ff, B, S = nh * int(torch.randint(2, 6, ())), int(torch.randint(4, 40, ())), int(torch.randint(1, 4, ())), int(torch.randint(2, 9, ()))
            nf = bool(trial % 2)
            pad = torch.arange(S)[None, :] >= torch.randint(1, S + 1, (B,))[:, None]
            pad[0, -1] = True  # at least one padded key
            trials.append((trial, nh, C, d_ff, B, S, nf, _block_state("enc", C, nh, d_ff, nf), torch.randn(B, S, C), pad))
    with h.substituted(**REF_MHA), quiet():
        for trial, nh, C, d_ff, B, S, nf, sd, x, pad in trials:
            p = 0.2 if trial < 2 else 0.0  # eval() must switch every dropout off
            where = f"(B={B}, S={S}, d_model={C}, n_heads={nh}, d_ff={d_ff}, norm_first={nf}, dropout={p}, eval mode)"
            enc = module(h, "EncoderBlock", C, nh, d_ff, dropout=p, norm_first=nf, state=sd)
            layer, _ = _torch_layer("enc", sd, C, nh, d_ff, nf)
            likely = dict(_block_mistakes("enc", sd, C, nh, d_ff, nf, x, (~pad)[:, None, None, :]),
                          **{"the block without its mask: pass mask to the self-attention": layer(x).detach()})
            check_close(tensor(enc(x, mask=(~pad)[:, None, None, :]), "EncoderBlock output"),
                        layer(x, src_key_padding_mask=pad).detach(), atol=1e-5, name=f"EncoderBlock output with a padding mask {where}",
                        dims=TOKEN_DIMS, likely=likely)
            check_close(tensor(enc(x), "EncoderBlock output"), layer(x).detach(), atol=1e-5,
                        name=f"EncoderBlock output without a mask {where}", dims=TOKEN_DIMS)


_ENC_DROPOUT = {"dropout": "inside the FFN, after the ReLU", "dropout1": "to the self-attention branch",
                "dropout2": "to the FFN branch"}
_DEC_DROPOUT = {"dropout": "inside the FFN, after the ReLU", "dropout1": "to the self-attention branch",
                "dropout2": "to the cross-attention branch", "dropout3": "to the FFN branch"}


@check("grade_encoder_block", "each dropout (dropout, dropout1, dropout2) acts in training mode only; gradients "
                              "equal those of the reference block")
def encoder_dropout_and_gradients(h):
    with seeded(61):
        x, g, sd = torch.randn(2, 5, 8), torch.randn(2, 5, 8), _block_state("enc", 8, 2, 16, False)
    with h.substituted(**REF_MHA):
        enc = module(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=True)
        check_dropout_sites(h, enc, _ENC_DROPOUT, lambda: enc(x), name="EncoderBlock", seed=61)
        blk = module(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=False, state=sd, train=True)
        check_grads(blk.grads(x, grad_output=g), reference_grads(_torch_layer("enc", sd, 8, 2, 16, False)[1], (x,), g),
                    "EncoderBlock(norm_first=False)")


_BLOCK_ADVICE = "build the block from your own sublayers (MultiHeadAttention, nn.Linear, nn.LayerNorm)"


def _blocks_not_delegated(h, kind: str, seed: int, norm_first: bool) -> None:
    name, cell = ("EncoderBlock", "encoder_block") if kind == "enc" else ("DecoderBlock", "decoder_block")
    torch_name = "TransformerEncoderLayer" if kind == "enc" else "TransformerDecoderLayer"
    check_no_delegation(h.source(cell), {torch_name: "write the sublayers with your own modules",
                                         "MultiheadAttention": "use your MultiHeadAttention", "course.nn": COURSE_NN,
                                         f"to_torch_{'encoder' if kind == 'enc' else 'decoder'}_layer": _BLOCK_ADVICE,
                                         "to_torch_mha": "use your MultiHeadAttention"})
    C, nh, d_ff = 36, 3, 40  # with course.nn's fingerprinted MHA, PyTorch's layers cannot give the same bits
    with seeded(seed):
        sd, y, memory = _block_state(kind, C, nh, d_ff, norm_first), torch.randn(2, 5, C), torch.randn(2, 6, C)
    pad = (torch.arange(6) < torch.tensor([6, 4])[:, None])[:, None, None, :]
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    with h.substituted(**REF_MHA):
        blk = module(h, name, C, nh, d_ff, dropout=0.0, norm_first=norm_first, state=sd)
        out = tensor(blk(memory, mask=pad) if kind == "enc" else blk(y, memory, tgt_mask=causal, memory_mask=pad), name)
    _, honest = _torch_layer(kind, sd, C, nh, d_ff, norm_first)
    with torch.no_grad():
        mine = honest(memory, pad) if kind == "enc" else honest(y, memory, causal, pad)
    refs = encoder_references(sd, nh, d_ff, norm_first, memory, pad) if kind == "enc" else \
        decoder_references(sd, nh, d_ff, norm_first, y, memory, causal, pad)
    check_not_reference(out, refs, {f"{name} built from MultiHeadAttention": mine},
                        what=f"the output of {name}(norm_first={norm_first})", advice=_BLOCK_ADVICE)


@check("grade_encoder_block", "does not use nn.TransformerEncoderLayer, nn.MultiheadAttention or course.nn "
                              "(source, and the bits of the results)")
def encoder_no_delegation(h):
    _blocks_not_delegated(h, "enc", 62, False)


@check("grade_decoder_block", "DecoderBlock(8, 2, 16) with a causal tgt_mask equals nn.TransformerDecoderLayer, "
                              "post-norm and pre-norm (the visible tests)", mirrors_visible=True)
def decoder_visible(h):
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    with seeded(7), h.substituted(**REF_MHA), quiet():
        for norm_first in (False, True):
            dec, sd = module_like(h, "DecoderBlock", 8, 2, 16, dropout=0.0, norm_first=norm_first,
                                  state=_block_state("dec", 8, 2, 16, norm_first))
            y, memory = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
            out = tensor(dec(y, memory, tgt_mask=causal), "DecoderBlock output")
            check_shape(out, (2, 4, 8), "DecoderBlock output", dims=TOKEN_DIMS)
            layer, _ = _torch_layer("dec", sd, 8, 2, 16, norm_first)
            check_close(out, layer(y, memory, tgt_mask=~causal).detach(), atol=1e-5, rtol=1e-5,
                        name=f"DecoderBlock(norm_first={norm_first}) output", dims=TOKEN_DIMS,
                        likely=_block_mistakes("dec", sd, 8, 2, 16, norm_first, y, memory, causal))


@check("grade_decoder_block", "matches nn.TransformerDecoderLayer with causal and source padding masks, and without "
                              "masks (random sizes, post-norm and pre-norm); the output depends on the memory; "
                              "cross_attn_weights stored, detached, zero on source padding")
def decoder_random(h):
    trials = []
    with seeded(7007):
        for trial in range(4):
            nh = int(torch.randint(1, 4, ()))
            C, d_ff = nh * int(torch.randint(2, 6, ())), int(torch.randint(4, 40, ()))
            B, S, T = int(torch.randint(1, 4, ())), int(torch.randint(2, 9, ())), int(torch.randint(1, 8, ()))
            nf = bool(trial % 2)
            pad = torch.arange(S)[None, :] >= torch.randint(1, S + 1, (B,))[:, None]
            trials.append((trial, nh, C, d_ff, B, S, T, nf, _block_state("dec", C, nh, d_ff, nf), torch.randn(B, T, C),
                           torch.randn(B, S, C), pad))
    with h.substituted(**REF_MHA), quiet():
        grad_flag = h.library("operator.attrgetter")("cross_attn_weights.requires_grad")
        for trial, nh, C, d_ff, B, S, T, nf, sd, y, memory, pad in trials:
            p = 0.2 if trial < 2 else 0.0
            where = f"(B={B}, T={T}, S={S}, d_model={C}, n_heads={nh}, norm_first={nf}, dropout={p}, eval mode)"
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            dec = module(h, "DecoderBlock", C, nh, d_ff, dropout=p, norm_first=nf, state=sd)
            layer, _ = _torch_layer("dec", sd, C, nh, d_ff, nf)
            if trial == 0:
                a, b = (tensor(dec(y, mem), "DecoderBlock output") for mem in (memory, memory.flip(1) + 1.0))
                if torch.allclose(a, b, atol=1e-6):
                    raise AssertionError("DecoderBlock's output does not depend on the encoder memory: the cross-attention "
                                         "takes its queries from x and its keys and values from memory")
            out = tensor(dec(y, memory, tgt_mask=causal, memory_mask=(~pad)[:, None, None, :]), "DecoderBlock output")
            check_close(out, layer(y, memory, tgt_mask=~causal, memory_key_padding_mask=pad).detach(), atol=1e-5,
                        name=f"DecoderBlock output with causal and padding masks {where}", dims=TOKEN_DIMS,
                        likely=_block_mistakes("dec", sd, C, nh, d_ff, nf, y, memory, causal, (~pad)[:, None, None, :]))
            w = tensor(dec.attr("cross_attn_weights"), "DecoderBlock.cross_attn_weights")
            check_shape(w, (B, nh, T, S), f"cross_attn_weights {where}", dims=ATTN_DIMS)
            check_rows_sum_to_one(w, name=f"cross_attn_weights {where}", dims=ATTN_DIMS)
            check_zero_where(w, pad[:, None, None, :], name=f"cross_attn_weights {where}", what="source padding", dims=ATTN_DIMS)
            if trial == 0 and grad_flag(dec) is not False:
                raise AssertionError("store the cross-attention weights detached (weights.detach())")
            if trial % 2 == 1:
                check_close(tensor(dec(y, memory), "DecoderBlock output"), layer(y, memory).detach(), atol=1e-5,
                            name=f"DecoderBlock output without masks {where}", dims=TOKEN_DIMS)


@check("grade_decoder_block", "causal with tgt_mask=causal_mask(T); each dropout acts in training mode only; "
                              "gradients (input, memory, every parameter) equal those of the reference block")
def decoder_causal_dropout_gradients(h):
    with seeded(72):
        y, memory, g, sd = torch.randn(2, 6, 8), torch.randn(2, 4, 8), torch.randn(2, 6, 8), _block_state("dec", 8, 2, 16, True)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with h.substituted(**REF_MHA):
        dec = module(h, "DecoderBlock", 8, 2, 16, dropout=0.0, norm_first=True, state=sd)
        check_causal_remote(lambda t, mem: dec(t, mem, tgt_mask=causal), y, repeat=(memory,),
                            name="DecoderBlock(norm_first=True) with tgt_mask=causal_mask(6)")
        check_dropout_sites(h, dec, _DEC_DROPOUT, lambda: dec(y, memory), name="DecoderBlock", seed=72)
        dec.train()
        check_grads(dec.grads(y, memory, grad_output=g), reference_grads(_torch_layer("dec", sd, 8, 2, 16, True)[1], (y, memory), g),
                    "DecoderBlock(norm_first=True)")


@check("grade_decoder_block", "does not use nn.TransformerDecoderLayer, nn.MultiheadAttention or course.nn "
                              "(source, and the bits of the results)")
def decoder_no_delegation(h):
    _blocks_not_delegated(h, "dec", 73, True)


# ==================================================================================================
# 7. the Transformer, graded with the references of parts 2-6 (course.nn)
# ==================================================================================================
def _batch(B, L, V, pad):
    lengths = torch.randint(2, L + 1, (B,))
    lengths[0] = L
    x = torch.randint(4, V, (B, L))
    x[:, 0] = 2
    x[torch.arange(B), lengths - 1] = 3
    x[torch.arange(L)[None, :] >= lengths[:, None]] = pad
    return x


def _transformer(h, cfg: ref.TransformerConfig, state=None, shared=False):
    """The student's Transformer built from their TransformerConfig; ``shared``: built once per grade
    cell (``h.cache``) for the checks that only read it."""
    key = ("transformer", repr(cfg))
    if shared and key in h.cache:
        return h.cache[key]
    model = module(h, "Transformer", h.construct("TransformerConfig", **cfg.__dict__), state=state)
    if shared:
        h.cache[key] = model
    return model


def _cases():
    """Two configurations (pre-norm tied, post-norm untied with pad id 1), their weights and batches."""
    cases = []
    with seeded(8080):
        for trial, nf in enumerate((True, False)):
            cfg = ref.TransformerConfig(12 + trial, 14, d_model=16, n_heads=2, n_layers=2, d_ff=24, dropout=0.3,
                                        norm_first=nf, tie_weights=trial == 0, max_len=20, pad_id=trial)
            model = randomize_norms(ref.Transformer(cfg)).eval()
            cases.append((cfg, model, _batch(3, 7, cfg.src_vocab_size, trial), _batch(3, 6, cfg.tgt_vocab_size, trial)))
    return cases


def _expected(model: ref.Transformer, src, tgt) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The reference logits; those with positions counted from 1 (``pe[1:T+1]``, accepted); and what
    classic mistakes give (``likely``). The model is changed for a moment and put back."""
    cfg, likely = model.cfg, {}
    with torch.no_grad():
        want = model(src, tgt)
        pe = model.pe
        model.pe = torch.cat([pe[1:], pe[:1]])
        shifted = model(src, tgt)
        model.pe = pe
        scale = math.sqrt(cfg.d_model)
        for e in (model.src_embed, model.tgt_embed):
            e.forward = lambda ids, e=e: F.embedding(ids, e.weight) / scale
        likely["embeddings not scaled by sqrt(d_model) before adding the positional encoding"] = model(src, tgt)
        for e in (model.src_embed, model.tgt_embed):  # (E + pe) * s = (E + pe (s - 1) / s) * s + pe
            e.forward = lambda ids, e=e: F.embedding(ids, e.weight) + pe[: ids.size(1)] * (scale - 1) / scale
        likely["(embeddings + pe) * sqrt(d_model): scale the embeddings first, then add the positional encoding"] = \
            model(src, tgt)
        for e in (model.src_embed, model.tgt_embed):
            del e.forward
        for blk in model.decoder:
            blk.forward = lambda y, mem, tgt_mask=None, memory_mask=None, b=blk: ref.DecoderBlock.forward(b, y, mem, tgt_mask)
        likely["a decoder whose cross-attention gets no source padding mask: pass memory_mask=src_mask(src)"] = model(src, tgt)
        for blk in model.decoder:
            del blk.forward
        if cfg.pad_id != 0:
            pad_id, cfg.pad_id = cfg.pad_id, 0
            try:
                likely["the padding mask built with src != 0 instead of src != cfg.pad_id"] = model(src, tgt)
            finally:
                cfg.pad_id = pad_id
    return want, shifted, likely


@check("grade_transformer", "logits of shape (1, 3, 10) (the visible tests)", mirrors_visible=True)
def transformer_visible(h):
    cfg = ref.TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16)
    with h.substituted(**REF_BLOCKS):
        logits = _transformer(h, cfg)(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]]))
    check_shape(tensor(logits, "logits"), (1, 3, 10), "logits", dims=LOGIT_DIMS)


@check("grade_transformer", "logits equal the reference Transformer with the same weights: pre-norm and post-norm, "
                            "tied and untied, pad id 0 and 1, padded batches; decode(tgt, encode(src), src) == forward")
def transformer_logits(h):
    with h.substituted(**REF_BLOCKS):
        for cfg, model, src, tgt in _cases():
            desc = f"(norm_first={cfg.norm_first}, tie_weights={cfg.tie_weights}, pad_id={cfg.pad_id})"
            mine = _transformer(h, cfg, model.state_dict(), shared=True)
            check_causal_remote(lambda t, s: mine(s, t), tgt, repeat=(src,), name=f"Transformer over the target positions {desc}")
            got = tensor(mine(src, tgt), f"logits {desc}")
            want, shifted, likely = _expected(model, src, tgt)
            check_shape(got, tuple(want.shape), f"logits {desc}", dims=LOGIT_DIMS)
            # logits at padded target positions are never used (the loss ignores them): compared as 0
            real = (tgt != cfg.pad_id)[..., None]
            got, want, shifted = (t.masked_fill(~real, 0.0) for t in (got, want, shifted))
            likely = {k: v.masked_fill(~real, 0.0) for k, v in likely.items()}
            if not torch.allclose(got, shifted, atol=1e-4):  # positions counted from 1 (pe[1:T+1]) are fine too
                check_close(got, want, atol=1e-4, name=f"logits {desc}", dims=LOGIT_DIMS, likely=likely,
                            hint="sqrt(d_model) * embeddings + pe[:T], dropout, your blocks with src_mask and causal_mask, "
                                 "the final norms, the generator")
            memory = tensor(mine.call_method("encode", src), "encode(src)")
            check_close(tensor(mine.call_method("decode", tgt, memory, src), "decode").masked_fill(~real, 0.0), got, atol=1e-5,
                        name=f"decode(tgt, encode(src), src) vs forward(src, tgt) {desc}", dims=LOGIT_DIMS)


@check("grade_transformer", "structure: n_layers blocks each, final LayerNorms for pre-norm (nn.Identity for post-norm), "
                            "pe not saved, weight tying as configured, every parameter gets a gradient; dropout on "
                            "the embeddings in training mode")
def transformer_structure(h):
    getter = h.library("operator.attrgetter")
    with h.substituted(**REF_BLOCKS):
        for cfg, model, src, tgt in _cases():
            nf = f"norm_first={cfg.norm_first}"
            mine = _transformer(h, cfg, model.state_dict(), shared=True)
            for name, kind in (("encoder", "EncoderBlock"), ("decoder", "DecoderBlock")):
                blocks = getter(f"{name}._modules")(mine)
                types = [getattr(b, "type_name", what(b)) for b in blocks.values()] if isinstance(blocks, dict) else [what(blocks)]
                if types != [kind] * cfg.n_layers:
                    raise AssertionError(f"Transformer.{name} holds {types}, expected {cfg.n_layers} {kind}s in an nn.ModuleList")
                if len({h.library("builtins.id")(b) for b in blocks.values()}) != cfg.n_layers:
                    raise AssertionError(f"Transformer.{name} repeats one block object: build {cfg.n_layers} distinct blocks "
                                         "(a list comprehension, not [block] * n_layers: the layers must not share weights)")
            want = "LayerNorm" if cfg.norm_first else "Identity"
            for name in ("enc_norm", "dec_norm"):
                got = getter(name)(mine)
                if getattr(got, "type_name", what(got)) != want:
                    raise AssertionError(f"{name} is {getattr(got, 'type_name', what(got))}, expected nn.{want} for {nf}")
            if "pe" in mine.state_dict():
                raise AssertionError("the positional encoding is in the state dict: register it with persistent=False")
            names = set(h.library("builtins.dict")(mine.call_method("named_parameters")))
            tied = not {"generator.weight", "tgt_embed.weight"} <= names
            if tied != cfg.tie_weights:
                raise AssertionError(f"tie_weights={cfg.tie_weights}, but generator.weight {'is' if tied else 'is not'} "
                                     f"the same parameter as tgt_embed.weight ({nf})")
            _, grads = mine.grads(src, tgt, grad_output=torch.ones(*tgt.shape, cfg.tgt_vocab_size))
            unused = sorted(n for n in names if n not in grads)
            if unused:
                raise AssertionError(f"no gradient reaches {', '.join(unused[:5])} ({nf}): is a module unused, or a tensor detached?")
        cfg = ref.TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0, max_len=16)
        mine = _transformer(h, cfg)
        check_dropout_sites(h, mine, {"dropout": "to the sum of the scaled embeddings and the positional encoding"},
                            lambda: mine(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]])), name="Transformer", seed=82)


@check("grade_transformer", "does not use nn.Transformer, nn.TransformerEncoder/Decoder or course.nn")
def transformer_no_delegation(h):
    advice = "build the model from your blocks"
    check_no_delegation(h.source("transformer"), {k: advice for k in ("nn.Transformer", "nn.TransformerEncoder", "nn.TransformerDecoder",
                                                                     "nn.TransformerEncoderLayer", "nn.TransformerDecoderLayer")}
                        | {"course.nn": COURSE_NN})
    torch_layers = [f"torch.nn.{n}" for n in ("Transformer", "TransformerEncoder", "TransformerDecoder",
                                              "TransformerEncoderLayer", "TransformerDecoderLayer")]
    with h.substituted(**REF_BLOCKS), h.forbidden(*torch_layers, "course.nn.Transformer"):
        _transformer(h, ref.TransformerConfig(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16))(
            torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]]))


# ==================================================================================================
# 8. greedy decoding, on the planted CountingModel (course.testing)
# ==================================================================================================
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
    model = h.construct("CountingModel", V)
    out = h.call("greedy_decode", model, src, max_len=max_len, bos=bos, eos=eos, pad=pad)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.long:
        raise AssertionError(f"greedy_decode should return a LongTensor, got {what(out)} {where}")
    expected = greedy_one_by_one(CountingModel(V), src, max_len, bos, eos)
    assert expected == _counting(src, V, max_len, bos, eos), "internal: CountingModel and its description disagree"
    L = max(len(e) for e in expected)
    first = [[bos] + [(bos + int(src[b, 1])) % V] * max_len for b in range(src.size(0))]
    first = [f[: f.index(eos) + 1] if eos in f else f for f in first]
    mistakes = {"the model was left in training mode (dropout on) while decoding: call model.eval() in greedy_decode":
                _counting(src, V, max_len, bos, eos, step_extra=1),
                "the next token taken from the logits of the first position: use the last one, logits[:, -1]": first,
                "one token fewer than max_len new tokens when no EOS comes": _counting(src, V, max_len - 1, bos, eos)}
    if eos != 3:
        mistakes["decoding stops at token 3, not at the eos argument (hard-coded EOS id?)"] = _counting(src, V, max_len, bos, 3)
    for why, seqs in mistakes.items():
        n = max(len(q) for q in seqs)
        alt = torch.tensor([q + [pad] * (n - len(q)) for q in seqs])
        if seqs != expected and tuple(out.shape) == tuple(alt.shape) and torch.equal(out, alt):
            raise AssertionError(f"{why} (got {out.tolist()[:2]}..., expected {expected[:2]}...) {where}")
    if tuple(out.shape) != (src.size(0), L):
        raise AssertionError(f"output shape {tuple(out.shape)}, expected {(src.size(0), L)}: BOS, at most max_len tokens, "
                             f"and no column after every sentence has finished (stop at EOS) {where}")
    for b, e in enumerate(expected):
        got = out[b].tolist()
        if got[: len(e)] != e:
            raise AssertionError(f"sentence {b}: got {got}, expected {e}" + (f" then {pad}s" if len(e) < L else "") + f" {where}")
        if any(t != pad for t in got[len(e):]):
            raise AssertionError(f"sentence {b}: got {got}: after EOS every token should be pad={pad} {where}")
    return model, L


@check("grade_greedy", "a sentence whose first token is EOS gives [[2, 3]] (the visible test)", mirrors_visible=True)
def greedy_visible(h):
    _greedy(h, 7, torch.tensor([[2, 1, 3]]), 5, 2, 3, 0, "(CountingModel(7), src [[2, 1, 3]], max_len=5)")


@check("grade_greedy", "batched greedy decoding equals one-sentence-at-a-time decoding in eval mode: stops at EOS, "
                       "pads after it, encodes once, no extra decode steps; other bos/eos/pad ids; max_len without EOS")
def greedy_random(h):
    with seeded(31337):
        trials = []
        for _ in range(10):
            V, B = int(torch.randint(6, 20, ())), int(torch.randint(1, 6, ()))
            src = torch.full((B, 3), 3)
            src[:, 0], src[:, 1] = 2, torch.randint(1, V, (B,))
            trials.append((V, src, int(torch.randint(1, 12, ()))))
    counters = h.library("operator.attrgetter")("n_encode", "n_decode")
    for V, src, max_len in trials:
        where = f"(V={V}, batch of {src.size(0)}, max_len={max_len}, bos=2, eos=3, pad=0)"
        model, L = _greedy(h, V, src, max_len, 2, 3, 0, where)
        n_encode, n_decode = counters(model)
        if n_encode != 1:
            raise AssertionError(f"model.encode was called {n_encode} times, expected once {where}")
        if not isinstance(n_decode, int) or n_decode > L - 1:
            raise AssertionError(f"model.decode was called {n_decode} times for {L - 1} generated tokens: stop as soon "
                                 f"as every sentence has finished {where}")
    _greedy(h, 9, torch.tensor([[2, 2, 3]] * 2), 3, 2, 3, 0, "(no EOS within max_len=3)")
    model, _ = _greedy(h, 10, torch.tensor([[5, 1, 5], [5, 3, 5]]), 6, 5, 7, 9, "(bos=5, eos=7, pad=9)")
    training = h.library("operator.attrgetter")("training")
    if training(model) is not True:
        raise AssertionError("greedy_decode left a model that was in training mode in eval mode: give it back in the "
                             "mode it was in (was_training = model.training ... model.train(was_training))")
    model = h.construct("CountingModel", 9).eval()
    h.call("greedy_decode", model, torch.tensor([[2, 2, 3]]), max_len=3, bos=2, eos=3, pad=0)
    if training(model) is not False:
        raise AssertionError("greedy_decode left a model that was in eval mode in training mode: give it back in the "
                             "mode it was in (was_training = model.training ... model.train(was_training))")


# ==================================================================================================
# 9. the teacher-forcing loss, on the planted FixedLogits (course.testing)
# ==================================================================================================
def _fixed_logits(V: int, seed: int, B: int, T: int) -> torch.Tensor:
    """What the planted FixedLogits(V, seed) returns for a (B, T) decoder input (course.testing's, run here)."""
    return FixedLogits(V, seed)(torch.zeros(B, 1, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)).detach()


def _smoothed(logits, target, keep, eps, per_sentence=False) -> torch.Tensor:
    logp = logits.double().log_softmax(-1)
    token = -((1 - eps) * logp.gather(-1, target[..., None]).squeeze(-1) + eps * logp.mean(-1))  # (B, T)
    if per_sentence:
        return ((token * keep).sum(1) / keep.sum(1).clamp(min=1)).mean()
    return token[keep].mean()


def _loss(h, V, seed, src, tgt, **kwargs):
    model = h.construct("FixedLogits", V, seed=seed)
    loss = h.call("translation_loss", model, h.construct("TranslationBatch", src=src, tgt=tgt), **kwargs)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise AssertionError(f"translation_loss should return a scalar tensor (to call .backward() on), got {what(loss)}")
    return model, loss


@check("grade_loss", "equals F.cross_entropy on a one-sentence batch without label smoothing (the visible test)",
       mirrors_visible=True)
def loss_visible(h):
    _, loss = _loss(h, 6, 0, torch.tensor([[2, 5, 3]]), torch.tensor([[2, 4, 3]]), label_smoothing=0.0)
    check_close(loss, F.cross_entropy(_fixed_logits(6, 0, 1, 2)[0], torch.tensor([4, 3])), atol=1e-5, rtol=1e-5,
                name="loss without label smoothing")


@check("grade_loss", "teacher forcing (model gets src and tgt[:, :-1]), padding ignored, label smoothing, other "
                     "pad ids: equals the smoothed cross-entropy on random batches")
def loss_random(h):
    trials = []
    with seeded(4242):
        for trial in range(8):
            V, B, T = int(torch.randint(5, 30, ())), int(torch.randint(2, 5, ())), int(torch.randint(3, 9, ()))
            pad_id = 0 if trial % 3 else 1
            tgt = torch.randint(2, V, (B, T))
            if pad_id != 0:
                tgt[:, 1] = 0  # a real token with id 0: the pad id is pad_id
            lengths = torch.randint(2, T + 1, (B,))
            lengths[0] = 2  # at least one padded position
            tgt[torch.arange(T)[None, :] >= lengths[:, None]] = pad_id
            trials.append((trial, V, B, T, pad_id, [0.0, 0.1, 0.2][trial % 3], torch.randint(2, V, (B, 5)), tgt))
    for trial, V, B, T, pad_id, eps, src, tgt in trials:
        where = f"(V={V}, B={B}, T={T}, pad_id={pad_id}, label_smoothing={eps})"
        model, loss = _loss(h, V, trial, src, tgt, pad_id=pad_id, label_smoothing=eps)
        calls = model.attr("calls")
        if not (isinstance(calls, list) and calls and isinstance(calls[-1], list) and len(calls[-1]) == 2):
            raise AssertionError(f"translation_loss should call model(batch.src, tgt_in) once {where}")
        s_seen, t_seen = calls[-1]
        if not (isinstance(s_seen, torch.Tensor) and s_seen.shape == src.shape and torch.equal(s_seen, src)):
            raise AssertionError(f"the model must get the source batch.src unchanged {where}")
        if not (isinstance(t_seen, torch.Tensor) and t_seen.shape == tgt[:, :-1].shape and torch.equal(t_seen, tgt[:, :-1])):
            raise AssertionError(f"teacher forcing: the decoder input must be tgt[:, :-1] (BOS, y_1, ...), and it predicts "
                                 f"tgt[:, 1:] {where}")
        logits, target = _fixed_logits(V, trial, B, T - 1), tgt[:, 1:]
        keep, everything = target != pad_id, torch.ones_like(target, dtype=torch.bool)
        likely = {"a loss with padding id 0 instead of pad_id": _smoothed(logits, target, target != 0, eps),
                  "the loss over the padding too: ignore_index=pad_id": _smoothed(logits, target, everything, eps),
                  "a loss without label smoothing (pass label_smoothing)": _smoothed(logits, target, keep, 0.0),
                  "the mean of per-sentence means: average over all real tokens of the batch at once":
                      _smoothed(logits, target, keep, eps, per_sentence=True)}
        check_close(loss, _smoothed(logits, target, keep, eps), atol=1e-5, name=f"loss {where}", likely=likely,
                    hint="predict tgt[:, 1:], ignore_index=pad_id, label_smoothing as given, mean over real tokens")
