# mutant: in the self-attention branch the values are projected with k_proj instead of v_proj
# fails: grade_mha
# hint: v_proj|value projection
# %% mha
class MultiHeadAttention(nn.Module):
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
        if query is key and key is value:  # self-attention
            x = query
            q, k, v = self.q_proj(x), self.k_proj(x), self.k_proj(x)
        else:
            q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        q = q.view(B, Tq, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, Tq, C)
        out = self.out_proj(y)
        return out, (weights if need_weights else None)
