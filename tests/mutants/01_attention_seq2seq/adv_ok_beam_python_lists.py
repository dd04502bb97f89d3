# mutant: batched beam (B*K rows per call) keeping hypotheses as Python lists
# fails: none
# %% beam
@torch.no_grad()
def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    was_training = model.training
    model.eval()
    K, B, dev = beam_size, src.size(0), src.device
    enc_out, s, mask = model.encode(src, src_len)
    enc_out, s, mask = enc_out.repeat_interleave(K, 0), s.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)
    NEG = float("-inf")
    # beams[b][k] = (log p, tokens); row b*K+k of the decoder input
    beams = [[(0.0 if k == 0 else NEG, [bos]) for k in range(K)] for _ in range(B)]
    done = [[] for _ in range(B)]
    for step in range(1, max_len + 1):
        y = torch.tensor([beams[b][k][1][-1] for b in range(B) for k in range(K)], device=dev)
        logits, s, _ = model.decoder(y, s, enc_out, mask)
        logp = torch.log_softmax(logits.double(), -1)
        V = logp.size(-1)
        base = torch.tensor([beams[b][k][0] for b in range(B) for k in range(K)], dtype=torch.float64, device=dev)
        cand = (base[:, None] + logp).view(B, K * V)
        top, idx = cand.topk(K, -1)
        top, idx = top.tolist(), idx.tolist()
        new_beams, rows = [], []
        for b in range(B):
            nb = []
            for sc, i in zip(top[b], idx[b]):
                parent, tok = divmod(i, V)
                hyp = beams[b][parent][1] + [tok]
                rows.append(b * K + parent)
                if sc == NEG:
                    nb.append((NEG, hyp))
                elif tok == eos:
                    done[b].append((sc / step ** alpha, hyp))
                    nb.append((NEG, hyp))
                else:
                    nb.append((sc, hyp))
            new_beams.append(nb)
        beams = new_beams
        s = s[torch.tensor(rows, device=dev)]
        if all(sc == NEG for nb in beams for sc, _ in nb):
            break
    for b in range(B):
        for sc, hyp in beams[b]:
            if sc != NEG:
                done[b].append((sc / max_len ** alpha, hyp))
    model.train(was_training)
    return [max(d, key=lambda x: x[0])[1] for d in done]
