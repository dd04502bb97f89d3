# mutant: the output layer gets the embedding before dropout
# fails: grade_decoder
# hint: dropout|e_i|embedding
# %% decoder
class AttentionDecoder(nn.Module):
    """One step of Bahdanau's decoder: attend with s_{i-1}, s_i = GRU([e_i ; c_i], s_{i-1}), predict y_i."""

    def __init__(self, vocab_size, emb_dim, enc_dim, dec_hid_dim, attn_dim, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim)
        self.attention = AdditiveAttention(dec_hid_dim, enc_dim, attn_dim)
        self.rnn = nn.GRUCell(emb_dim + enc_dim, dec_hid_dim)
        self.out = nn.Linear(dec_hid_dim + enc_dim + emb_dim, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y_prev, s_prev, enc_out, src_mask):
        raw = self.embedding(y_prev)
        e = self.dropout(raw)
        context, weights = self.attention(s_prev, enc_out, src_mask)
        s = self.rnn(torch.cat([e, context], dim=-1), s_prev)
        logits = self.out(torch.cat([s, context, raw], dim=-1))
        return logits, s, weights
