# mutant: delegation: MultiHeadAttention subclasses course.nn.MultiHeadAttention (the reference of later assignments)
# fails: grade_mha
# hint: course\.nn|do not|must not|not allowed|forbidden|delegat
# %% mha
from course.nn import MultiHeadAttention as ReferenceMHA


class MultiHeadAttention(ReferenceMHA):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__(d_model, n_heads, dropout)
        self.head_dim = d_model // n_heads
