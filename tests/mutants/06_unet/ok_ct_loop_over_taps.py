# mutant: correct: a loop over the kernel's taps (strided slices), not over the input pixels
# fails: none
# %% conv_transpose
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_transpose2d_stamp(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """Each kernel tap (u, v) sends every input pixel to (s i + u, s j + v): one strided slice per tap."""
    B, C_in, H, W = x.shape
    _, C_out, kH, kW = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oh, ow = _pair(output_padding)
    full = torch.zeros(B, C_out, (H - 1) * sh + kH + oh, (W - 1) * sw + kW + ow, dtype=x.dtype)
    for u in range(kH):
        for v in range(kW):
            contrib = torch.einsum("bchw,co->bohw", x, weight[:, :, u, v])
            full[:, :, u:u + (H - 1) * sh + 1:sh, v:v + (W - 1) * sw + 1:sw] += contrib
    out = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    return out if bias is None else out + bias[None, :, None, None]
