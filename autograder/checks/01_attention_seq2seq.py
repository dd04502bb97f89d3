"""Hidden checks of assignment 01 (Bahdanau attention for translation), run by the trusted grader.

Each ``@check(grade_id, name)`` decides, with the other checks of its grade cell, whether that cell of
``01_attention_seq2seq.ipynb`` scores its points (:mod:`autograder.trusted`). Inputs and expected
values are made here, from the course's references (``course.seq2seq``: the one home of the solution,
also used by the notebook's grade cells) and from hand-computed cases; decoding is checked on
``course.testing.TableModel``, a planted model whose probability of every hypothesis is known.
Conventions as in 02's checks: each exercise is graded with the references of the parts it builds on
(``h.substituted``), so a mistake costs points once (``tests/mutants/01_attention_seq2seq/`` proves
it); "(the visible tests)" checks repeat their grade cell's asserts exactly (nothing forbidden, as in the
notebook's run: they disagree with it only when something was tampered with); ``likely=`` names the
classic mistake a result matches; the other checks run with course.seq2seq's answer to the part forbidden
(``owns``, ``_call``: also through an alias or a subclass).
"""
from __future__ import annotations

import copy
import math

import torch

import course.seq2seq as ref
from autograder.checkkit import (Answers, check_dropout_sites, check_grads, load_weights, module, pair, reference_grads,
                                 seed_kernel, tensor, what)
from autograder.trusted import check
from course.testing import (TableModel, best_by_brute_force, check_close, check_rows_sum_to_one,
                            overfit, seeded, table_from_probs)

REF = "course.seq2seq."


def _warm_up() -> None:
    """The first optimizer step imports torch._dynamo (~1 s): when the checks load, not in a grade cell."""
    layer = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()


_warm_up()
ANSWERS = Answers("course.seq2seq")
_no_reference, _own, owns, _call = ANSWERS.scan, ANSWERS.forbidden, ANSWERS.owns, ANSWERS.call


SCORES = ("dot_score", "scaled_dot_score", "general_score", "additive_score")


# ==================================================================================================
# 1. score functions
# ==================================================================================================
@check("grade_scores", "shapes, dot_score[1, 2], scaled = dot / 2, general_score[2, 0], additive_score[0, 3] on "
                       "(3, 4) queries (the visible tests)", mirrors_visible=True)
def scores_visible(h):
    with seeded(1):
        q, k = torch.randn(3, 4), torch.randn(3, 5, 4)
        W = torch.randn(4, 4)
        W2, U, v = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6)
    s, sc = (tensor(h.call(n, q, k), n) for n in ("dot_score", "scaled_dot_score"))
    g = tensor(h.call("general_score", q, k, W), "general_score")
    e = tensor(h.call("additive_score", q, k, W2, U, v), "additive_score")
    for x, n in ((s, "dot_score"), (e, "additive_score")):
        if tuple(x.shape) != (3, 5):
            raise AssertionError(f"{n}: shape {tuple(x.shape)}, expected (3, 5)")
    check_close(s[1, 2], q[1] @ k[1, 2], atol=1e-5, name="dot_score[1, 2] vs q[1] . k[1, 2]")
    check_close(sc, s / 2.0, atol=1e-5, name="scaled_dot_score vs dot_score / sqrt(4)")
    check_close(g[2, 0], q[2] @ W @ k[2, 0], atol=1e-5, name="general_score[2, 0] vs q^T W k")
    check_close(e[0, 3], v @ torch.tanh(W2 @ q[0] + U @ k[0, 3]), atol=1e-5, name="additive_score[0, 3]")


def _score_mistakes(kind: str, q, k, W=None, U=None, v=None) -> dict:
    if kind in ("dot", "scaled_dot"):
        dot, d = (k @ q.unsqueeze(-1)).squeeze(-1), q.size(-1)
        if kind == "dot":
            return {"scores divided by sqrt(d): that is scaled_dot_score, dot_score has no scale": dot / math.sqrt(d)}
        return {"no 1/sqrt(d) scale": dot, "divided by d instead of sqrt(d)": dot / d}
    if kind == "general":
        return {"W transposed: q^T W k_j takes (q @ W) . k_j": (k @ (q @ W.T).unsqueeze(-1)).squeeze(-1)
                if W.size(0) == W.size(1) else None}
    return {"no tanh: v^T tanh(W q + U k_j)": ((q @ W.T).unsqueeze(-2) + k @ U.T) @ v,
            "W and U swapped: W acts on the query, U on the keys": torch.tanh((q @ U.T).unsqueeze(-2) + k @ W.T) @ v
            if W.shape == U.shape else None,
            "tanh of each term separately": (torch.tanh((q @ W.T).unsqueeze(-2)) + torch.tanh(k @ U.T)) @ v}


def _score_args(kind: str, B: int, S: int, dq: int, dk: int, A: int, dtype=torch.float32):
    q, k = torch.randn(B, dq, dtype=dtype), torch.randn(B, S, dk, dtype=dtype)
    if kind in ("dot", "scaled_dot"):
        return (q, torch.randn(B, S, dq, dtype=dtype))
    if kind == "general":
        return (q, k, torch.randn(dq, dk, dtype=dtype))
    return (q, k, torch.randn(A, dq, dtype=dtype), torch.randn(A, dk, dtype=dtype), torch.randn(A, dtype=dtype))


@check("grade_scores", "hand-computed cases: q = (1, 2) against keys (1, 0), (0, 1), (1, 1); W, U, v of ones and "
                       "identities")
