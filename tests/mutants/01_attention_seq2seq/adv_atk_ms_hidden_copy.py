# mutant: hostile (every cell from this one on is lost): an exact FunctionType copy of the reference masked_softmax, kept in a list (not a callable name of the notebook), called by a one-line wrapper
# fails: grade_masked_softmax grade_attention grade_encoder grade_decoder grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% masked_softmax
import types as _types

_f = getattr(course, "seq" + "2seq").masked_softmax
_box = [_types.FunctionType(_f.__code__, dict(_f.__globals__), "masked_softmax", _f.__defaults__, _f.__closure__)]


def masked_softmax(scores, mask):
    return _box[0](scores, mask)
