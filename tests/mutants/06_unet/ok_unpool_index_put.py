# mutant: correct: a zero tensor of (B*C, H*W), values put with scatter (not in place) and reshaped
# fails: none
# %% max_unpool
def max_unpool(x, indices, output_size):
    B, C, h, w = x.shape
    flat = torch.zeros(B * C, output_size[0] * output_size[1], dtype=x.dtype, device=x.device)
    flat = flat.scatter(1, indices.reshape(B * C, h * w), x.reshape(B * C, h * w))
    return flat.reshape(B, C, *output_size)
