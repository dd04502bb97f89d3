# mutant: Seq2Seq filling preallocated logits/weights tensors
# fails: none
# %% seq2seq
class Seq2Seq(nn.Module):
    """Encoder + one-step decoder, trained with teacher forcing."""

    def __init__(self, encoder, decoder, pad_id=0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.pad_id = pad_id

    def encode(self, src, src_len):
        """-> enc_out Tensor[B, S, E], s_0 Tensor[B, D], src_mask BoolTensor[B, S] (True at real tokens)."""
        enc_out, s0 = self.encoder(src, src_len)
        return enc_out, s0, src != self.pad_id

    def forward(self, src, src_len, tgt):
        enc_out, s, mask = self.encode(src, src_len)
        B, T = tgt.shape
        logits = weights = None
        for t in range(T - 1):
            step_logits, s, w = self.decoder(tgt[:, t], s, enc_out, mask)
            if logits is None:
                logits = step_logits.new_zeros(B, T - 1, step_logits.size(-1))
                if w is not None:
                    weights = w.new_zeros(B, T - 1, w.size(-1))
            logits[:, t] = step_logits
            if w is not None:
                weights[:, t] = w
        return logits, weights
