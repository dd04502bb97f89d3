# mutant: greedy with Python lists of tokens and a preallocated ys
# fails: none
# %% greedy
@torch.no_grad()
def greedy_decode(model, src, src_len, max_len, bos, eos):
    mode = model.training
    model.train(False)
    enc_out, s, mask = model.encode(src, src_len)
    B = src.size(0)
    rows = [[bos] for _ in range(B)]
    done = [False] * B
    ws = []
    y = torch.tensor([bos] * B, device=src.device)
    for _ in range(max_len):
        logits, s, w = model.decoder(y, s, enc_out, mask)
        ws.append(w)
        best = logits.argmax(dim=1).tolist()
        for b in range(B):
            rows[b].append(model.pad_id if done[b] else best[b])
            done[b] = done[b] or best[b] == eos
        y = torch.tensor([r[-1] for r in rows], device=src.device)
        if all(done):
            break
    model.train(mode)
    ys = torch.tensor(rows, dtype=torch.long, device=src.device)
    return ys, (None if ws[0] is None else torch.stack(ws, 1))
