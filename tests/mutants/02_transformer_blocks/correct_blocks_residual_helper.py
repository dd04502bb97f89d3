# mutant: both blocks written with a generic residual helper (pre/post-norm in one place), F.relu, lambdas
# fails: none
# %% encoder_block
class EncoderBlock(nn.Module):
    """Transformer encoder block: self-attention and FFN sublayers, post-norm or pre-norm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)   # inside the FFN, after the ReLU
        self.dropout1 = nn.Dropout(dropout)  # end of the attention branch
        self.dropout2 = nn.Dropout(dropout)  # end of the FFN branch

    def _residual(self, x, branch, norm):
        return x + branch(norm(x)) if self.norm_first else norm(x + branch(x))

    def _sa_block(self, x, mask):
        out, _ = self.self_attn(x, x, x, mask=mask)
        return self.dropout1(out)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, mask=None):
        x = self._residual(x, lambda h: self._sa_block(h, mask), self.norm1)
        return self._residual(x, self._ff_block, self.norm2)
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

    def _residual(self, x, branch, norm):
        return x + branch(norm(x)) if self.norm_first else norm(x + branch(x))

    def _sa_block(self, x, mask):
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ca_block(self, x, memory, mask):
        out, weights = self.cross_attn(x, memory, memory, mask=mask, need_weights=True)
        self.cross_attn_weights = weights.detach()
        return self.dropout2(out)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self._residual(x, lambda h: self._sa_block(h, tgt_mask), self.norm1)
        x = self._residual(x, lambda h: self._ca_block(h, memory, memory_mask), self.norm2)
        return self._residual(x, self._ff_block, self.norm3)
