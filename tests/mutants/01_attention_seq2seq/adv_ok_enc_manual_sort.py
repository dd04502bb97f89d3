# mutant: sorts the batch by length, packs with enforce_sorted=True, unsorts
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
        lengths = src_len.detach().cpu()
        sorted_len, order = lengths.sort(descending=True)
        inverse = order.argsort()
        order_d, inverse_d = order.to(src.device), inverse.to(src.device)
        packed = pack_padded_sequence(embedded[order_d], sorted_len, batch_first=True, enforce_sorted=True)
        packed_out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=S)
        outputs, h_n = outputs[inverse_d], h_n[:, inverse_d]
        hidden = torch.tanh(self.fc(torch.cat([h_n[0], h_n[1]], dim=-1)))
        return outputs, hidden