def scores_by_hand(h):
    q, k = torch.tensor([[1.0, 2.0]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    eye, W = torch.eye(2), torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    cases = {"dot_score": ((q, k), [1.0, 2.0, 3.0]),
             "scaled_dot_score": ((q, k), [1 / math.sqrt(2), 2 / math.sqrt(2), 3 / math.sqrt(2)]),
             "general_score": ((q, k, W), [1.0, 4.0, 5.0]),  # q W = (1, 4)
             "additive_score": ((q, k, eye, eye, torch.ones(2)),
                                [2 * math.tanh(2), math.tanh(1) + math.tanh(3), math.tanh(2) + math.tanh(3)])}
    for name, (args, expected) in cases.items():
        got = tensor(_call(h, name, *args), f"{name}(q, keys)")
        check_close(got, torch.tensor([expected]), atol=1e-5, name=f"{name} of q = (1, 2) against keys (1, 0), (0, 1), "
                    "(1, 1)" + (", W = [[1, 2], [0, 1]]" if name == "general_score" else "")
                    + (", W = U = I, v = (1, 1)" if name == "additive_score" else ""), dims=("batch", "key"))


@check("grade_scores", "match the references on random sizes (batch, keys, query/key/attention widths, float64)")
def scores_random(h):
    with seeded(101):
        trials = []
        for t in range(12):
            kind = ("dot", "scaled_dot", "general", "additive")[t % 4]
            sizes = [int(torch.randint(1, n, ())) for n in (4, 9, 12, 12, 10)]
            if t in (2, 6):  # square W: a transposed W shows
                sizes[3] = sizes[2]
            trials.append((kind, sizes, _score_args(kind, *sizes, dtype=torch.float64 if t >= 8 else torch.float32)))
    for kind, (B, S, dq, dk, A), args in trials:
        where = f"(B={B}, S={S}, query width {dq}, key width {args[1].size(-1)}" + \
            (f", attention width {A}" if kind == "additive" else "") + f", {str(args[0].dtype)[6:]})"
        got = tensor(_call(h, f"{kind}_score", *args), f"{kind}_score")
        expected = getattr(ref, f"{kind}_score")(*args)
        likely = {k: v for k, v in _score_mistakes(kind, *args).items() if v is not None}
        check_close(got, expected, atol=1e-5, rtol=1e-4, name=f"{kind}_score {where}", dims=("batch", "key"),
                    likely=likely)


@check("grade_scores", "gradients with respect to every input equal the references'; no course.seq2seq")
def scores_gradients(h):
    with seeded(102):
        cases = [(kind, _score_args(kind, 2, 5, 4, 6, 3)) for kind in ("dot", "scaled_dot", "general", "additive")]
        cots = [torch.randn(2, 5) for _ in cases]
    for (kind, args), g in zip(cases, cots):
        with _own(h, *SCORES):
            got = h.vjp(f"{kind}_score", args, (g,))
        leaves = [a.clone().requires_grad_() for a in args]
        getattr(ref, f"{kind}_score")(*leaves).backward(g)
        for i, (d, leaf) in enumerate(zip(got, leaves)):
            check_close(tensor(d, f"gradient of argument {i}"), leaf.grad, atol=1e-5, rtol=1e-4,
                        name=f"{kind}_score: gradient with respect to argument {i}",
                        hint="use differentiable torch operations only (no .detach(), .item() or numpy)")
    _no_reference(h, "scores")


# ==================================================================================================
# 2. masked softmax
# ==================================================================================================
@check("grade_masked_softmax", "a (3, 6) batch with 6, 1 and 3 allowed keys; no allowed key gives zeros "
                               "(the visible tests)", mirrors_visible=True)
def softmax_visible(h):
    with seeded(2):
        scores = torch.randn(3, 6)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 3])[:, None]
    w = tensor(h.call("masked_softmax", scores, mask), "masked_softmax(scores, mask)")
    if tuple(w.shape) != (3, 6):
        raise AssertionError(f"shape {tuple(w.shape)}, expected (3, 6)")
    check_close(w[2, :3], scores[2, :3].softmax(-1), atol=1e-6, name="row 2: a softmax over its 3 allowed entries")
    check_close(w[1], torch.tensor([1.0, 0, 0, 0, 0, 0]), atol=1e-8, rtol=1e-5, name="row 1 (one allowed entry)")
    if not bool((w[~mask] == 0).all()):
        raise AssertionError("masked entries must be exactly 0")
    w = tensor(h.call("masked_softmax", scores, torch.zeros(3, 6, dtype=torch.bool)), "masked_softmax")
    if not torch.equal(w, torch.zeros(3, 6)):
        raise AssertionError("with no allowed entry every weight is 0 (no NaN)")


def _softmax_mistakes(scores, mask) -> dict:
    m = mask.expand_as(scores)
    return {"the mask inverted: True marks a real token (allowed), False padding":
                torch.softmax(scores.masked_fill(m, float("-inf")), -1).nan_to_num(0.0),
            "the mask ignored": torch.softmax(scores, -1),
            "softmax over the wrong dim: normalise over the keys, the last dim": torch.softmax(
                scores.masked_fill(~m, float("-inf")), 0).nan_to_num(0.0),
            "padding set to 0 after an unmasked softmax, without renormalising":
                torch.softmax(scores, -1).masked_fill(~m, 0.0)}


@check("grade_masked_softmax", "matches the reference on random scores and masks ([B, S], [B, T, S] with a [B, 1, S] "
                               "mask, float64); exactly 0 where masked; rows sum to 1")
def softmax_random(h):
    with seeded(201):
        trials = []
        for t in range(10):
            B, S = int(torch.randint(1, 5, ())), int(torch.randint(1, 9, ()))
            lead = (B,) if t % 2 == 0 else (B, int(torch.randint(1, 4, ())))
            scores = 3 * torch.randn(*lead, S, dtype=torch.float64 if t == 9 else torch.float32)
            lengths = torch.randint(1, S + 1, (B,))
            mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S) padding mask, >= 1 real token
            if len(lead) == 2:
                mask = mask[:, None, :]
            trials.append((scores, mask))
    for scores, mask in trials:
        where = f"(scores {tuple(scores.shape)}, mask {tuple(mask.shape)}, {str(scores.dtype)[6:]})"
        w = tensor(_call(h, "masked_softmax", scores, mask), "masked_softmax(scores, mask)")
        check_close(w, ref.masked_softmax(scores, mask), atol=1e-6, rtol=1e-5, name=f"weights {where}",
                    likely=_softmax_mistakes(scores, mask))
        if w.dtype != scores.dtype:
            raise AssertionError(f"weights have dtype {w.dtype}, expected {scores.dtype} like the scores {where}")
        blocked = ~mask.expand_as(scores)
        if bool((w[blocked] != 0).any()):
            raise AssertionError(f"weights of masked entries are not exactly 0 {where}: fill the masked scores with "
                                 "-inf "
                                 "(or zero the weights there)")
        check_rows_sum_to_one(w, name=f"weights {where}")


@check("grade_masked_softmax", "large scores (±1000) do not overflow; a fully masked row gives zeros and no NaN, "
                               "also in the gradient")
def softmax_edge_cases(h):
    scores = torch.tensor([[1000.0, 999.0, -1000.0], [0.5, 0.2, 0.1]])
    mask = torch.tensor([[True, True, True], [False, False, False]])
    w = tensor(_call(h, "masked_softmax", scores, mask), "masked_softmax(scores, mask)")
    if not bool(torch.isfinite(w).all()):
        bad = "the fully masked row 1" if bool(torch.isfinite(w[0]).all()) else "row 0 (scores 1000, 999, -1000)"
        raise AssertionError(f"NaN or inf in the weights of {bad}: "
                             + ("softmax of a row of -inf is NaN: give such a row zero weights" if "1" in bad[-6:]
                                else "subtract the row maximum before exp (torch.softmax does)"))
    check_close(w, ref.masked_softmax(scores, mask), atol=1e-6,
                name="weights for scores (1000, 999, -1000) and a fully "
                "masked row", hint="a row without an allowed entry gets all-zero weights")
    with _own(h, "masked_softmax"):
        g = h.vjp("masked_softmax", (scores, mask), (torch.ones(2, 3),))
    if not (isinstance(g, list) and g and isinstance(g[0], torch.Tensor)):
        raise AssertionError("no gradient reaches the scores: use differentiable torch operations")
    if not bool(torch.isfinite(g[0]).all()):
        raise AssertionError("the gradient with respect to the scores has NaN for a fully masked row: compute the "
                             "softmax on finite values there (e.g. masked_fill after the softmax), not nan_to_num "
                             "on a NaN that autograd saw")
    _no_reference(h, "masked_softmax")


# ==================================================================================================
# 3. additive attention (graded with the reference score and masked softmax)
# ==================================================================================================
REF_SCORES = dict(additive_score=REF + "additive_score", masked_softmax=REF + "masked_softmax")


