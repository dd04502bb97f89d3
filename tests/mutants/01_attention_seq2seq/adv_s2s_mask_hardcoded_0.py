# mutant: forward builds its own src_mask from src != 0 instead of pad_id
# fails: grade_seq2seq
# hint: pad_id|mask|pad
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
        enc_out, s = self.encoder(src, src_len)
        mask = src != 0
        all_logits, all_weights = [], []
        for t in range(tgt.size(1) - 1):
            logits, s, weights = self.decoder(tgt[:, t], s, enc_out, mask)
            all_logits.append(logits)
            all_weights.append(weights)
        logits = torch.stack(all_logits, dim=1)
        weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
        return logits, weights
