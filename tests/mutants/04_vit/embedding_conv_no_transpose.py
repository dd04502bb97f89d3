# mutant: the conv's map read as tokens with reshape(B, N, D), no transpose
# fails: grade_patch_embedding
# hint: without the transpose
# %% patch_embedding
class LinearPatchEmbedding(nn.Module):
    """Flattened patches through one ``nn.Linear(C * p * p, D)`` named ``proj``: ``[B, C, H, W] -> [B, N, D]``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size * patch_size, dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(patchify(images, self.patch_size))  # (B, N, C*p*p) -> (B, N, D)


class ConvPatchEmbedding(nn.Module):
    """One ``nn.Conv2d(C, D, p, stride=p)`` named ``proj``, its ``[B, D, gh, gw]`` map read as tokens:
    ``[B, C, H, W] -> [B, N, D]`` (raster order)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).reshape(images.shape[0], -1, self.proj.out_channels)  # (B, D, gh, gw) -> (B, D, N) -> (B, N, D)
