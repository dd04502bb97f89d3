# mutant: mean over the real tokens of each sentence, then mean over sentences (short sentences weigh more)
# fails: grade_loss
# hint: token|mean|average|N\b
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]
    logits = model(batch.src, tgt_in)
    B, T, V = logits.shape
    per_tok = F.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=pad_id,
                              label_smoothing=label_smoothing, reduction="none").view(B, T)
    keep = (tgt_out != pad_id).float()
    per_sentence = (per_tok * keep).sum(1) / keep.sum(1).clamp(min=1)
    return per_sentence.mean()
