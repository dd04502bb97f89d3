# mutant: label_smoothing argument not passed on to F.cross_entropy
# fails: grade_loss
# hint: without label smoothing|pass label_smoothing|smoothing (is )?ignored
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]  # (B, T-1) each
    logits = model(batch.src, tgt_in)  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                           ignore_index=pad_id)
