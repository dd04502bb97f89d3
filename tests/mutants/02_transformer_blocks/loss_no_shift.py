# mutant: no teacher-forcing shift: the model reads tgt and is trained to predict tgt itself
# fails: grade_loss
# hint: teacher forcing|tgt\[:, :-1\]|tgt\[:, 1:\]|shift
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt, batch.tgt
    logits = model(batch.src, tgt_in)  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                           ignore_index=pad_id, label_smoothing=label_smoothing)
