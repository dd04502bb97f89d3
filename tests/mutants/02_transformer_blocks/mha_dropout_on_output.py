# mutant: dropout applied to the attention output (after out_proj) instead of the attention weights
# fails: grade_mha
# hint: dropout.*weights|attention weights|dropout
# %% mha
class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, C = query.shape
        Tk = key.size(1)
        q = self.q_proj(query).view(B, Tq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
        out = out.transpose(1, 2).reshape(B, Tq, C)
        out = self.out_proj(out)
        out = F.dropout(out, p=self.dropout, training=self.training)
        return out, (weights if need_weights else None)
