# mutant: runs the GRU on each sentence's real tokens alone (no packing, a loop over the batch)
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
        outputs = embedded.new_zeros(src.size(0), S, 2 * self.rnn.hidden_size)
        finals = []
        for b, n in enumerate(src_len.tolist()):
            out_b, h_b = self.rnn(embedded[b:b + 1, :n])
            outputs[b, :n] = out_b[0]
            finals.append(h_b[:, 0])
        h_n = torch.stack(finals, dim=1)
        hidden = torch.tanh(self.fc(torch.cat([h_n[0], h_n[1]], dim=-1)))
        return outputs, hidden
