# mutant: LinearPatchEmbedding cuts its own patches, flattened (row, column, channel)
# fails: grade_patch_embedding
# hint: linear map applied to each patch flattened \(row, column, channel\)
# %% patch_embedding
class LinearPatchEmbedding(nn.Module):
    """Flattened patches through one ``nn.Linear(C * p * p, D)`` named ``proj``: ``[B, C, H, W] -> [B, N, D]``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size * patch_size, dim)

    def forward(self, images: Tensor) -> Tensor:
        p = self.patch_size
        x = images.unfold(2, p, p).unfold(3, p, p)  # (B, C, gh, gw, p, p)
        x = x.permute(0, 2, 3, 4, 5, 1)  # (B, gh, gw, p, p, C)
        return self.proj(x.reshape(x.shape[0], x.shape[1] * x.shape[2], -1))  # (B, N, C*p*p) -> (B, N, D)


class ConvPatchEmbedding(nn.Module):
    """One ``nn.Conv2d(C, D, p, stride=p)`` named ``proj``, its ``[B, D, gh, gw]`` map read as tokens:
    ``[B, C, H, W] -> [B, N, D]`` (raster order)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, D, gh, gw) -> (B, D, N) -> (B, N, D)
