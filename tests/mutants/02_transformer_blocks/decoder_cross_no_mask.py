# mutant: cross-attention ignores memory_mask (the source padding is attended to)
# fails: grade_decoder_block
# hint: memory_mask|padding|cross
# %% decoder_block
class DecoderBlock(nn.Module):
    """Transformer decoder block: causal self-attention, cross-attention, FFN; post-norm or pre-norm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.cross_attn_weights = None

    def _ca_block(self, x, memory, mask):
        out, w = self.cross_attn(x, memory, memory, need_weights=True)
        self.cross_attn_weights = w.detach()
        return self.dropout2(out)

    def _sa_block(self, x, mask):
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask)
            x = x + self._ca_block(self.norm2(x), memory, memory_mask)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask))
            x = self.norm2(x + self._ca_block(x, memory, memory_mask))
            x = self.norm3(x + self._ff_block(x))
        return x
