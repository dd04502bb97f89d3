# mutant: correct: blocks in an nn.Sequential, the class token repeated and its position added apart, the pools in a dict
# fails: none
# %% vit
class ViT(nn.Module):
    """The Vision Transformer."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_channels: int = 3, num_classes: int = 10,
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp_dim: int = 384, dropout: float = 0.0,
                 attention_dropout: float = 0.0, pool: str = "cls", embedding: str = "conv") -> None:
        super().__init__()
        kinds = {"conv": ConvPatchEmbedding, "linear": LinearPatchEmbedding}
        if pool not in ("cls", "mean") or embedding not in kinds or image_size % patch_size != 0:
            raise ValueError(f"bad configuration: pool={pool!r}, embedding={embedding!r}, {image_size}/{patch_size}")
        self.pool = pool
        self.patch_embed = kinds[embedding](in_channels, dim, patch_size)
        n = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, n + (pool == "cls"), dim))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(ViTBlock(dim, heads, mlp_dim, dropout, attention_dropout)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)  # (B, N, D)
        if self.cls_token is None:
            x = x + self.pos_embed
        else:
            cls = self.cls_token.repeat(len(x), 1, 1) + self.pos_embed[:, :1]  # (B, 1, D)
            x = torch.cat((cls, x + self.pos_embed[:, 1:]), 1)  # (B, T, D)
        x = self.norm(self.blocks(self.dropout(x)))
        pooled = {"cls": lambda t: t[:, 0], "mean": lambda t: t.mean(1)}[self.pool](x)  # (B, D)
        return self.head(pooled)
