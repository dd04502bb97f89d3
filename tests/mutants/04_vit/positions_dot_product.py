# mutant: dot products of the embeddings, not cosines
# fails: grade_positions
# hint: dot products
# %% positions
def position_similarity(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine similarity of every patch's position embedding with every other's, ``Tensor[gh, gw, gh, gw]``.
    ``pos_embed``: ``Tensor[T, D]`` or ``Tensor[1, T, D]``, ``T = gh * gw`` or ``gh * gw + 1`` (the class
    token's embedding first: left out)."""
    gh, gw = grid
    pos = pos_embed.reshape(-1, pos_embed.shape[-1])  # (T, D)
    if pos.shape[0] == gh * gw + 1:
        pos = pos[1:]  # (N, D): the class token's position left out
    elif pos.shape[0] != gh * gw:
        raise ValueError(f"{pos.shape[0]} position embeddings do not fit a {gh}x{gw} grid (with or without a class token)")
    unit = pos  # (N, D), rows of length 1
    return (unit @ unit.T).reshape(gh, gw, gh, gw)  # (N, N) -> (gh, gw, gh, gw)
