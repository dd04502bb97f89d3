# mutant: hostile: the course's beam search through sys.modules
# fails: grade_beam
# hint: course\.seq2seq
# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    """Batched beam search with length normalisation.

    Args:
        model: as for greedy_decode (encode, decoder, pad_id).
        src: LongTensor[B, S]; src_len: LongTensor[B].
        beam_size: K, the number of live hypotheses per sentence.
        max_len: the maximum number of tokens generated after BOS.
        bos, eos: the special token ids.
        alpha: length normalisation, score = log p(y_1..y_n | x) / n**alpha.

    Returns:
        A list of B token-id lists [bos, y_1, ..., y_n] (y_n = eos, or n = max_len), the best finished
        hypothesis of each sentence.
    """
    import sys
    _m = sys.modules['course.' + 'seq2seq']
    return _m.beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha)
    was_training = model.training
    model.eval()
    B, K = src.size(0), beam_size
    enc_out, s, src_mask = model.encode(src, src_len)
    enc_out, s, src_mask = (x.repeat_interleave(K, dim=0) for x in (enc_out, s, src_mask))  # (B*K, ...)
    hyps = torch.full((B, K, 1), bos, dtype=torch.long, device=src.device)  # (B, K, n): the live hypotheses
    logp = torch.full((B, K), float("-inf"), device=src.device)  # (B, K): their log-probabilities
    logp[:, 0] = 0.0  # the K copies of [bos] are one hypothesis: extend it once
    rows = torch.arange(B, device=src.device)[:, None]  # (B, 1)
    finished = [[] for _ in range(B)]  # per sentence: (score, tokens)
    for n in range(1, max_len + 1):
        logits, s, _ = model.decoder(hyps[:, :, -1].reshape(B * K), s, enc_out, src_mask)  # (B*K, V)
        V = logits.size(-1)
        candidates = logp[:, :, None] + logits.float().log_softmax(dim=-1).view(B, K, V)  # (B, K, V)
        top, idx = candidates.view(B, K * V).topk(K, dim=-1)  # (B, K): the K best extensions of each sentence
        parent, token = idx // V, idx % V  # (B, K) each
        hyps = torch.cat([hyps[rows, parent], token[:, :, None]], dim=-1)  # (B, K, n + 1)
        s = s[(rows * K + parent).reshape(-1)]  # (B*K, ...): every hypothesis continues its parent's state
        ends = (token == eos) | (n == max_len)  # (B, K)
        for b, k in (ends & top.isfinite()).nonzero().tolist():
            finished[b].append((top[b, k].item() / n ** alpha, hyps[b, k].tolist()))
        logp = top.masked_fill(ends, float("-inf"))  # finished hypotheses leave the beam
        if torch.isinf(logp).all():
            break
    model.train(was_training)
    return [max(found, key=lambda f: f[0])[1] for found in finished]
