# mutant: the bias left at its random initialisation
# fails: grade_fc_to_conv
# hint: bias
# %% fc_to_conv
def fc_to_conv(linear: nn.Linear, channels: int, height: int, width: int) -> nn.Conv2d:
    """The ``nn.Conv2d(channels, out, (height, width))`` that computes ``linear`` on every ``height x width`` window."""
    out_features, in_features = linear.weight.shape
    if in_features != channels * height * width:
        raise ValueError(f"the linear layer takes {in_features} features, not {channels} x {height} x {width}")
    conv = nn.Conv2d(channels, out_features, (height, width), bias=linear.bias is not None)
    conv = conv.to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(out_features, channels, height, width))
    return conv
