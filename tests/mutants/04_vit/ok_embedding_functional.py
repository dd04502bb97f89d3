# mutant: correct: the embeddings through F.conv2d and an einsum on the layers' own weights, tokens by permute
# fails: none
# %% patch_embedding
class LinearPatchEmbedding(nn.Module):
    """Flattened patches through one ``nn.Linear(C * p * p, D)`` named ``proj``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size * patch_size, dim)

    def forward(self, images: Tensor) -> Tensor:
        patches = patchify(images, self.patch_size)  # (B, N, C*p*p)
        return torch.einsum("bnk,dk->bnd", patches, self.proj.weight) + self.proj.bias


class ConvPatchEmbedding(nn.Module):
    """One ``nn.Conv2d(C, D, p, stride=p)`` named ``proj``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        y = F.conv2d(images, self.proj.weight, self.proj.bias, stride=self.patch_size)  # (B, D, gh, gw)
        return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, y.shape[1])  # (B, gh, gw, D) -> (B, N, D)