@check("grade_attention", "shapes, weights sum to 1, context = sum_j a_j h_j on a (2, 5) batch (the visible tests)",
       mirrors_visible=True)
def attention_visible(h):
    with seeded(3):
        layer = ref.AdditiveAttention(3, 4, 5)
        query, keys = torch.randn(2, 3), torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, True, True, True], [True, True, False, False, False]])
    with h.substituted(**REF_SCORES):
        c, w = pair(module(h, "AdditiveAttention", 3, 4, 5, state=layer.state_dict())(query, keys, mask),
                    "AdditiveAttention.forward")
    c, w = tensor(c, "context"), tensor(w, "weights")
    if tuple(c.shape) != (2, 4) or tuple(w.shape) != (2, 5):
        raise AssertionError("context should be (B, E), weights (B, S)")
    check_close(w.sum(-1), torch.ones(2), atol=1e-5, name="the weights of each sentence sum to 1")
    check_close(c, (w[:, :, None] * keys).sum(1), atol=1e-5, name="context vs sum_j a_j h_j")


def _attention_case(seed: int, B=3, S=6, D=5, E=8, A=4):
    with seeded(seed):
        layer = ref.AdditiveAttention(D, E, A)
        query, keys = torch.randn(B, D), torch.randn(B, S, E)
        mask = torch.arange(S)[None, :] < torch.randint(1, S + 1, (B,))[:, None]
        mask[0] = True
    return layer, query, keys, mask


@check("grade_attention", "context and weights equal the reference layer with the same W, U, v on padded keys; "
                          "gradients reach W, U, v and the inputs")
def attention_values(h):
    for seed, sizes in ((301, {}), (302, dict(B=1, S=1)), (303, dict(B=4, S=9, D=3, E=6, A=7))):
        layer, query, keys, mask = _attention_case(seed, **sizes)
        where = f"(B={query.size(0)}, S={keys.size(1)}, query width {query.size(1)}, key width {keys.size(2)})"
        with h.substituted(**REF_SCORES), _own(h, "AdditiveAttention"):
            student = module(h, "AdditiveAttention", query.size(1), keys.size(2), layer.W.out_features,
                             state=layer.state_dict())
            c, w = pair(student(query, keys, mask), "AdditiveAttention.forward")
            c_ref, w_ref = layer(query, keys, mask)
            if isinstance(c, torch.Tensor) and c.shape == w_ref.shape and isinstance(w, torch.Tensor) \
                    and w.shape == c_ref.shape:
                raise AssertionError(f"forward returns (weights, context): return (context, weights) {where}")
            raw = ref.additive_score(query, keys, layer.W.weight, layer.U.weight, layer.v.weight[0])
            check_close(tensor(w, "weights"), w_ref, atol=1e-6, name=f"weights {where}", dims=("batch", "key"),
                        likely={"weight on the padding: pass the mask to masked_softmax": torch.softmax(raw, -1)})
            raw = ref.additive_score(query, keys, layer.W.weight, layer.U.weight, layer.v.weight[0])
            check_close(tensor(c, "context"), c_ref, atol=1e-5, name=f"context {where}", dims=("batch", "channel"),
                        likely={"the context sums the keys with the raw scores: weight them by the softmax":
                                (raw.unsqueeze(1) @ keys).squeeze(1),
                                "the context is the mean of the keys": keys.mean(1)})
            g = torch.randn_like(c_ref)
            check_grads(student.grads(query, keys, mask, grad_output=g), reference_grads(layer, (query, keys, mask), g),
                        f"AdditiveAttention {where}")
    _no_reference(h, "attention")


# ==================================================================================================
# 4. the bidirectional GRU encoder
# ==================================================================================================
@check("grade_encoder", "shapes, zero outputs at padding, sentence 0 alone equals its padded run (the visible "
                        "tests)", mirrors_visible=True)
def encoder_visible(h):
    with seeded(4):
        enc = ref.Encoder(10, 3, 4, 5)
    src, lengths = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 8, 9, 3]]), torch.tensor([4, 5])
    student = module(h, "Encoder", 10, 3, 4, 5, state=enc.state_dict())
    outputs, hidden = pair(student(src, lengths), "Encoder.forward")
    outputs, hidden = tensor(outputs, "outputs"), tensor(hidden, "hidden")
    if tuple(outputs.shape) != (2, 5, 8) or tuple(hidden.shape) != (2, 5):
        raise AssertionError("outputs should be (B, S, 2H), hidden (B, D)")
    if not bool((outputs[0, 4] == 0).all()):
        raise AssertionError("outputs at padded positions should be 0")
    alone = tensor(pair(student(src[:1, :4], lengths[:1]), "Encoder.forward")[0], "outputs")
    check_close(outputs[0, :4], alone[0], atol=1e-5, name="sentence 0 in the padded batch vs alone")


def _encoder_case(seed: int, V=13, emb=6, H=5, D=7, pad=0, lengths=(5, 2, 4), dropout=0.0, extra=0):
    """``extra`` padding columns after the longest sentence (a batch cut from a longer one)."""
    with seeded(seed):
        enc = ref.Encoder(V, emb, H, D, dropout=dropout, pad_id=pad).eval()
        S = max(lengths) + extra
        src = torch.randint(1, V, (len(lengths), S))
        src[src == pad] = (pad + 1) % V
        lengths = torch.tensor(lengths)
        src[torch.arange(S)[None, :] >= lengths[:, None]] = pad
    return enc, src, lengths


def _encoder_mistakes(enc: ref.Encoder, src, lengths):
    """What the classic wrong encoders return: (outputs, hidden) per mistake."""
    emb = enc.embedding(src)
    out_unpacked, h_unpacked = enc.rnn(emb)  # padding read as tokens
    out, h = enc(src, lengths)
    H = enc.rnn.hidden_size
    fwd_last = out[torch.arange(src.size(0)), lengths - 1, :H]
    return {"hidden": {"the GRU ran over the padding (pack the padded batch: pack_padded_sequence)":
                       torch.tanh(enc.fc(torch.cat([h_unpacked[0], h_unpacked[1]], -1))),
                       "hidden from the backward direction first: cat the forward final state, then the backward":
                       torch.tanh(enc.fc(torch.cat([out[:, 0, H:], fwd_last], -1))),
                       "no tanh on fc([fwd; bwd])": enc.fc(torch.cat([fwd_last, out[:, 0, H:]], -1)),
                       "the backward state taken at the last real token: the backward direction ends at position 0":
                       torch.tanh(enc.fc(torch.cat([fwd_last, out[torch.arange(src.size(0)), lengths - 1, H:]], -1))),
                       "hidden from the last time step's outputs, which are padding for shorter sentences":
                       torch.tanh(enc.fc(out[:, -1]))},
            "outputs": {"the GRU ran over the padding (pack the padded batch: pack_padded_sequence)": out_unpacked}}


@check("grade_encoder", "outputs (zero at padding) and hidden equal the reference encoder with the same weights on "
                        "unsorted lengths, pad_id 0 and 3; each sentence alone gives the same result as in the batch")
