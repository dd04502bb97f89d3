# mutant: imports the course's masked_softmax directly
# fails: grade_masked_softmax
# hint: course|import|reference|seq2seq
# %% masked_softmax
from course.seq2seq import masked_softmax as _reference_masked_softmax


def masked_softmax(scores, mask):
    return _reference_masked_softmax(scores, mask)
