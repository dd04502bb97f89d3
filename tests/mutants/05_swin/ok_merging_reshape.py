# mutant: correct: the neighbourhoods by a reshape
# fails: none
# %% patch_merging
class PatchMerging(nn.Module):
    """``Tensor[B, H, W, C] -> Tensor[B, ceil(H/2), ceil(W/2), 2C]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        B, H2, W2, C = x.shape
        x = x.view(B, H2 // 2, 2, W2 // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H2 // 2, W2 // 2, 4 * C)
        return self.reduction(self.norm(x))
