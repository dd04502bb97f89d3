# mutant: the decoder state detached between steps: no gradient through time
# fails: grade_seq2seq
# hint: gradient|detach
# %% seq2seq
class Seq2Seq(nn.Module):
    """Encoder + one-step decoder, trained with teacher forcing. Decoding (parts 8 and 9) uses encode, decoder
    and pad_id only."""

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
        """
        Args:
            src: LongTensor[B, S]; src_len: LongTensor[B]; tgt: LongTensor[B, T] (BOS ... EOS, then PAD).

        Returns:
            logits: Tensor[B, T-1, V], logits[:, t] predicts tgt[:, t + 1] from tgt[:, :t + 1].
            weights: Tensor[B, T-1, S], the attention weights of each step (None for a decoder without attention).
        """
        enc_out, s, src_mask = self.encode(src, src_len)
        logits, weights = [], []
        for t in range(tgt.size(1) - 1):
            step_logits, s, w = self.decoder(tgt[:, t], s.detach(), enc_out, src_mask)  # (B, V), (B, D), (B, S) or None
            logits.append(step_logits)
            weights.append(w)
        logits = torch.stack(logits, dim=1)  # (B, T-1, V)
        weights = None if weights[0] is None else torch.stack(weights, dim=1)  # (B, T-1, S)
        return logits, weights
