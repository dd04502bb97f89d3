# mutant: a 1x1 convolution over the flattened features: no score map
# fails: grade_fc_to_conv
# hint: shape|conv\.weight
# %% fc_to_conv
def fc_to_conv(linear: nn.Linear, channels: int, height: int, width: int) -> nn.Conv2d:
    """The ``nn.Conv2d(channels, out, (height, width))`` that computes ``linear`` on every ``height x width`` window."""
    out_features, in_features = linear.weight.shape
    conv = nn.Conv2d(in_features, out_features, 1, bias=linear.bias is not None).to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(out_features, in_features, 1, 1))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv
