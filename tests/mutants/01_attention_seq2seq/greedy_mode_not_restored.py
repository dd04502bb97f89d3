# mutant: leaves the model in eval mode
# fails: grade_greedy
# hint: mode|restore
# %% greedy
@torch.no_grad()
def greedy_decode(model, src, src_len, max_len, bos, eos):
    """Batched greedy decoding with model.encode and model.decoder, one step at a time.

    Args:
        model: has encode(src, src_len) -> (enc_out, s_0, src_mask), decoder(y_prev, s, enc_out, src_mask)
            -> (logits [B, V], s, weights [B, S] or None), and pad_id.
        src: LongTensor[B, S]; src_len: LongTensor[B].
        max_len: the maximum number of tokens generated after BOS.
        bos, eos: the special token ids.

    Returns:
        ys: LongTensor[B, L], L <= max_len + 1: BOS, the generated tokens up to and including EOS, then pad_id.
        weights: Tensor[B, L-1, S], the attention weights of each step, or None.
    """
    was_training = model.training
    model.eval()
    enc_out, s, src_mask = model.encode(src, src_len)
    B = src.size(0)
    ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    weights = []
    for _ in range(max_len):
        logits, s, w = model.decoder(ys[:, -1], s, enc_out, src_mask)  # (B, V), state, (B, S) or None
        next_token = logits.argmax(dim=-1).masked_fill(finished, model.pad_id)  # (B,)
        ys = torch.cat([ys, next_token[:, None]], dim=1)  # (B, t + 1)
        weights.append(w)
        finished |= next_token == eos
        if finished.all():
            break
    weights = None if not weights or weights[0] is None else torch.stack(weights, dim=1)  # (B, L-1, S)
    return ys, weights
