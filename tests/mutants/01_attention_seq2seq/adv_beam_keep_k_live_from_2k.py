# mutant: keeps K live hypotheses from the top 2K candidates (fairseq style): the beam does not keep just the other candidates of the K best, as the notebook specifies
# fails: grade_beam
# hint: K best|live|finish|set aside|beam
# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    """Batched beam search: K live hypotheses refilled from the 2K best candidates."""
    was_training = model.training
    model.eval()
    try:
        K = beam_size
        B = src.size(0)
        dev = src.device
        enc_out, s, mask = model.encode(src, src_len)
        enc_out, s, mask = (t.repeat_interleave(K, dim=0) for t in (enc_out, s, mask))
        scores = torch.full((B, K), float("-inf"), device=dev)
        scores[:, 0] = 0.0
        tokens = torch.full((B * K, 1), bos, dtype=torch.long, device=dev)
        finished = [[] for _ in range(B)]
        for step in range(1, max_len + 1):
            logits, s, _ = model.decoder(tokens[:, -1], s, enc_out, mask)
            logp = torch.log_softmax(logits.float(), dim=-1)
            V = logp.size(-1)
            cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * V)
            top, idx = cand.topk(min(2 * K, K * V), dim=-1)
            new_scores = torch.full((B, K), float("-inf"), device=dev)
            rows = torch.zeros(B, K, dtype=torch.long, device=dev)
            toks = torch.full((B, K), bos, dtype=torch.long, device=dev)
            for b in range(B):
                k = 0
                for j in range(top.size(1)):
                    sc = top[b, j].item()
                    if sc == float("-inf"):
                        break
                    p, t = int(idx[b, j]) // V, int(idx[b, j]) % V
                    if t == eos:
                        finished[b].append((sc / step ** alpha, tokens[b * K + p].tolist() + [eos]))
                    elif k < K:
                        new_scores[b, k], rows[b, k], toks[b, k] = sc, b * K + p, t
                        k += 1
                    if k == K:
                        break
                for kk in range(k, K):
                    rows[b, kk] = b * K
            rows = rows.reshape(-1)
            tokens = torch.cat([tokens[rows], toks.reshape(-1, 1)], dim=1)
            s = s[rows]
            scores = new_scores
            if all(len(f) >= K for f in finished) or bool(torch.isinf(scores).all()):
                break
        for b in range(B):
            for k in range(K):
                if scores[b, k] > float("-inf") and step == max_len:
                    finished[b].append((scores[b, k].item() / max_len ** alpha, tokens[b * K + k].tolist()))
        return [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
    finally:
        model.train(was_training)
