# mutant: sines and cosines concatenated [sin | cos] instead of interleaved (sin in even, cos in odd channels)
# fails: grade_pe
# hint: interleav|concat|even|odd|0, 2, 4
# %% pe
def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal_positional_encoding needs an even d_model, got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)
    freq = torch.exp(-math.log(10000.0) * two_i / d_model)
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1)
