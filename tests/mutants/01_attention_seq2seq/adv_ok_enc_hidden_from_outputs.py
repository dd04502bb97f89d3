# mutant: s_0 from the outputs: forward half at each sentence's last real token, backward at 0
# fails: none
# %% encoder
class Encoder(nn.Module):
    """Bidirectional GRU encoder: token ids -> annotations h_j = [fwd_j ; bwd_j] and the decoder's s_0."""

    def __init__(self, vocab_size, emb_dim, hid_dim, dec_hid_dim, dropout=0.0, pad_id=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.rnn = nn.GRU(emb_dim, hid_dim, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hid_dim, dec_hid_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, src_len):
        S = src.size(1)
        embedded = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(embedded, src_len.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=S)
        H = self.rnn.hidden_size
        last = (src_len.to(src.device) - 1).long()
        fwd = outputs[torch.arange(src.size(0), device=src.device), last, :H]
        hidden = torch.tanh(self.fc(torch.cat([fwd, outputs[:, 0, H:]], dim=-1)))
        return outputs, hidden
