# mutant: tokens kept in a python list of [B] tensors stacked at each step, try/finally restores the mode
# fails: none
# %% greedy
@torch.no_grad()
def greedy_decode(model, src, max_len, bos, eos, pad=0):
    """Batched greedy decoding."""
    mode = model.training
    model.train(False)
    try:
        memory = model.encode(src)
        B = src.shape[0]
        tokens = [torch.full((B,), bos, dtype=torch.long, device=src.device)]
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            if bool(done.all()):
                break
            prefix = torch.stack(tokens, dim=1)
            next_tok = model.decode(prefix, memory, src)[:, -1, :].argmax(dim=-1)
            next_tok = next_tok.masked_fill(done, pad)
            tokens.append(next_tok)
            done = done | next_tok.eq(eos)
        return torch.stack(tokens, dim=1)
    finally:
        model.train(mode)
