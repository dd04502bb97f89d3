# mutant: delegation: the forward copies the weights into nn.MultiheadAttention (the notebook's to_torch_mha) and calls it
# fails: grade_mha
# hint: do not|must not|not allowed|forbidden|delegat|yourself
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
        attn_mask = None
        if mask is not None:
            if mask.dtype == torch.bool:
                mask = ~mask  # nn.MultiheadAttention: True = may not attend
            attn_mask = mask.expand(B, self.n_heads, Tq, Tk).reshape(B * self.n_heads, Tq, Tk)
        ref = to_torch_mha(self)
        out, weights = ref(query, key, value, attn_mask=attn_mask, need_weights=need_weights,
                           average_attn_weights=False)
        return out, (weights if need_weights else None)
