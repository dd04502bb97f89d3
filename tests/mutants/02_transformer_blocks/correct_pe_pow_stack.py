# mutant: frequencies with torch.pow and the table interleaved with torch.stack(...).flatten
# fails: none
# %% pe
def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal_positional_encoding needs an even d_model, got {d_model}")
    pos = torch.arange(max_len).float().unsqueeze(1)
    div = torch.pow(10000.0, torch.arange(0, d_model, 2).float() / d_model)
    angles = pos / div  # (max_len, d_model / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
