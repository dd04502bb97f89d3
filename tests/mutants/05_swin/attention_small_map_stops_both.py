# mutant: a map one window high (or wide) shifted along neither axis
# fails: grade_window_attention
# hint: either axis|torchvision
# %% window_attention
def shifted_window_attention(x: Tensor, qkv_weight: Tensor, proj_weight: Tensor, bias_table: Tensor, window: int,
                             heads: int, shift: int = 0, qkv_bias: Tensor | None = None,
                             proj_bias: Tensor | None = None) -> Tensor:
    """Multi-head self-attention within ``M x M`` windows of ``x: Tensor[B, H, W, C]``, rolled by ``shift`` first
    (and back after), with the relative position bias: ``Tensor[B, H, W, C]``."""
    B, H, W, C = x.shape
    M, d = window, C // heads
    x = F.pad(x, (0, 0, 0, (M - W % M) % M, 0, (M - H % M) % M))
    Hp, Wp = x.shape[1], x.shape[2]
    sy = sx = shift if M < Hp and M < Wp else 0  # one small axis stops both shifts
    if sy or sx:
        x = torch.roll(x, shifts=(-sy, -sx), dims=(1, 2))
    win = window_partition(x, M)  # (B*nW, M*M, C)
    qkv = F.linear(win, qkv_weight, qkv_bias).view(win.shape[0], M * M, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # each (B*nW, heads, M*M, d)
    logits = (q * d ** -0.5) @ k.transpose(-2, -1)  # (B*nW, heads, M*M, M*M)
    logits = logits + bias_table[relative_position_index(M).to(x.device)].permute(2, 0, 1)  # + (heads, M*M, M*M)
    if sy or sx:
        mask = shift_mask(Hp, Wp, M, (sy, sx), device=x.device)  # (nW, M*M, M*M)
        nW = mask.shape[0]
        logits = (logits.view(B, nW, heads, M * M, M * M) + mask[None, :, None]).view_as(logits)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(win.shape[0], M * M, C)  # heads side by side
    out = window_reverse(F.linear(out, proj_weight, proj_bias), M, Hp, Wp)
    if sy or sx:
        out = torch.roll(out, shifts=(sy, sx), dims=(1, 2))
    return out[:, :H, :W].contiguous()


class ShiftedWindowAttention(nn.Module):
    """(Shifted) window attention as a layer, ``Tensor[B, H, W, C] -> Tensor[B, H, W, C]``, named as torchvision's:
    ``qkv``, ``proj``, ``relative_position_bias_table`` and the buffer ``relative_position_index``."""

    def __init__(self, dim: int, window: int, heads: int, shift: int = 0) -> None:
        super().__init__()
        self.window, self.heads, self.shift = window, heads, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window).flatten())

    def forward(self, x: Tensor) -> Tensor:
        return shifted_window_attention(x, self.qkv.weight, self.proj.weight, self.relative_position_bias_table,
                                        self.window, self.heads, self.shift, self.qkv.bias, self.proj.bias)
