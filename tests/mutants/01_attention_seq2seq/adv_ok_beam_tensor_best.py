# mutant: batched beam that keeps the best finished hypothesis per sentence in tensors, no lists
# fails: none
# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    was_training = model.training
    model.eval()
    try:
        K, B, dev = beam_size, src.size(0), src.device
        enc_out, s, mask = model.encode(src, src_len)
        enc_out, s, mask = (x.repeat_interleave(K, dim=0) for x in (enc_out, s, mask))
        live = torch.full((B, K), float("-inf"), device=dev, dtype=torch.float64)
        live[:, 0] = 0
        hyps = torch.full((B, K, max_len + 1), model.pad_id, dtype=torch.long, device=dev)
        hyps[:, :, 0] = bos
        best_score = torch.full((B,), float("-inf"), device=dev, dtype=torch.float64)
        best_hyp = hyps[:, 0].clone()
        best_len = torch.ones(B, dtype=torch.long, device=dev)
        ar = torch.arange(B, device=dev)
        for t in range(1, max_len + 1):
            logits, s, _ = model.decoder(hyps[:, :, t - 1].reshape(-1), s, enc_out, mask)
            logp = logits.double().log_softmax(-1)
            V = logp.size(-1)
            top, idx = (live.reshape(-1, 1) + logp).reshape(B, K * V).topk(K, dim=-1)
            parent, tok = idx.div(V, rounding_mode="floor"), idx.remainder(V)
            hyps = hyps[ar[:, None], parent]
            hyps[:, :, t] = tok
            s = s[(ar[:, None] * K + parent).reshape(-1)]
            ends = (tok == eos) & torch.isfinite(top)
            if t == max_len:
                ends = torch.isfinite(top)
            norm = torch.where(ends, top / t ** alpha, torch.full_like(top, float("-inf")))
            cand_score, cand_k = norm.max(-1)
            better = cand_score > best_score
            best_score = torch.where(better, cand_score, best_score)
            best_hyp[better] = hyps[ar, cand_k][better]
            best_len[better] = t + 1
            live = top.masked_fill(tok == eos, float("-inf"))
            if bool(torch.isinf(live).all()):
                break
        return [best_hyp[b, : best_len[b]].tolist() for b in range(B)]
    finally:
        model.train(was_training)
