"""course.seq2seq (the answers of assignment 01) against independent computations, and the planted
TableModel its checks decode: a bug here would blame students for the course's own mistake."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import course.seq2seq as ref
from course.testing import TableModel, check_close


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_scores_by_hand_and_against_loops():
    q, k = torch.tensor([[1.0, 2.0]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert ref.dot_score(q, k).tolist() == [[1.0, 2.0, 3.0]]
    check_close(ref.scaled_dot_score(q, k), torch.tensor([[1.0, 2.0, 3.0]]) / math.sqrt(2))
    W = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    assert ref.general_score(q, k, W).tolist() == [[1.0, 4.0, 5.0]]
    q, k = torch.randn(3, 4), torch.randn(3, 5, 6)
    W, U, v = torch.randn(7, 4), torch.randn(7, 6), torch.randn(7)
    loop = torch.tensor([[float(v @ torch.tanh(W @ q[b] + U @ k[b, j])) for j in range(5)] for b in range(3)])
    check_close(ref.additive_score(q, k, W, U, v), loop, atol=1e-5)


def test_masked_softmax_zero_on_padding_and_no_nan():
    scores = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    w = ref.masked_softmax(scores, mask)
    check_close(w[0, :2], torch.softmax(scores[0, :2], -1))
    assert w[0, 2:].eq(0).all() and w[1].eq(0).all()
    w.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_encoder_packed_equals_unpadded_one_by_one():
    enc = ref.Encoder(11, 5, 4, 6, pad_id=3).eval()
    lengths = torch.tensor([2, 5, 3])
    src = torch.randint(4, 11, (3, 5))
    src[torch.arange(5)[None, :] >= lengths[:, None]] = 3
    out, hid = enc(src, lengths)
    assert out.shape == (3, 5, 8) and hid.shape == (3, 6)
    for b in range(3):
        n = int(lengths[b])
        o1, h1 = enc.rnn(enc.embedding(src[b:b + 1, :n]))  # no padding: the plain GRU
        check_close(out[b, :n], o1[0], atol=1e-6)
        assert out[b, n:].eq(0).all()
        check_close(hid[b], torch.tanh(enc.fc(torch.cat([h1[0, 0], h1[1, 0]]))), atol=1e-6)
        check_close(ref.fixed_context(out, src != 3)[b], torch.cat([h1[0, 0], h1[1, 0]]), atol=1e-6)


def test_seq2seq_forward_equals_stepping_the_decoder():
    model = ref.Seq2Seq(ref.Encoder(9, 4, 3, 5), ref.AttentionDecoder(9, 4, 6, 5, 3)).eval()
    src, lengths, tgt = torch.tensor([[4, 5, 6], [7, 8, 0]]), torch.tensor([3, 2]), torch.randint(1, 9, (2, 4))
    logits, w = model(src, lengths, tgt)
    assert logits.shape == (2, 3, 9) and w.shape == (2, 3, 3) and w[1, :, 2].eq(0).all()
    enc_out, s, mask = model.encode(src, lengths)
    for t in range(3):
        step, s, a = model.decoder(tgt[:, t], s, enc_out, mask)
        check_close(logits[:, t], step, atol=1e-6)
        check_close(w[:, t], a, atol=1e-6)
    plain = ref.Seq2Seq(model.encoder, ref.PlainDecoder(9, 4, 6, 5))
    assert plain(src, lengths, tgt)[1] is None


def _brute_force(model: TableModel, first: int, max_len: int, eos: int, alpha: float) -> list[int]:
    best = (-math.inf, [])
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(1, model.V), repeat=n):
            if eos in seq[:-1] or (n < max_len and seq[-1] != eos):
                continue
            best = max(best, (model.log_prob(first, [1, *seq]) / n ** alpha, [1, *seq]))
    return best[1]


@pytest.mark.parametrize("seed, memory", [(0, 0.0), (1, 0.0), (2, 0.5), (3, 0.5)])
def test_beam_search_wide_is_exhaustive_and_width_one_is_greedy(seed, memory):
    model = TableModel(4, seed=seed, n_first=3, memory=memory)
    src, lengths = torch.tensor([[0, 1], [1, 1], [2, 1]]), torch.tensor([2, 2, 2])
    for alpha in (0.0, 0.7, 1.0):
        got = ref.beam_search(model, src, lengths, beam_size=64, max_len=3, bos=1, eos=2, alpha=alpha)
        assert got == [_brute_force(model, f, 3, 2, alpha) for f in range(3)]
    ys, _ = ref.greedy_decode(model, src, lengths, max_len=3, bos=1, eos=2)
    greedy = [[t for t in row if t != 0] for row in ys.tolist()]
    assert ref.beam_search(model, src, lengths, beam_size=1, max_len=3, bos=1, eos=2) == greedy


def test_greedy_restores_the_mode_and_table_model_reads_the_shifted_row_in_training():
    model = TableModel(6, seed=1).train()
    src, lengths = torch.tensor([[2, 1, 1]]), torch.tensor([3])
    ys, w = ref.greedy_decode(model, src, lengths, max_len=4, bos=1, eos=2)
    assert model.training and w.shape == (1, ys.size(1) - 1, 3)
    state, enc_out, mask = torch.tensor([[2.0, -1.0]]), torch.zeros(1, 3, 2), torch.ones(1, 3).bool()
    logits, _, _ = model.decoder(torch.tensor([1]), state, enc_out, mask)
    check_close(logits[0], model.table[2, 2])  # training mode: row y_prev + 1
    assert int(ys[0, 1]) == int(model.table[2, 1].argmax())  # decoding ran in eval mode
    check_close(torch.tensor(model.log_prob(2, [1, 3])), F.log_softmax(model.table[2, 1].double(), -1)[3].float())
