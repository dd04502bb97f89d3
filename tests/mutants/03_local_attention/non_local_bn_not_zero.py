# mutant: the BN's scale not zero-initialised: a new block is not the identity
# fails: grade_non_local
# hint: zero-initialised|identity
# %% non_local
class NonLocalBlock(nn.Module):
    """Wang et al.'s non-local block (embedded Gaussian), attention between all pixels:

    ``z = x + BN(W_z (softmax(theta(x)^T phi(x)) g(x)))``, with 1x1 convolutions ``theta, phi, g``
    to ``inner = channels // 2`` channels and ``W_z`` back. The BN's scale starts at zero, so the
    block starts as the identity and can be inserted into a trained network. ``x [B, C, H, W]``;
    memory ``B * (H * W)^2`` for the weights.
    """

    def __init__(self, channels: int, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.W_z = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        pass

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, inner)
        phi = self.phi(x).flatten(2)  # (B, inner, HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, HW, inner)
        f = (theta @ phi).softmax(-1)  # (B, HW, HW): row i over all positions j
        y = (f @ g).transpose(1, 2).reshape(B, -1, H, W)  # (B, inner, H, W)
        return x + self.bn(self.W_z(y))
