# mutant: hard-coded head size: head_dim = d_model // 8 (the default 8 heads) instead of d_model // n_heads
# fails: grade_mha
# hint: head_dim|head size|n_heads
# %% mha
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // 8
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
        p = self.dropout if self.training else 0.0
        y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, Tq, C)
        out = self.out_proj(y)
        return out, (weights if need_weights else None)
