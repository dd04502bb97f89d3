# mutant: label smoothing by hand spreading eps over the V - 1 wrong tokens (target gets exactly 1 - eps), not eps / V over all
# fails: grade_loss
# hint: smooth|eps|/ ?V
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]
    logits = model(batch.src, tgt_in)
    V = logits.size(-1)
    keep = tgt_out != pad_id
    logp = logits.log_softmax(-1)[keep]            # (N, V)
    target = tgt_out[keep]                          # (N,)
    q = torch.full_like(logp, label_smoothing / (V - 1))
    q.scatter_(1, target[:, None], 1.0 - label_smoothing)
    return -(q * logp).sum(-1).mean()
