# mutant: hostile: torchvision's EncoderBlock.forward run on the notebook's modules, registered under both names
# fails: grade_encoder_block
# hint: torchvision's EncoderBlock
# %% encoder_block
class ViTBlock(nn.Module):
    """torchvision's block under the notebook's names."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.keep_attention = False
        self.attention = None
        self.norm1 = self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = self.self_attention = nn.MultiheadAttention(dim, heads, dropout=attention_dropout,
                                                                batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm2 = self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        self.attention = None
        if self.keep_attention:
            h = self.norm1(x)
            self.attention = self.attn(h, h, h, average_attn_weights=False)[1].detach()
        return TorchvisionEncoderBlock.forward(self, x)
