# mutant: delegation: returns course.nn.sinusoidal_positional_encoding (the reference of later assignments)
# fails: grade_pe
# hint: course\.nn|do not|must not|not allowed|forbidden|delegat
# %% pe
def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal_positional_encoding needs an even d_model, got {d_model}")
    return course.nn.sinusoidal_positional_encoding(max_len, d_model)
