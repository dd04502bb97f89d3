# mutant: frequency exponent i/d instead of 2i/d (torch.arange(d_model // 2) used as 2i)
# fails: grade_pe
# hint: 2i|exponent|frequenc|10000
# %% pe
def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal_positional_encoding needs an even d_model, got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float32)
    freq = torch.exp(-math.log(10000.0) * i / d_model)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe
