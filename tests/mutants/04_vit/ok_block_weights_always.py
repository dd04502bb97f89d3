# mutant: correct: the block asks for every head's weights at every forward, keeps them only when asked, and runs the MLP layer by layer
# fails: none
# %% encoder_block
class ViTBlock(nn.Module):
    """ViT's pre-norm block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.keep_attention = False
        self.attention: Tensor | None = None
        self.norm1 = nn.LayerNorm(dim, 1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, 1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        a, w = self.attn(h, h, h, average_attn_weights=False)
        self.attention = w.detach() if self.keep_attention else None
        x = x + self.dropout(a)
        y = self.norm2(x)
        for layer in self.mlp:
            y = layer(y)
        return x + y
