# mutant: greedy without model.eval() (dropout while generating)
# fails: grade_greedy
# hint: eval
# %% greedy
@torch.no_grad()
def greedy_decode(model, src, src_len, max_len, bos, eos):
    """Batched greedy decoding with model.encode and model.decoder, one step at a time."""
    was_training = model.training
    try:
        enc_out, s, mask = model.encode(src, src_len)
        B = src.size(0)
        ys = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
        finished = torch.zeros(B, dtype=torch.bool, device=src.device)
        all_weights = []
        y = ys[:, 0]
        for _ in range(max_len):
            logits, s, w = model.decoder(y, s, enc_out, mask)
            y = logits.argmax(-1)
            y = y.masked_fill(finished, model.pad_id)
            ys = torch.cat([ys, y[:, None]], dim=1)
            all_weights.append(w)
            finished = finished | (y == eos)
            if bool(finished.all()):
                break
        weights = None if not all_weights or all_weights[0] is None else torch.stack(all_weights, dim=1)
    finally:
        model.train(was_training)
    return ys, weights
