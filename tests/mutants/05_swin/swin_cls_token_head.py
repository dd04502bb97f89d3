# mutant: the head on the first position instead of the mean
# fails: grade_swin
# hint: torchvision|differ
# %% swin
class SwinBlock(nn.Module):
    """Pre-norm block, ``Tensor[B, H, W, C] -> Tensor[B, H, W, C]``: ``x = x + attn(norm1(x));
    x = x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, window: int, shift: int = 0, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, window, heads, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    """A small Swin for CIFAR: ``Tensor[B, 3, H, W] -> logits Tensor[B, num_classes]``."""

    def __init__(self, patch_size: int = 2, in_channels: int = 3, num_classes: int = 10, dim: int = 64,
                 depths: tuple = (2, 2, 2), heads: tuple = (2, 4, 8), window: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError(f"one number of heads per stage: depths {depths}, heads {heads}")
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(dim)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s, (depth, nh) in enumerate(zip(depths, heads)):
            width = dim * 2 ** s
            self.stages.append(nn.Sequential(*[SwinBlock(width, nh, window, 0 if i % 2 == 0 else window // 2,
                                                         mlp_ratio, dropout) for i in range(depth)]))
            if s < len(depths) - 1:
                self.merges.append(PatchMerging(width))
        self.norm = nn.LayerNorm(dim * 2 ** (len(depths) - 1))
        self.head = nn.Linear(dim * 2 ** (len(depths) - 1), num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch_norm(self.patch_embed(images).permute(0, 2, 3, 1))  # (B, H/p, W/p, dim)
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if s < len(self.merges):
                x = self.merges[s](x)
        return self.head(self.norm(x)[:, 0, 0])
