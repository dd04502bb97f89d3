# mutant: correct: F.cosine_similarity by broadcasting, the class token dropped by slicing from the end
# fails: none
# %% positions
def position_similarity(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine similarity of every patch's position embedding with every other's."""
    gh, gw = grid
    pos = pos_embed.squeeze(0) if pos_embed.dim() == 3 else pos_embed
    if pos.shape[0] not in (gh * gw, gh * gw + 1):
        raise ValueError("the positions fit neither the grid nor the grid and a class token")
    pos = pos[-gh * gw:]
    return F.cosine_similarity(pos[:, None, :], pos[None, :, :], dim=-1).view(gh, gw, gh, gw)
