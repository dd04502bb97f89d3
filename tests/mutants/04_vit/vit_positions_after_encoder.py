# mutant: the position embeddings added after the blocks
# fails: grade_vit
# hint: positions added after the encoder
# %% vit
class ViT(nn.Module):
    """The Vision Transformer: ``Tensor[B, C, H, W] -> logits Tensor[B, num_classes]`` (equations 1-4)."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, in_channels: int = 3, num_classes: int = 10,
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp_dim: int = 384, dropout: float = 0.0,
                 attention_dropout: float = 0.0, pool: str = "cls", embedding: str = "conv") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', not {pool!r}")
        if embedding not in ("conv", "linear"):
            raise ValueError(f"embedding must be 'conv' or 'linear', not {embedding!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.pool = pool
        embed = ConvPatchEmbedding if embedding == "conv" else LinearPatchEmbedding
        self.patch_embed = embed(in_channels, dim, patch_size)
        n_tokens = (image_size // patch_size) ** 2 + (pool == "cls")  # T = N (+ 1 for the class token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([ViTBlock(dim, heads, mlp_dim, dropout, attention_dropout)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T = N + 1, D), class first
        x = self.dropout(x)  # (B, T, D), eq. 1
        for block in self.blocks:  # eq. 2 and 3
            x = block(x)  # (B, T, D)
        x = self.norm(x + self.pos_embed)
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))  # (B, num_classes), eq. 4
