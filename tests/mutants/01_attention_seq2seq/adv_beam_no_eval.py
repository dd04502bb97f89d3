# mutant: beam search without model.eval()
# fails: grade_beam
# hint: eval
# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    """Batched beam search with length normalisation."""
    was_training = model.training
    try:
        K = beam_size
        B = src.size(0)
        dev = src.device
        enc_out, s, mask = model.encode(src, src_len)
        enc_out = enc_out.repeat_interleave(K, dim=0)
        s = s.repeat_interleave(K, dim=0)
        mask = mask.repeat_interleave(K, dim=0)
        scores = torch.full((B, K), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # the K copies of [BOS]: only one is extended
        tokens = torch.full((B * K, 1), bos, dtype=torch.long, device=dev)
        finished = [[] for _ in range(B)]
        for step in range(1, max_len + 1):
            logits, s, _ = model.decoder(tokens[:, -1], s, enc_out, mask)
            logp = torch.log_softmax(logits.float(), dim=-1)
            V = logp.size(-1)
            cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * V)
            top, idx = cand.topk(K, dim=-1)
            parent, tok = idx // V, idx % V
            rows = (torch.arange(B, device=dev)[:, None] * K + parent).reshape(-1)
            tokens = torch.cat([tokens[rows], tok.reshape(-1, 1)], dim=1)
            s = s[rows]
            is_eos = tok == eos
            for b, k in is_eos.nonzero().tolist():
                if top[b, k] > float("-inf"):
                    finished[b].append((top[b, k].item() / step ** alpha, tokens[b * K + k].tolist()))
            scores = top.masked_fill(is_eos, float("-inf"))
            if bool(torch.isinf(scores).all()):
                break
        for b in range(B):  # still live at max_len: finished with n = max_len
            for k in range(K):
                if scores[b, k] > float("-inf"):
                    finished[b].append((scores[b, k].item() / max_len ** alpha, tokens[b * K + k].tolist()))
        return [max(hyps, key=lambda h: h[0])[1] for hyps in finished]
    finally:
        model.train(was_training)
