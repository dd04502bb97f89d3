# mutant: hostile: the course's rollout through an aliased import (every cell's scan refuses it; its own cell proves it)
# fails: grade_rollout
# hint: course\.vit
# %% rollout
import course.vit as _answers


def attention_rollout(attentions: list[Tensor], residual: bool = True) -> Tensor:
    """The definition."""
    return _answers.attention_rollout(attentions, residual)