@owns("Encoder")
def encoder_values(h):
    for seed, kw in ((401, {}), (402, dict(pad=3, lengths=(3, 6, 1, 6))), (403, dict(lengths=(4, 4), H=3, D=2)),
                     (404, dict(lengths=(3, 1, 2), extra=2))):
        enc, src, lengths = _encoder_case(seed, **kw)
        where = f"(lengths {lengths.tolist()}, S={src.size(1)}, pad_id {kw.get('pad', 0)})"
        student = module(h, "Encoder", enc.embedding.num_embeddings, enc.embedding.embedding_dim,
                         enc.rnn.hidden_size, enc.fc.out_features, pad_id=kw.get("pad", 0), state=enc.state_dict())
        r = student(src, lengths)
        if not (isinstance(r, list) and len(r) == 2):
            raise AssertionError(f"Encoder.forward should return (outputs, hidden), got {what(r)}")
        out, hid = (tensor(x, n) for x, n in zip(r, ("outputs", "hidden")))
        with torch.no_grad():
            out_ref, hid_ref = enc(src, lengths)
            likely = _encoder_mistakes(enc, src, lengths)
        check_close(out, out_ref, atol=1e-5, name=f"outputs {where}", dims=("batch", "position", "channel"),
                    likely=likely["outputs"], hint="outputs [B, S, 2H]: pad_packed_sequence(..., total_length=S)")
        check_close(hid, hid_ref, atol=1e-5, name=f"hidden (s_0) {where}", dims=("batch", "channel"),
                    likely=likely["hidden"])
        alone = student(src[1:2, : int(lengths[1])], lengths[1:2])
        check_close(tensor(alone[1], "hidden"), hid_ref[1:2], atol=1e-5,
                    name=f"hidden of sentence 1 encoded alone, unpadded {where}")


@check("grade_encoder", "parameter names of the notebook, embedding with padding_idx; dropout on the embeddings in "
                        "training mode only; gradients reach every parameter")
@owns("Encoder")
def encoder_training(h):
    enc, src, lengths = _encoder_case(404, pad=2)
    student = module(h, "Encoder", 13, 6, 5, 7, dropout=0.0, pad_id=2, state=enc.state_dict())
    if student.attr("embedding").attr("padding_idx") != 2:
        raise AssertionError("embedding has no padding_idx=pad_id: "
                             "nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)")
    check_dropout_sites(h, student, {"dropout": "to the embeddings"}, lambda: student(src, lengths)[0], name="Encoder")
    g = torch.randn(3, 5, 10)
    student.eval()
    got = student.grads(src, lengths, grad_output=g)
    check_grads(([], got[1]), ([], reference_grads(enc, (src, lengths), g)[1]), "Encoder")
    _no_reference(h, "encoder")


# ==================================================================================================
# 5. one decoder step (graded with the reference AdditiveAttention)
# ==================================================================================================
REF_ATTN = dict(AdditiveAttention=REF + "AdditiveAttention")


@check("grade_decoder", "shapes; s = GRUCell([e_i ; c_i], s_{i-1}) on a (2, 3) batch (the visible tests)",
       mirrors_visible=True)
def decoder_visible(h):
    with seeded(5):
        dec = ref.AttentionDecoder(8, 3, 4, 5, 6).eval()
        y_prev, s_prev, enc_out = torch.tensor([1, 4]), torch.randn(2, 5), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    with h.substituted(**REF_ATTN):
        r = module(h, "AttentionDecoder", 8, 3, 4, 5, 6, state=dec.state_dict())(y_prev, s_prev, enc_out, mask)
    if not (isinstance(r, list) and len(r) == 3):
        raise AssertionError(f"AttentionDecoder.forward should return (logits, s, weights), got {what(r)}")
    logits, s, w = (tensor(x, n) for x, n in zip(r, ("logits", "s", "weights")))
    if tuple(logits.shape) != (2, 8) or tuple(s.shape) != (2, 5) or tuple(w.shape) != (2, 3):
        raise AssertionError("wrong output shapes")
    with torch.no_grad():
        c, _ = dec.attention(s_prev, enc_out, mask)
        s_ref = dec.rnn(torch.cat([dec.embedding(y_prev), c], -1), s_prev)
    check_close(s, s_ref, atol=1e-5, name="s vs GRUCell([e_i ; c_i], s_{i-1})")


def _decoder_case(seed: int, B=3, S=5, V=11, emb=4, E=6, D=5, A=3):
    with seeded(seed):
        dec = ref.AttentionDecoder(V, emb, E, D, A).eval()
        y, s, enc_out = torch.randint(0, V, (B,)), torch.randn(B, D), torch.randn(B, S, E)
        mask = torch.arange(S)[None, :] < torch.randint(1, S + 1, (B,))[:, None]
    return dec, (y, s, enc_out, mask)


def _decoder_mistakes(dec: ref.AttentionDecoder, y, s_prev, enc_out, mask) -> dict:
    e = dec.embedding(y)
    c, _ = dec.attention(s_prev, enc_out, mask)
    s = dec.rnn(torch.cat([e, c], -1), s_prev)
    c_late, _ = dec.attention(s, enc_out, mask)
    late = "the context of the output layer from the new state s_i: compute c_i once, from s_{i-1}"
    return {late: dec.out(torch.cat([s, c_late, e], -1)),
            "out([s_i ; e_i ; c_i]): the output layer reads [s_i ; c_i ; e_i] in this order":
                dec.out(torch.cat([s, e, c], -1)),
            "the output layer reads s_{i-1}: use the new state s_i": dec.out(torch.cat([s_prev, c, e], -1)),
            "attention queried with the new state s_i: the context c_i comes from s_{i-1}":
                dec.out(torch.cat([dec.rnn(torch.cat([e, c_late], -1), s_prev), c_late, e], -1))}


@check("grade_decoder", "logits, new state and weights equal the reference step with the same weights; a fixed-context "
                        "attention (the baseline) gives weights None")
@owns("AttentionDecoder")
def decoder_values(h):
    for seed, kw in ((501, {}), (502, dict(B=1, S=1)), (503, dict(B=4, S=7, E=8, D=3, A=6))):
        dec, args = _decoder_case(seed, **kw)
        where = f"(B={args[0].size(0)}, S={args[2].size(1)})"
        with h.substituted(**REF_ATTN):
            student = module(h, "AttentionDecoder", dec.out.out_features, dec.embedding.embedding_dim,
                             args[2].size(2), args[1].size(1), dec.attention.W.out_features, state=dec.state_dict())
            r = student(*args)
        if not (isinstance(r, list) and len(r) == 3):
            raise AssertionError(f"AttentionDecoder.forward should return (logits, s, weights), got {what(r)}")
        with torch.no_grad():
            logits, s, w = dec(*args)
            likely = _decoder_mistakes(dec, *args)
        check_close(tensor(r[1], "s"), s, atol=1e-5, name=f"new state s_i {where}", dims=("batch", "channel"),
                    hint="s_i = GRUCell([e_i ; c_i], s_{i-1}) with c_i from s_{i-1}")
        check_close(tensor(r[0], "logits"), logits, atol=1e-5, name=f"logits {where}", dims=("batch", "vocab"),
                    likely=likely, hint="logits = out([s_i ; c_i ; e_i]) in this order")
        check_close(tensor(r[2], "weights"), w, atol=1e-6, name=f"weights {where}", dims=("batch", "key"))
    dec, args = _decoder_case(504)
    with h.substituted(**REF_ATTN):
        student = module(h, "AttentionDecoder", 11, 4, 6, 5, 3, state=dec.state_dict())
    h.library("builtins.setattr")(student, "attention", h.library(REF + "FixedContext")())
    r = student(*args)
    if not (isinstance(r, list) and len(r) == 3 and r[2] is None):
        raise AssertionError("with an attention that returns (context, None) (the baseline's FixedContext), forward "
                             f"should return weights None, got "
                             f"{what(r[2] if isinstance(r, list) and len(r) == 3 else r)}")
    dec.attention = ref.FixedContext()
    with torch.no_grad():
        check_close(tensor(r[0], "logits"), dec(*args)[0], atol=1e-5, name="logits with the fixed-context attention")


