# mutant: the loss with an nn.CrossEntropyLoss module on flattened logits
# fails: none
# %% loss
def translation_loss(model, batch, pad_id=0, label_smoothing=0.1):
    """Teacher-forcing loss of `model` on a TranslationBatch (src [B, S], tgt [B, T]): a scalar tensor."""
    tgt_in, tgt_out = batch.tgt[:, :-1], batch.tgt[:, 1:]  # (B, T-1) each
    logits = model(batch.src, tgt_in)  # (B, T-1, V)
    criterion = nn.CrossEntropyLoss(ignore_index=pad_id, label_smoothing=label_smoothing)
    return criterion(logits.flatten(0, 1), tgt_out.flatten())
