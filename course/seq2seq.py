"""Reference RNN encoder-decoder with Bahdanau attention: one home for the answers of assignment 01
(used by its grade cells and hidden checks; the class's copy of ``course`` holds them only once 01 is
closed, see ``autograder/classroom.py``).

Layouts: ``B`` batch, ``S`` source tokens, ``T`` target tokens, ``V`` vocabulary, ``H`` encoder GRU
width per direction, ``E = 2H`` encoder output width, ``D`` decoder state width, ``A`` attention
width. A boolean mask is True at a **real token** (a position the decoder may attend to).

The decoder is stepped one token at a time: ``decoder(y_prev, s_prev, enc_out, src_mask)`` returns
``(logits [B, V], s [B, D], weights [B, S] or None)``. :class:`Seq2Seq` and the decoding functions
use only ``model.encode``, ``model.decoder`` and ``model.pad_id``, so any model with that interface
(e.g. ``course.testing.TableModel``) can be decoded.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = [
    "dot_score", "scaled_dot_score", "general_score", "additive_score", "masked_softmax",
    "AdditiveAttention", "Encoder", "AttentionDecoder", "fixed_context", "FixedContext", "PlainDecoder",
    "Seq2Seq", "greedy_decode", "beam_search",
]


# ---------------------------------------------------------------------------------------------------
# scores: one query (the decoder state s_{i-1}) against the S encoder states


def dot_score(query: Tensor, keys: Tensor) -> Tensor:
    """``q . k_j``: query ``[B, d]``, keys ``[B, S, d]`` -> ``[B, S]``."""
    return (keys @ query.unsqueeze(-1)).squeeze(-1)


def scaled_dot_score(query: Tensor, keys: Tensor) -> Tensor:
    """``q . k_j / sqrt(d)``: query ``[B, d]``, keys ``[B, S, d]`` -> ``[B, S]``."""
    return dot_score(query, keys) / math.sqrt(query.size(-1))


def general_score(query: Tensor, keys: Tensor, W: Tensor) -> Tensor:
    """``q^T W k_j`` (Luong's "general"): query ``[B, d_q]``, keys ``[B, S, d_k]``, W ``[d_q, d_k]`` -> ``[B, S]``."""
    return dot_score(query @ W, keys)


def additive_score(query: Tensor, keys: Tensor, W: Tensor, U: Tensor, v: Tensor) -> Tensor:
    """``v^T tanh(W q + U k_j)`` (Bahdanau): W ``[A, d_q]``, U ``[A, d_k]``, v ``[A]`` -> ``[B, S]``."""
    return torch.tanh((query @ W.T).unsqueeze(-2) + keys @ U.T) @ v  # (B, 1, A) + (B, S, A) -> (B, S)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim among the entries where ``mask`` (broadcastable) is True; exactly 0
    elsewhere; a row without any allowed entry is all zeros (no NaN in the values or the gradient)."""
    mask = mask.expand_as(scores)
    w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return w.masked_fill(~mask, 0.0)  # fully masked rows: NaN -> 0 (the gradient there is 0 too)


# ---------------------------------------------------------------------------------------------------
# modules


class AdditiveAttention(nn.Module):
    """Bahdanau's attention: ``a = masked_softmax(v^T tanh(W s + U h_j))``, context ``c = sum_j a_j h_j``."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query ``[B, D]``, keys ``[B, S, E]``, mask ``[B, S]`` -> context ``[B, E]``, weights ``[B, S]``."""
        scores = additive_score(query, keys, self.W.weight, self.U.weight, self.v.weight[0])  # (B, S)
        weights = masked_softmax(scores, mask)
        return (weights.unsqueeze(1) @ keys).squeeze(1), weights  # (B, 1, S) @ (B, S, E) -> (B, E)


class Encoder(nn.Module):
    """Bidirectional GRU over packed padded sequences; ``hidden = tanh(fc([fwd_{len-1}; bwd_0]))`` is ``s_0``."""

    def __init__(self, vocab_size: int, emb_dim: int, hid_dim: int, dec_hid_dim: int, dropout: float = 0.0,
                 pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(emb_dim, hid_dim, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hid_dim, dec_hid_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor]:
        """src ``[B, S]``, src_len ``[B]`` -> outputs ``[B, S, 2H]`` (0 at padding), hidden ``[B, D]``."""
        emb = self.dropout(self.embedding(src))  # (B, S, emb)
        packed = pack_padded_sequence(emb, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)  # h: (2, B, H), [forward final, backward final]
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, 2H)
        return out, torch.tanh(self.fc(torch.cat([h[0], h[1]], dim=-1)))


class AttentionDecoder(nn.Module):
    """One step: ``s_i = GRU([e_i; c_i], s_{i-1})``, ``logits = out([s_i; c_i; e_i])``, ``c_i`` from ``s_{i-1}``."""

    def __init__(self, vocab_size: int, emb_dim: int, enc_dim: int, dec_hid_dim: int, attn_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.attention: nn.Module = AdditiveAttention(dec_hid_dim, enc_dim, attn_dim)
        self.rnn = nn.GRUCell(emb_dim + enc_dim, dec_hid_dim)
        self.out = nn.Linear(dec_hid_dim + enc_dim + emb_dim, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y_prev: Tensor, s_prev: Tensor, enc_out: Tensor,
                src_mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """y_prev ``[B]``, s_prev ``[B, D]``, enc_out ``[B, S, E]``, src_mask ``[B, S]`` ->
        logits ``[B, V]``, s ``[B, D]``, weights ``[B, S]`` (None without attention)."""
        e = self.dropout(self.embedding(y_prev))  # (B, emb)
        c, a = self.attention(s_prev, enc_out, src_mask)  # (B, E), (B, S)
        s = self.rnn(torch.cat([e, c], dim=-1), s_prev)  # (B, D)
        return self.out(torch.cat([s, c, e], dim=-1)), s, a


def fixed_context(enc_out: Tensor, src_mask: Tensor) -> Tensor:
    """The baseline's thought vector ``[B, E]``: the forward half at the last real token, the backward
    half at position 0."""
    H = enc_out.size(-1) // 2
    last = src_mask.long().sum(-1).clamp(min=1) - 1  # (B,)
    fwd = enc_out[torch.arange(enc_out.size(0), device=enc_out.device), last, :H]  # (B, H)
    return torch.cat([fwd, enc_out[:, 0, H:]], dim=-1)


class FixedContext(nn.Module):
    """Stands in for the attention of :class:`AttentionDecoder`: the same context at every step, no weights."""

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, None]:
        return fixed_context(keys, mask), None


class PlainDecoder(AttentionDecoder):
    """The no-attention baseline (Cho et al. 2014's RNN encoder-decoder): a fixed context at every step."""

    def __init__(self, vocab_size: int, emb_dim: int, enc_dim: int, dec_hid_dim: int, dropout: float = 0.0):
        super().__init__(vocab_size, emb_dim, enc_dim, dec_hid_dim, attn_dim=1, dropout=dropout)
        self.attention = FixedContext()


class Seq2Seq(nn.Module):
    """Encoder + step decoder, trained with teacher forcing."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, pad_id: int = 0):
        super().__init__()
        self.encoder, self.decoder, self.pad_id = encoder, decoder, pad_id

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> enc_out ``[B, S, E]``, s_0 ``[B, D]``, src_mask ``[B, S]`` (True at real tokens)."""
        enc_out, s0 = self.encoder(src, src_len)
        return enc_out, s0, src != self.pad_id

    def forward(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor | None]:
        """Step t feeds ``tgt[:, t]`` and predicts ``tgt[:, t+1]`` -> logits ``[B, T-1, V]``, weights
        ``[B, T-1, S]`` (None for a decoder without attention)."""
        enc_out, s, mask = self.encode(src, src_len)
        logits, weights = [], []
        for t in range(tgt.size(1) - 1):
            step_logits, s, a = self.decoder(tgt[:, t], s, enc_out, mask)
            logits.append(step_logits)
            weights.append(a)
        stacked = None if any(a is None for a in weights) or not weights else torch.stack(weights, 1)
        return torch.stack(logits, 1), stacked


# ---------------------------------------------------------------------------------------------------
# decoding


@torch.no_grad()
def greedy_decode(model: nn.Module, src: Tensor, src_len: Tensor, max_len: int, bos: int,
                  eos: int) -> tuple[Tensor, Tensor | None]:
    """Batched greedy decoding -> ys ``[B, L]`` (bos first, pad after eos, ``L <= max_len + 1``), weights
    ``[B, L-1, S]`` or None. Eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        enc_out, s, mask = model.encode(src, src_len)
        B = src.size(0)
        ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        weights = []
        for _ in range(max_len):
            logits, s, a = model.decoder(ys[:, -1], s, enc_out, mask)
            nxt = logits.argmax(-1).masked_fill(done, model.pad_id)  # (B,)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            weights.append(a)
            done |= nxt == eos
            if bool(done.all()):
                break
        stacked = None if any(a is None for a in weights) else torch.stack(weights, 1)
        return ys, stacked
    finally:
        model.train(was_training)


@torch.no_grad()
def beam_search(model: nn.Module, src: Tensor, src_len: Tensor, beam_size: int, max_len: int, bos: int, eos: int,
                alpha: float = 1.0) -> list[list[int]]:
    """Batched beam search -> per sentence ``[bos, y_1, ..., y_n]`` maximising ``log p(y | x) / n**alpha``
    over the hypotheses found (``y_n = eos`` or ``n = max_len``); a finished hypothesis is never extended."""
    was_training = model.training
    model.eval()
    try:
        enc_out, s, mask = model.encode(src, src_len)
        B, K = src.size(0), beam_size
        rep = lambda t: t.repeat_interleave(K, dim=0)  # noqa: E731  (B, ...) -> (B*K, ...)
        enc_out, s, mask = rep(enc_out), rep(s), rep(mask)
        tokens = [[[bos]] * K for _ in range(B)]  # live hypotheses per sentence
        logp = torch.full((B, K), float("-inf"), device=src.device)
        logp[:, 0] = 0.0  # one live hypothesis at the start (the K copies are identical)
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
        for n in range(1, max_len + 1):
            y_prev = torch.tensor([h[-1] for hyps in tokens for h in hyps], device=src.device)
            logits, s, _ = model.decoder(y_prev, s, enc_out, mask)
            cand = logp.reshape(B * K, 1) + F.log_softmax(logits.float(), dim=-1)  # (B*K, V)
            V = cand.size(-1)
            top, idx = cand.reshape(B, K * V).topk(K, dim=-1)  # (B, K)
            beam, tok = idx // V, idx % V
            new_tokens, new_logp = [], torch.full_like(logp, float("-inf"))
            for b in range(B):
                hyps = []
                for j in range(K):
                    score, k, y = float(top[b, j]), int(beam[b, j]), int(tok[b, j])
                    if score == float("-inf"):
                        hyps.append([bos])
                        continue
                    h = tokens[b][k] + [y]
                    if y == eos or n == max_len:
                        finished[b].append((score / n ** alpha, h))
                    else:
                        new_logp[b, j] = score
                    hyps.append(h)
                new_tokens.append(hyps)
            s = s[(beam + torch.arange(B, device=src.device)[:, None] * K).reshape(-1)]  # follow the parents
            tokens, logp = new_tokens, new_logp
            if bool(torch.isinf(logp).all()):
                break
        return [max(f, key=lambda x: x[0])[1] for f in finished]
    finally:
        model.train(was_training)
