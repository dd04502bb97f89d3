# mutant: the 2x2 neighbourhood concatenated column offset first
# fails: grade_patch_merging
# hint: column offset first
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
        x = torch.cat([x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))
