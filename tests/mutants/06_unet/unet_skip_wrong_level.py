# mutant: each decoder level takes the skip of the mirrored level (features[depth - 1 - level])
# fails: grade_unet
# hint: own level|level
# %% unet
class UNet(nn.Module):
    """U-Net with "same" convolutions: ``x [B, in_ch, H, W] -> logits [B, out_ch, H, W]`` for any ``H, W``;
    ``skips=False``: the same net without its skip connections."""

    def __init__(self, in_ch: int = 1, out_ch: int = 1, width: int = 16, depth: int = 4, skips: bool = True) -> None:
        super().__init__()
        self.depth, self.skips = depth, skips
        chs = [width * 2**level for level in range(depth + 1)]  # channels of each level, the bottom's last
        self.down = nn.ModuleList([double_conv(in_ch if level == 0 else chs[level - 1], chs[level])
                                   for level in range(depth)])
        self.bottom = double_conv(chs[depth - 1], chs[depth])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chs[level + 1], chs[level], 2, stride=2) for level in range(depth)])
        self.dec = nn.ModuleList([double_conv((2 if skips else 1) * chs[level], chs[level]) for level in range(depth)])
        self.head = nn.Conv2d(chs[0], out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, (-W) % m, 0, (-H) % m))  # zeros at the right and bottom: multiples of 2**depth
        features = []
        for level in range(self.depth):
            x = self.down[level](x)  # (B, width * 2**level, H', W')
            features.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)  # (B, width * 2**depth, H' / 2**depth, W' / 2**depth)
        for level in reversed(range(self.depth)):
            x = self.up[level](x)  # (B, width * 2**level, ...): the resolution of level `level`
            if self.skips:
                x = torch.cat([features[self.depth - 1 - level], x], 1)
            x = self.dec[level](x)
        return self.head(x)[..., :H, :W]  # (B, out_ch, H, W)
