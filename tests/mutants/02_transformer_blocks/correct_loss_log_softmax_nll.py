# mutant: log_softmax + nll_loss, label smoothing by hand as (1 - eps) * nll + eps * mean_v(-log p), masked token mean
# fails: none
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]
    logits = model(batch.src, tgt_in)
    logp = F.log_softmax(logits.float(), dim=-1).flatten(0, 1)   # (B*T, V)
    target = tgt_out.flatten()
    nll = F.nll_loss(logp, target, ignore_index=pad_id, reduction="none")
    smooth = -logp.mean(dim=-1)
    keep = (target != pad_id).to(logp.dtype)
    per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return (per_token * keep).sum() / keep.sum()
