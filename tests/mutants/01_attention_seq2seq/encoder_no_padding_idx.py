# mutant: embedding without padding_idx
# fails: grade_encoder
# hint: padding_idx
# %% encoder
class Encoder(nn.Module):
    """Bidirectional GRU encoder: token ids -> annotations h_j = [fwd_j ; bwd_j] and the decoder's s_0."""

    def __init__(self, vocab_size, emb_dim, hid_dim, dec_hid_dim, dropout=0.0, pad_id=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.rnn = nn.GRU(emb_dim, hid_dim, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hid_dim, dec_hid_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, src_len):
        """
        Args:
            src: LongTensor[B, S], token ids padded with pad_id.
            src_len: LongTensor[B], the real lengths (on any device, in any order).

        Returns:
            outputs: Tensor[B, S, 2H], h_j = [fwd_j ; bwd_j], exactly 0 at padded positions.
            hidden: Tensor[B, D], s_0 = tanh(fc([fwd_{len-1} ; bwd_0])).
        """
        embedded = self.dropout(self.embedding(src))  # (B, S, emb)
        packed = pack_padded_sequence(embedded, src_len.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)  # h_n: (2, B, H) = [fwd at the last real token, bwd at position 0]
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))  # (B, S, 2H)
        hidden = torch.tanh(self.fc(torch.cat([h_n[0], h_n[1]], dim=-1)))  # (B, 2H) -> (B, D)
        return outputs, hidden