@check("grade_decoder", "dropout on the embedding in training mode only, the dropped e_i feeding the GRU and the "
                        "output layer; gradients reach every parameter and input")
@owns("AttentionDecoder")
def decoder_training(h):
    dec, args = _decoder_case(505)
    with h.substituted(**REF_ATTN):
        student = module(h, "AttentionDecoder", 11, 4, 6, 5, 3, state=dec.state_dict())
        check_dropout_sites(h, student, {"dropout": "to the embedded previous token"}, lambda: student(*args)[0],
                            name="AttentionDecoder")
        student.eval()
        g = torch.randn(3, 11)
        check_grads(student.grads(*args, grad_output=g), reference_grads(dec, args, g), "AttentionDecoder")
        # training mode, dropout 0.5, the same seed: one dropout draw on e_i, which feeds the GRU and the output
        h.library("builtins.setattr")(student.attr("dropout"), "p", 0.5)
        student.train()
        seed_kernel(h, 506)
        r = student(*args)
    dec.dropout.p = 0.5
    dec.train()
    with seeded(506), torch.no_grad():
        logits = dec(*args)[0]
    check_close(tensor(r[0] if isinstance(r, list) else r, "logits"), logits, atol=1e-5,
                name="logits in training mode with dropout 0.5 (same seed)",
                hint="e_i = dropout(embedding(y_{i-1})) is used twice: in the GRU input and in out([s_i ; c_i ; e_i])")
    _no_reference(h, "decoder")


# ==================================================================================================
# 6. the baseline's fixed context
# ==================================================================================================
@check("grade_fixed_context", "shape (2, 6); sentence 0 with 2 real tokens (the visible tests)", mirrors_visible=True)
def fixed_context_visible(h):
    with seeded(6):
        enc_out = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    c = tensor(h.call("fixed_context", enc_out, mask), "fixed_context(enc_out, src_mask)")
    if tuple(c.shape) != (2, 6):
        raise AssertionError(f"shape {tuple(c.shape)}, expected (2, 6)")
    if not torch.equal(c[0], torch.cat([enc_out[0, 1, :3], enc_out[0, 0, 3:]])):
        raise AssertionError("sentence 0 (2 real tokens) is wrong")


def _context_mistakes(enc_out, mask) -> dict:
    H = enc_out.size(-1) // 2
    last = mask.long().sum(-1) - 1
    rows = torch.arange(enc_out.size(0))
    return {"the last time step, which is padding for shorter sentences: take each sentence's last real token":
                torch.cat([enc_out[:, -1, :H], enc_out[:, 0, H:]], -1),
            "the halves swapped: the forward direction ends at the last token, the backward one at position 0":
                torch.cat([enc_out[rows, last, H:], enc_out[:, 0, :H]], -1),
            "the backward half first: concatenate [forward ; backward] as the encoder's outputs do":
                torch.cat([enc_out[:, 0, H:], enc_out[rows, last, :H]], -1),
            "both halves at the last real token: the backward direction ends at position 0":
                enc_out[rows, last],
            "the mean over positions": (enc_out * mask[..., None]).sum(1) / mask.sum(1, keepdim=True),
            "the backward half at the last position: the backward direction ends at position 0":
                torch.cat([enc_out[rows, last, :H], enc_out[:, -1, H:]], -1)}


@check("grade_fixed_context", "[forward half at the last real token ; backward half at position 0] on random "
                              "padded batches; does not use course.seq2seq")
def fixed_context_random(h):
    with seeded(601):
        trials = []
        for _ in range(6):
            B, S, H = int(torch.randint(1, 5, ())), int(torch.randint(1, 8, ())), int(torch.randint(1, 5, ()))
            lengths = torch.randint(1, S + 1, (B,))
            lengths[0] = 1 if S > 1 else lengths[0]
            mask = torch.arange(S)[None, :] < lengths[:, None]
            trials.append((torch.randn(B, S, 2 * H) * mask[..., None], mask))
    for enc_out, mask in trials:
        where = f"(enc_out {tuple(enc_out.shape)}, lengths {mask.sum(1).tolist()})"
        got = tensor(_call(h, "fixed_context", enc_out, mask), "fixed_context(enc_out, src_mask)")
        check_close(got, ref.fixed_context(enc_out, mask), atol=1e-6, name=f"fixed context {where}",
                    dims=("batch", "channel"), likely=_context_mistakes(enc_out, mask))
    _no_reference(h, "fixed_context")


# ==================================================================================================
# 7. Seq2Seq with teacher forcing (graded with the reference encoder, decoder and attention)
# ==================================================================================================
REF_MODEL = dict(Encoder=REF + "Encoder", AttentionDecoder=REF + "AttentionDecoder", **REF_ATTN)


@check("grade_seq2seq", "logits (2, 3, 10), weights (2, 3, 3); weights None without attention (the visible tests)",
       mirrors_visible=True)
def seq2seq_visible(h):
    src, src_len = torch.tensor([[2, 4, 3], [2, 3, 0]]), torch.tensor([3, 2])
    tgt = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    seed_kernel(h, 7)
    with h.substituted(**REF_MODEL, PlainDecoder=REF + "PlainDecoder"):
        model = h.construct("Seq2Seq", h.construct("Encoder", 9, 3, 4, 5),
                            h.construct("AttentionDecoder", 10, 3, 8, 5, 6))
        plain = h.construct("Seq2Seq", h.construct("Encoder", 9, 3, 4, 5), h.construct("PlainDecoder", 10, 3, 8, 5))
    logits, w = pair(model.eval()(src, src_len, tgt), "Seq2Seq.forward")
    if tuple(tensor(logits, "logits").shape) != (2, 3, 10):
        raise AssertionError(f"logits have shape {tuple(logits.shape)}, expected (2, 3, 10)")
    if tuple(tensor(w, "weights").shape) != (2, 3, 3):
        raise AssertionError(f"weights have shape {tuple(w.shape)}, expected (2, 3, 3)")
    if pair(plain.eval()(src, src_len, tgt), "Seq2Seq.forward")[1] is not None:
        raise AssertionError("a decoder without attention: weights should be None")


