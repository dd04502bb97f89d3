# mutant: greedy decoding without model.eval(): dropout stays active while generating
# fails: grade_greedy
# hint: eval|training mode|dropout
# %% greedy
@torch.no_grad()
def greedy_decode(model, src, max_len, bos, eos, pad=0):
    """Batched greedy decoding.

    Args:
        model: has encode(src) -> memory and decode(tgt, memory, src) -> logits [B, t, V].
        src: LongTensor[B, S] source ids (padded with pad).
        max_len: maximum number of tokens generated after BOS.
        bos, eos, pad: special token ids.

    Returns:
        LongTensor[B, L], L <= max_len + 1: BOS, the generated tokens up to and including EOS, then pad.
        The model runs in eval mode and is left in the mode it was in.
    """
    B = src.size(0)
    memory = model.encode(src)
    ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(ys, memory, src)  # (B, t, V)
        next_token = logits[:, -1].argmax(dim=-1)  # (B,)
        next_token = next_token.masked_fill(finished, pad)
        ys = torch.cat([ys, next_token[:, None]], dim=1)
        finished |= next_token == eos
        if finished.all():
            break
    return ys
