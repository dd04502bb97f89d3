# mutant: projections via F.linear on the modules' weights (fused qkv for self-attention), permute/contiguous/view
# fails: none
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
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d_model, d_model) for _ in range(4))

    def _split(self, x):
        B, T, _ = x.shape
        return x.reshape(B, T, self.n_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, query, key, value, mask=None, need_weights=False):
        B, Tq, _ = query.shape
        if query is key and key is value:
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight], dim=0)
            b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias], dim=0)
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        else:
            q = F.linear(query, self.q_proj.weight, self.q_proj.bias)
            k = F.linear(key, self.k_proj.weight, self.k_proj.bias)
            v = F.linear(value, self.v_proj.weight, self.v_proj.bias)
        q, k, v = (self._split(t) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=p)
        out = out.permute(0, 2, 1, 3).contiguous().view(B, Tq, self.d_model)
        out = self.out_proj(out)
        return out, (weights if need_weights else None)