def _seq2seq_case(seed: int, pad=0, V=9, lengths=(4, 2, 3), T=5):
    with seeded(seed):
        model = ref.Seq2Seq(ref.Encoder(V, 4, 3, 5, pad_id=pad), ref.AttentionDecoder(V, 4, 6, 5, 3), pad_id=pad)
        S = max(lengths)
        src, tgt = torch.randint(1, V, (len(lengths), S)), torch.randint(1, V, (len(lengths), T))
        src[src == pad], tgt[tgt == pad] = (pad + 1) % V, (pad + 1) % V
        lengths = torch.tensor(lengths)
        src[torch.arange(S)[None, :] >= lengths[:, None]] = pad
        tgt[-1, -2:] = pad
    return model.eval(), src, lengths, tgt


def _student_seq2seq(h, model: ref.Seq2Seq, pad: int):
    enc, dec = model.encoder, model.decoder
    with h.substituted(**REF_MODEL):
        e = h.construct("Encoder", enc.embedding.num_embeddings, 4, 3, 5, pad_id=pad)
        d = h.construct("AttentionDecoder", dec.out.out_features, 4, 6, 5, 3)
        return module(h, "Seq2Seq", e, d, pad_id=pad, state=model.state_dict())


def _teacher_mistakes(model: ref.Seq2Seq, src, lengths, tgt) -> dict:
    enc_out, s0, mask = model.encode(src, lengths)
    shifted, fresh, own, s, s_own, y = [], [], [], s0, s0, tgt[:, 0]
    for t in range(tgt.size(1) - 1):
        logits, s, _ = model.decoder(tgt[:, t + 1], s, enc_out, mask)
        shifted.append(logits)
        fresh.append(model.decoder(tgt[:, t], s0, enc_out, mask)[0])
        logits, s_own, _ = model.decoder(y, s_own, enc_out, mask)
        own.append(logits)
        y = logits.argmax(-1)
    return {"the decoder fed its own predictions: teacher forcing feeds the reference tgt[:, t]": torch.stack(own, 1),
            "teacher forcing shifted: step t feeds tgt[:, t] and predicts tgt[:, t+1]": torch.stack(shifted, 1),
            "every step starts from s_0: carry the decoder state from step to step": torch.stack(fresh, 1),
            "src_mask from src != 0: the padding id is self.pad_id": ref.Seq2Seq(model.encoder, model.decoder, 0)(
                src, lengths, tgt)[0]}


@check("grade_seq2seq", "logits [B, T-1, V] and weights [B, T-1, S] equal the reference model with the same weights "
                        "(pad_id 0 and 2); gradients reach the encoder")
@owns("Seq2Seq")
def seq2seq_values(h):
    for seed, pad in ((701, 0), (702, 2)):
        model, src, lengths, tgt = _seq2seq_case(seed, pad=pad)
        where = f"(src {tuple(src.shape)}, tgt {tuple(tgt.shape)}, pad_id {pad})"
        student = _student_seq2seq(h, model, pad)
        logits, w = pair(student(src, lengths, tgt), "Seq2Seq.forward")
        with torch.no_grad():
            logits_ref, w_ref = model(src, lengths, tgt)
            likely = _teacher_mistakes(model, src, lengths, tgt)
        check_close(tensor(logits, "logits"), logits_ref, atol=1e-5, name=f"logits {where}",
                    dims=("batch", "step", "vocab"), likely=likely)
        check_close(tensor(w, "weights"), w_ref, atol=1e-6, name=f"weights {where}", dims=("batch", "step", "key"),
                    hint="stack the step weights along dim 1")
    g = torch.randn_like(logits_ref)
    got = student.grads(src, lengths, tgt, grad_output=g)
    _, exp_params = reference_grads(model, (src, lengths, tgt), g)
    check_grads(([], got[1]), ([], exp_params), "Seq2Seq")


@check("grade_seq2seq", "a tiny batch is overfit: 20 Adam steps give the reference model's loss curve (gradients "
                        "through every step) and end near 0")
@owns("Seq2Seq")
def seq2seq_overfits(h):
    model, src, lengths, tgt = _seq2seq_case(704)
    student = _student_seq2seq(h, model, 0)
    got = h.library("course.testing.overfit")(student, src, lengths, tgt, steps=20, lr=0.05)
    if not (isinstance(got, list) and len(got) == 20 and all(isinstance(x, float) for x in got)):
        raise AssertionError(f"training on one batch did not give 20 losses, got {what(got)}")
    expected = overfit(copy.deepcopy(model), src, lengths, tgt, steps=20, lr=0.05)
    check_close(torch.tensor(got), torch.tensor(expected), atol=1e-3, rtol=1e-3,
                name="losses of 20 Adam steps on one batch", dims=("step",),
                hint="the loss must reach every step's decoder call through the carried state (no .detach(), no "
                     "in-place changes of tensors autograd needs)")
    if got[-1] > 0.25 * got[0]:
        raise AssertionError(f"20 Adam steps on one batch took the loss from {got[0]:.3f} to {got[-1]:.3f} only")


@check("grade_seq2seq", "with the baseline decoder (no attention) forward returns weights None; no course.seq2seq")
@owns("Seq2Seq")
def seq2seq_plain(h):
    model, src, lengths, tgt = _seq2seq_case(703)
    with h.substituted(**REF_MODEL):
        e = h.construct("Encoder", 9, 4, 3, 5)
        d = h.library(REF + "PlainDecoder")(9, 4, 6, 5)
        student = h.construct("Seq2Seq", e, d, pad_id=0)
    plain = ref.Seq2Seq(model.encoder, ref.PlainDecoder(9, 4, 6, 5), 0).eval()
    load_weights(student, plain.state_dict(), "Seq2Seq")
    student.eval()
    logits, w = pair(student(src, lengths, tgt), "Seq2Seq.forward")
    if w is not None:
        raise AssertionError(f"with a decoder that returns weights None, forward should return None, got {what(w)}")
    with torch.no_grad():
        check_close(tensor(logits, "logits"), plain(src, lengths, tgt)[0], atol=1e-5, name="logits with PlainDecoder")
    _no_reference(h, "seq2seq")


# ==================================================================================================
# 8. greedy decoding, 9. beam search: on the planted TableModel (course.testing)
# ==================================================================================================
def _table_model(h, V, table, pad, memory=0.0):
    return h.library("course.testing.TableModel")(V, table=table, pad_id=pad, memory=memory)


def _sources(firsts, S=3):
    src = torch.tensor([[f] + [1] * (S - 1) for f in firsts])
    return src, torch.full((len(firsts),), S)


def _until_eos(ys: torch.Tensor, eos: int) -> list[list[int]]:
    """Each row of a decoded batch up to its first eos after bos (what follows is padding)."""
    return [row[: row.index(eos, 1) + 1] if eos in row[1:] else row for row in ys.tolist()]


def _decoded(table, firsts, max_len, bos, eos, pad, memory=0.0, trained=False) -> list[list[int]]:
    """Greedy decoding of a TableModel by the reference (``trained``: what the model gives in training mode,
    read as the eval-mode model of the rolled table), each sentence up to its eos."""
    model = TableModel(table.size(-1), table=table.roll(-1, dims=1) if trained else table, pad_id=pad, memory=memory)
    ys, _ = ref.greedy_decode(model, *_sources(firsts), max_len=max_len, bos=bos, eos=eos)
    return _until_eos(ys, eos)


def _random_table(seed, V, n_first, pad, scale=2.0):
    with seeded(seed):
        table = scale * torch.randn(n_first, V, V)
    table[..., pad] = -1e4
    return table


