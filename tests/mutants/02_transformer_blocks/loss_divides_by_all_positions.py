# mutant: sum of the token losses divided by every target position B*T (padding included), not by the real tokens
# fails: grade_loss
# hint: pad|token|mean|real
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]
    logits = model(batch.src, tgt_in)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=pad_id,
                            label_smoothing=label_smoothing, reduction="sum")
    return total / tgt_out.numel()
