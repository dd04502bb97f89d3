# mutant: F.conv_transpose2d called instead of stamping
# fails: grade_conv_transpose
# hint: conv_transpose2d
# %% conv_transpose
def _pair(v):
    """An int or a pair -> a pair (rows, columns)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_transpose2d_stamp(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                           output_padding=0) -> Tensor:
    """``F.conv_transpose2d`` by stamping: ``x [B, C_in, H, W]``, ``weight [C_in, C_out, kH, kW]`` ->
    ``[B, C_out, H_out, W_out]``."""
    return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
    B, C_in, H, W = x.shape
    C_out, kH, kW = weight.shape[1], weight.shape[2], weight.shape[3]
    (sh, sw), (ph, pw), (oh, ow) = _pair(stride), _pair(padding), _pair(output_padding)
    full = x.new_zeros(B, C_out, (H - 1) * sh + kH + oh, (W - 1) * sw + kW + ow)
    for i in range(H):
        for j in range(W):
            stamp = torch.einsum("bc,cokl->bokl", x[:, :, i, j], weight)  # (B, C_out, kH, kW)
            full[:, :, i * sh:i * sh + kH, j * sw:j * sw + kW] += stamp
    H_out, W_out = full.shape[2] - 2 * ph, full.shape[3] - 2 * pw
    out = full[:, :, ph:ph + H_out, pw:pw + W_out]
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out
