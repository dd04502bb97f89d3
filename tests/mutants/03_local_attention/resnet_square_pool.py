# mutant: global pooling F.avg_pool2d(x, x.shape[-1]): right on square maps only (a reviewer's)
# fails: grade_resnet
# hint: non-square
# %% resnet
def _spatial(in_ch: int, out_ch: int, stride: int, mixer: str, kernel_size: int, heads: int) -> nn.Module:
    """The block's spatial mixing: a 3x3 convolution, or local attention (then 2x2 average pooling for stride 2)."""
    if mixer == "conv":
        return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
    if mixer == "attention":
        attn = LocalAttention2d(in_ch, out_ch, kernel_size, heads)
        return attn if stride == 1 else nn.Sequential(attn, nn.AvgPool2d(stride))
    raise ValueError(f"mixer must be 'conv' or 'attention', got {mixer!r}")


class ResBlock(nn.Module):
    """A basic residual block, ``relu(bn2(mix2(relu(bn1(mix1(x))))) + shortcut(x))``, whose two spatial
    layers are 3x3 convolutions (``mixer="conv"``) or local attention (``mixer="attention"``).
    ``x [B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``; the shortcut is the identity when the
    shape is kept, else (2x2 average pooling and) a 1x1 convolution with BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, mixer: str = "conv",
                 kernel_size: int = 5, heads: int = 4) -> None:
        super().__init__()
        self.mix1 = _spatial(in_channels, out_channels, stride, mixer, kernel_size, heads)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.mix2 = _spatial(out_channels, out_channels, 1, mixer, kernel_size, heads)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            pool = [nn.AvgPool2d(stride)] if stride != 1 else []
            self.shortcut = nn.Sequential(*pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.mix1(x)))
        return F.relu(self.bn2(self.mix2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR ResNet: a 3x3 conv stem, one stage per width (the first at full resolution, each next one
    halving it), global average pooling and a linear classifier. ``mixer`` picks the blocks' spatial
    layers; ``non_local`` inserts a :class:`NonLocalBlock` after that stage (index into ``widths``).
    ``x [B, 3, H, W] -> logits [B, num_classes]``."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256), depths: tuple[int, ...] = (2, 2, 2),
                 mixer: str = "conv", kernel_size: int = 5, heads: int = 4, non_local: int | None = None,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages, in_ch = [], widths[0]
        for s, (width, depth) in enumerate(zip(widths, depths)):
            blocks: list[nn.Module] = []
            for d in range(depth):
                stride = 2 if s > 0 and d == 0 else 1
                blocks.append(ResBlock(in_ch, width, stride, mixer, kernel_size, heads))
                in_ch = width
            if non_local == s:
                blocks.append(NonLocalBlock(width))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.head(F.avg_pool2d(x, x.shape[-1]).flatten(1))
