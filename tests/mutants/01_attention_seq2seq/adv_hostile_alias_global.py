# mutant: uses the notebook's own `course` global through an alias defined in the cell
# fails: grade_greedy
# hint: course|import|reference|seq2seq
# %% greedy
_answers = course.seq2seq


@torch.no_grad()
def greedy_decode(model, src, src_len, max_len, bos, eos):
    return _answers.greedy_decode(model, src, src_len, max_len, bos, eos)