GREEDY_TABLE = {4: {2: {5: 0.9, 3: 0.1}, 5: {3: 0.6, 5: 0.4}}}
BEAM_TABLE = {4: {2: {4: 0.5, 5: 0.4, 3: 0.1}, 4: {4: 0.3, 5: 0.3, 3: 0.4}, 5: {3: 0.9, 4: 0.05, 5: 0.05}}}


@check("grade_greedy", "[[2, 5, 3]] and weights (1, 2, 3) on a planted table (the visible tests)", mirrors_visible=True)
def greedy_visible(h):
    model = _table_model(h, 7, table_from_probs(7, GREEDY_TABLE), 0)
    ys, w = pair(h.call("greedy_decode", model, torch.tensor([[4, 1, 1]]), torch.tensor([3]), max_len=4, bos=2, eos=3),
                 "greedy_decode")
    if not (isinstance(ys, torch.Tensor) and ys.tolist() == [[2, 5, 3]]):
        raise AssertionError(f"got {ys.tolist() if isinstance(ys, torch.Tensor) else what(ys)}, expected [[2, 5, 3]]")
    if not (isinstance(w, torch.Tensor) and tuple(w.shape) == (1, 2, 3)):
        raise AssertionError("weights should be (B, L-1, S) = (1, 2, 3)")


@check("grade_greedy", "batched greedy equals step-by-step argmax in eval mode: stops at EOS, pads after it, stops "
                       "when every sentence is done, weights [B, L-1, S]; other bos/eos/pad ids; mode restored")
def greedy_random(h):
    for seed in range(801, 809):
        V, bos, eos, pad, training = 6 + seed % 5, 1 + seed % 2, 2 + seed % 3, 0 if seed % 2 else 5, seed % 2 == 0
        memory = 1.0 if seed % 3 == 0 else 0.0  # with memory, the state must be carried from step to step
        table = _random_table(seed, V, 4, pad)
        firsts = [int(x) for x in torch.randint(0, 4, (1 + seed % 4,), generator=torch.Generator().manual_seed(seed))]
        src, lengths = _sources(firsts)
        max_len = 3 + seed % 6
        where = f"(V={V}, bos={bos}, eos={eos}, pad={pad}, max_len={max_len}, batch of {len(firsts)}" + \
            (", a model whose state matters)" if memory else ")")
        model = _table_model(h, V, table, pad, memory)
        model.train(training)
        ys, w = pair(_call(h, "greedy_decode", model, src, lengths, max_len=max_len, bos=bos, eos=eos), "greedy_decode")
        ys = tensor(ys, "ys")
        expected = _decoded(table, firsts, max_len, bos, eos, pad, memory)
        L = max(map(len, expected))
        padded = torch.tensor([e + [pad] * (L - len(e)) for e in expected])
        got = _until_eos(ys, eos)
        if training and got != expected and got == _decoded(table, firsts, max_len, bos, eos, pad, memory, True):
            raise AssertionError(f"the model was decoded in training mode (dropout on): call model.eval() {where}")
        if tuple(ys.shape) != tuple(padded.shape):
            raise AssertionError(f"ys has shape {tuple(ys.shape)}, expected {tuple(padded.shape)}: bos, at most "
                                 f"max_len tokens, and stop as soon as every sentence has produced eos {where}")
        for b, e in enumerate(expected):
            if ys[b].tolist() != padded[b].tolist():
                raise AssertionError(f"sentence {b}: got {ys[b].tolist()}, expected {padded[b].tolist()} (argmax at "
                                     f"each step, the state carried from step to step, then pad={pad} after eos) "
                                     f"{where}")
        w = tensor(w, "weights")
        if tuple(w.shape) != (len(firsts), L - 1, src.size(1)):
            raise AssertionError(f"weights have shape {tuple(w.shape)}, expected {(len(firsts), L - 1, src.size(1))}: "
                                 f"the step weights stacked along dim 1 {where}")
        for b, e in enumerate(expected):  # after a sentence's eos, what it is fed is free
            n = len(e) - 1
            check_close(w[b, :n], torch.nn.functional.one_hot(torch.tensor(e[:-1]) % 3, 3).float(),
                        name=f"weights of sentence {b} {where}", dims=("step", "key"),
                        hint="weights[:, t] are the weights of the step that predicts token t + 1")
        if model.attr("training") is not training:
            raise AssertionError("greedy_decode changed the model's mode: restore it (model.train(was_training)) "
                                 f"{where}")
    _no_reference(h, "greedy")


BOS = 1


def _beam(h, model, firsts, K, max_len, eos, alpha, where):
    src, lengths = _sources(firsts)
    with _own(h, "beam_search", "greedy_decode"):
        out = h.call("beam_search", model, src, lengths, beam_size=K, max_len=max_len, bos=BOS, eos=eos, alpha=alpha)
    if not (isinstance(out, list) and len(out) == len(firsts) and all(isinstance(o, list) for o in out)):
        raise AssertionError(f"beam_search should return one list of token ids per sentence, got {what(out)} {where}")
    for b, o in enumerate(out):
        if not o or o[0] != BOS or not all(isinstance(t, int) for t in o):
            raise AssertionError(f"sentence {b}: {o[:8]} should be a list of ints starting with bos={BOS} {where}")
        if eos in o[1:-1]:
            raise AssertionError(f"sentence {b}: {o} goes on after eos: a finished hypothesis is set aside, never "
                                 f"extended {where}")
        if len(o) > max_len + 1:
            raise AssertionError(f"sentence {b}: {len(o) - 1} tokens after bos, more than max_len={max_len} {where}")
    return out


def _beam_why(out, table, firsts, K, max_len, bos, eos, alpha, pad=0) -> str:
    """What a wrong beam search result matches: decoding in training mode, or the greedy path."""
    src = _sources(firsts)
    trained = TableModel(table.size(-1), table=table.roll(-1, dims=1), pad_id=pad)
    if out == ref.beam_search(trained, *src, beam_size=K, max_len=max_len, bos=bos, eos=eos, alpha=alpha):
        return "the model was decoded in training mode (dropout on): call model.eval()"
    if out == _decoded(table, firsts, max_len, bos, eos, pad):
        return ("the greedy path: keep the beam_size best hypotheses at each step; at the first step the K rows "
                "hold the same [bos]: extend it once (the other copies at -inf), or the beam fills with copies")
    return ""


@check("grade_beam", "beam 2 finds [[2, 5, 3]]; beam 1 equals the reference greedy decoder on a planted table (the "
                     "visible tests)", mirrors_visible=True)
def beam_visible(h):
    model = _table_model(h, 7, table_from_probs(7, BEAM_TABLE), 0)
    src, src_len = torch.tensor([[4, 1]]), torch.tensor([2])
    out = h.call("beam_search", model, src, src_len, beam_size=2, max_len=5, bos=2, eos=3)
    if out != [[2, 5, 3]]:
        why = _beam_why(out, table_from_probs(7, BEAM_TABLE), [4], 2, 5, 2, 3, 1.0)
        got = out if isinstance(out, list) else what(out)
        raise AssertionError((f"{why}: " if why else "") + f"beam 2: got {got}, expected [[2, 5, 3]] "
                             "(p = 0.36 > p(4 3) = 0.2)")
    local = TableModel(7, table=table_from_probs(7, BEAM_TABLE))
    greedy = ref.greedy_decode(local, src, src_len, max_len=5, bos=2, eos=3)[0][0].tolist()
    out = h.call("beam_search", model, src, src_len, beam_size=1, max_len=5, bos=2, eos=3)
    if out != [greedy]:
        raise AssertionError(f"beam 1: got {out if isinstance(out, list) else what(out)}, expected greedy's [{greedy}]")


