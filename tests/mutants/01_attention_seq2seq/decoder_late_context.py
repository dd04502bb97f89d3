# mutant: attention queried with the new state s_i (Luong order) and the GRU fed the old context
# fails: grade_decoder
# hint: s_\{i-1\}|s_i|GRUCell
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
        e = self.dropout(self.embedding(y_prev))  # (B, emb)
        c0, _ = self.attention(s_prev, enc_out, src_mask)
        s = self.rnn(torch.cat([e, c0], dim=-1), s_prev)
        context, weights = self.attention(s, enc_out, src_mask)  # (B, emb + E) -> (B, D)
        logits = self.out(torch.cat([s, context, e], dim=-1))  # (B, D + E + emb) -> (B, V)
        return logits, s, weights
