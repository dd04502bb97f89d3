# mutant: no packing: the GRU runs over the padding (outputs zeroed at padding afterwards)
# fails: grade_encoder
# hint: pack|padd|alone|backward
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
        outputs, h_n = self.rnn(embedded)
        real = torch.arange(S, device=src.device)[None, :] < src_len.to(src.device)[:, None]
        outputs = outputs * real[..., None]
        hidden = torch.tanh(self.fc(torch.cat([h_n[0], h_n[1]], dim=-1)))
        return outputs, hidden
