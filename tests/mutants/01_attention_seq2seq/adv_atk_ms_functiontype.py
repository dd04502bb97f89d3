# mutant: hostile (every cell from this one on is lost): masked_softmax is a new function built at import time from the reference's code object (types.FunctionType), with a snapshot of its globals
# fails: grade_masked_softmax grade_attention grade_encoder grade_decoder grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% masked_softmax
import types as _types

_m = getattr(course, "seq" + "2seq")
_f = _m.masked_softmax
masked_softmax = _types.FunctionType(_f.__code__, dict(_f.__globals__), "masked_softmax", _f.__defaults__,
                                     _f.__closure__)
