# mutant: stops as soon as ANY sentence emits EOS (finished.any() instead of all())
# fails: grade_greedy
# hint: all|finished|EOS|sentence
# %% greedy
@torch.no_grad()
def greedy_decode(model, src, max_len, bos, eos, pad=0):
    """Batched greedy decoding."""
    was_training = model.training
    model.eval()
    memory = model.encode(src)
    B = src.size(0)
    ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(ys, memory, src)
        nxt = logits[:, -1].argmax(dim=-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        finished = finished | (nxt == eos)
        if finished.any():
            break
    model.train(was_training)
    return ys
