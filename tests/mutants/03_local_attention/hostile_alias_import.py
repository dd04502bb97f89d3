# mutant: hostile: the course's loops through an aliased import (every cell's scan refuses it; its own cell proves it)
# fails: grade_naive
# hint: course\.local_attention
# %% naive
import course.local_attention as _answers


def local_attention_naive(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                          kernel_size: int) -> tuple[Tensor, Tensor]:
    """The definition."""
    return _answers.local_attention_naive(q, k, v, rel_h, rel_w, kernel_size)
