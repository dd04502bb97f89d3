# mutant: ignore_index=0 hard-coded instead of the pad_id argument
# fails: grade_loss
# hint: padding id 0|instead of pad_id|pad_id argument
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]  # (B, T-1) each
    logits = model(batch.src, tgt_in)  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                           ignore_index=0, label_smoothing=label_smoothing)
