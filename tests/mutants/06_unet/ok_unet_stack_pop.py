# mutant: correct: skips kept on a stack and popped, cat along dim -3, the padding sizes computed with math.ceil, the pooling a module
# fails: none
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

    def forward(self, x):
        H, W = x.shape[2], x.shape[3]
        step = 2 ** self.depth
        Hp, Wp = math.ceil(H / step) * step, math.ceil(W / step) * step
        y = F.pad(x, [0, Wp - W, 0, Hp - H], value=0.0)
        pool = nn.MaxPool2d(2)
        stack = []
        for block in self.down:
            y = block(y)
            stack.append(y)
            y = pool(y)
        y = self.bottom(y)
        for up, dec in zip(reversed(self.up), reversed(self.dec)):
            y = up(y)
            skip = stack.pop()
            y = dec(torch.cat((skip, y), dim=-3) if self.skips else y)
        return self.head(y)[:, :, :H, :W]
