# mutant: no dropout on the embedded previous token
# fails: grade_decoder
# hint: dropout
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
        """
        Args:
            y_prev: LongTensor[B], the previous target token y_{i-1}.
            s_prev: Tensor[B, D], the previous decoder state s_{i-1}.
            enc_out: Tensor[B, S, E], the encoder's annotations.
            src_mask: BoolTensor[B, S], True at real source tokens.

        Returns:
            logits: Tensor[B, V], the scores of y_i.
            s: Tensor[B, D], the new state s_i.
            weights: Tensor[B, S], the attention weights of this step (None when self.attention gives None).
        """
        e = self.embedding(y_prev)  # (B, emb)
        context, weights = self.attention(s_prev, enc_out, src_mask)  # (B, E), (B, S) or None
        s = self.rnn(torch.cat([e, context], dim=-1), s_prev)  # (B, emb + E) -> (B, D)
        logits = self.out(torch.cat([s, context, e], dim=-1))  # (B, D + E + emb) -> (B, V)
        return logits, s, weights
