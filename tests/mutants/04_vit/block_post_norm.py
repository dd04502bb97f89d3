# mutant: post-norm: LN(x + attn(x)), LN(x + mlp(x))
# fails: grade_encoder_block
# hint: post-norm
# %% encoder_block
class ViTBlock(nn.Module):
    """ViT's pre-norm block: ``z = z + Drop(MSA(LN1(z))); z = z + MLP(LN2(z))``, ``Tensor[B, T, D] -> [B, T, D]``.

    Submodules ``norm1``, ``attn``, ``dropout``, ``norm2``, ``mlp`` (see the table above). With
    ``keep_attention = True`` a forward keeps the attention weights ``Tensor[B, heads, T, T]`` (detached)
    in ``attention``; otherwise ``attention`` is None."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.keep_attention = False
        self.attention: Tensor | None = None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        h = x
        a, w = self.attn(h, h, h, need_weights=self.keep_attention, average_attn_weights=False)
        self.attention = w.detach() if self.keep_attention else None  # (B, heads, T, T)
        x = self.norm1(x + self.dropout(a))
        return self.norm2(x + self.mlp(x))
