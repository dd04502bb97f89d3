# mutant: correct: the weight and bias set through .data, reshape instead of view, the conv built on the device
# fails: none
# %% fc_to_conv
def fc_to_conv(linear: nn.Linear, channels: int, height: int, width: int) -> nn.Conv2d:
    """Conv2d equivalent of a Linear on flattened (C, h, w) features."""
    conv = nn.Conv2d(channels, linear.out_features, kernel_size=(height, width), bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)
    conv.weight.data = linear.weight.data.reshape(linear.out_features, channels, height, width).clone()
    if linear.bias is not None:
        conv.bias.data = linear.bias.data.clone()
    return conv