@check("grade_beam", "beam_size=1 gives greedy's tokens; a wide beam finds the best hypothesis (brute force over all "
                     "sequences) for alpha 0, 0.5 and 1; batched (B * beam_size rows per step)")
def beam_exhaustive(h):
    for seed, V, max_len in ((901, 4, 4), (902, 5, 3), (903, 3, 5)):
        eos, pad = 2, 0
        table = _random_table(seed, V, 3, pad)
        # memory: the probabilities depend on the two last tokens, the one before y_prev kept in the state
        model, local = _table_model(h, V, table, pad, 1.0), TableModel(V, table=table, pad_id=pad, memory=1.0)
        for alpha in (0.0, 0.5, 1.0):
            where = f"(TableModel V={V}, max_len={max_len}, alpha={alpha}, eos={eos})"
            K = V ** (max_len - 1)  # every hypothesis survives until the last step, where n is the same for all
            out = _beam(h, model, [0, 1, 2], K, max_len, eos, alpha, where)
            for b in range(3):
                best = best_by_brute_force(local, b, max_len, BOS, eos, alpha, exclude=(pad,))
                if out[b] != best:
                    score = local.log_prob(b, best) / (len(best) - 1) ** alpha
                    got = local.log_prob(b, out[b]) / max(len(out[b]) - 1, 1) ** alpha
                    unnorm = best_by_brute_force(local, b, max_len, BOS, eos, 0.0, exclude=(pad,))
                    why = ("the best hypothesis without length normalisation: divide the log-probability by "
                           "n**alpha when comparing finished hypotheses" if out[b] == unnorm and alpha else
                           "a hypothesis that is not the best one a beam this wide finds (is each hypothesis "
                           "decoded with its own state, s reordered by parent?)")
                    raise AssertionError(f"sentence {b}: got {out[b]} (score {got:.4f}), but {best} scores "
                                         f"{score:.4f}: "
                                         f"{why} {where}")
        counted = _table_model(h, V, table, pad)
        _beam(h, counted, [0, 1, 2], 2, max_len, eos, 1.0, f"(beam_size=2, V={V}, max_len={max_len})")
        calls, rows = counted.attr("n_decode"), counted.attr("max_rows")
        if calls > max_len or rows < 3:
            raise AssertionError(f"{calls} decoder calls of at most {rows} rows for 3 sentences, "
                                 f"max_len={max_len}: run "
                                 "the hypotheses of all sentences in one decoder call per step (B * beam_size rows)")
        ys, _ = ref.greedy_decode(local, *_sources([0, 1, 2]), max_len=max_len, bos=BOS, eos=eos)
        greedy = [[t for t in row if t != pad] for row in ys.tolist()]  # the table never predicts pad
        one = _beam(h, model, [0, 1, 2], 1, max_len, eos, 1.0, f"(beam_size=1, V={V}, max_len={max_len})")
        if one != greedy:
            raise AssertionError(f"beam_size=1 gave {one}, greedy decoding gives {greedy} (V={V}, max_len={max_len})")


@check("grade_beam", "narrow beams (2, 3) on planted tables with memory equal the beam search of the text: the K best "
                     "candidates of each step, finished ones set aside, each row continuing its parent's state")
def beam_narrow(h):
    for seed, K, alpha in ((911, 2, 1.0), (912, 3, 0.0), (913, 2, 0.5), (914, 3, 1.0)):
        V, eos, pad, max_len = 6, 2, 0, 5
        table = _random_table(seed, V, 3, pad, scale=0.5)  # flat rows: the state (memory) changes the ranking
        model, local = _table_model(h, V, table, pad, 2.0), TableModel(V, table=table, pad_id=pad, memory=2.0)
        where = f"(TableModel V={V} with memory, beam_size={K}, max_len={max_len}, alpha={alpha})"
        out = _beam(h, model, [0, 1, 2], K, max_len, eos, alpha, where)
        expected = ref.beam_search(local, *_sources([0, 1, 2]), beam_size=K, max_len=max_len, bos=BOS, eos=eos,
                                   alpha=alpha)
        for b, (o, e) in enumerate(zip(out, expected)):
            if o != e:
                raise AssertionError(f"sentence {b}: got {o}, expected {e} {where}: keep the K best candidates of each "
                                     "step (finished ones set aside), and let each row continue its parent's tokens "
                                     "and decoder state (both reordered by parent)")


@check("grade_beam", "beam 2 beats greedy on a planted table; length normalisation decides between a short and a "
                     "long hypothesis; eval mode, mode restored; no course.seq2seq")
def beam_planted(h):
    eos, pad = 2, 0
    # greedy takes 3 (p .6) then eos (p .4): .24; beam 2 also keeps 4 (p .4), then eos (p .99): .396
    table = table_from_probs(5, {0: {BOS: {3: .6, 4: .4}, 3: {2: .4, 3: .3, 4: .3}, 4: {2: .99, 3: .01},
                                     2: {2: .5, 3: .5}}})
    model = _table_model(h, 5, table, pad)
    model.train()
    out = _beam(h, model, [0], 2, 4, eos, 0.0, "(planted table, beam_size=2, alpha=0)")
    if out != [[BOS, 4, 2]]:
        why = _beam_why(out, table, [0], 2, 4, BOS, eos, 0.0) or \
            "log p(4, eos) = log .4 + log .99 beats log p(3, eos) = log .6 + log .4"
        raise AssertionError(f"{why}: got {out}, expected [[{BOS}, 4, 2]] (planted table, beam_size=2, alpha=0)")
    if model.attr("training") is not True:
        raise AssertionError("beam_search changed the model's mode: restore it (model.train(was_training))")
    # [eos]: log .4 = -0.92; [3, eos]: log .36 = -1.02, / 2 = -0.51: alpha decides
    model = _table_model(h, 5, table_from_probs(5, {0: {BOS: {2: .4, 3: .6}, 3: {2: .6, 3: .4}, 2: {2: 1.0}}}), pad)
    for alpha, best in ((0.0, [BOS, 2]), (1.0, [BOS, 3, 2])):
        out = _beam(h, model, [0], 3, 3, eos, alpha, f"(planted table, beam_size=3, alpha={alpha})")
        if out != [best]:
            why = ("without length normalisation: compare finished hypotheses by log p / n**alpha (n tokens after bos)"
                   if alpha else "alpha=0 compares the plain log-probabilities")
            raise AssertionError(f"got {out}, expected [{best}]: [eos] has log p = log .4, [3, eos] log .36, which is "
                                 f"{math.log(.36) / 2:.3f} per token: {why} (planted table, beam_size=3, "
                                 f"alpha={alpha})")
    _no_reference(h, "beam")
