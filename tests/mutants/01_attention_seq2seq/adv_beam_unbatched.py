# mutant: loops sentence by sentence (B calls with K rows each) instead of B * K rows per call
# fails: grade_beam
# hint: batch|rows|B \* K|B\*K|at once
# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    """Beam search, one sentence at a time."""
    return [_beam_one(model, src[b:b + 1], src_len[b:b + 1], beam_size, max_len, bos, eos, alpha)
            for b in range(src.size(0))]


@torch.no_grad()
def _beam_one(model, src, src_len, beam_size, max_len, bos, eos, alpha):
    was_training = model.training
    model.eval()
    try:
        K = beam_size
        dev = src.device
        enc_out, s, mask = model.encode(src, src_len)
        enc_out, s, mask = (t.repeat_interleave(K, dim=0) for t in (enc_out, s, mask))
        scores = torch.full((K,), float("-inf"), device=dev)
        scores[0] = 0.0
        tokens = torch.full((K, 1), bos, dtype=torch.long, device=dev)
        finished = []
        for step in range(1, max_len + 1):
            logits, s, _ = model.decoder(tokens[:, -1], s, enc_out, mask)
            logp = torch.log_softmax(logits.float(), dim=-1)
            V = logp.size(-1)
            top, idx = (scores[:, None] + logp).reshape(-1).topk(K)
            parent, tok = idx // V, idx % V
            tokens = torch.cat([tokens[parent], tok[:, None]], dim=1)
            s = s[parent]
            for k in range(K):
                if tok[k] == eos and top[k] > float("-inf"):
                    finished.append((top[k].item() / step ** alpha, tokens[k].tolist()))
            scores = top.masked_fill(tok == eos, float("-inf"))
            if bool(torch.isinf(scores).all()):
                break
        for k in range(K):
            if scores[k] > float("-inf"):
                finished.append((scores[k].item() / max_len ** alpha, tokens[k].tolist()))
        return max(finished, key=lambda h: h[0])[1]
    finally:
        model.train(was_training)
