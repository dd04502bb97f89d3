# mutant: -1e9 fill without zeroing fully masked rows (they get uniform weights 1/S)
# fails: grade_masked_softmax
# hint: no allowed|all zero|empty|uniform|1e9|zero
# %% masked_softmax
def masked_softmax(scores, mask):
    """Softmax over the last dim among the allowed entries."""
    return torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
