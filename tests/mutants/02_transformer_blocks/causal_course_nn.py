# mutant: delegation: returns course.nn.causal_mask (the reference of later assignments)
# fails: grade_causal
# hint: course\.nn|do not|must not|not allowed|forbidden|delegat
# %% causal
def causal_mask(T: int, device=None) -> torch.Tensor:
    return course.nn.causal_mask(T, device=device)
