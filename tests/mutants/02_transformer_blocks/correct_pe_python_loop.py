# mutant: the table built with a python loop in double precision (math.sin/cos), then a float32 tensor
# fails: none
# %% pe
def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """Tensor[max_len, d_model] with PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal_positional_encoding needs an even d_model, got {d_model}")
    rows = []
    for pos in range(max_len):
        row = []
        for i in range(0, d_model, 2):
            angle = pos / (10000 ** (i / d_model))
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    pe = torch.tensor(rows, dtype=torch.float32).reshape(max_len, d_model)
    return pe
