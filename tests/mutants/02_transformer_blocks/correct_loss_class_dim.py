# mutant: F.cross_entropy on (B, V, T-1) logits (classes on dim 1) instead of flattening
# fails: none
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]  # (B, T-1) each
    logits = model(batch.src, tgt_in)  # (B, T-1, V)
    return F.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=pad_id, label_smoothing=label_smoothing)
