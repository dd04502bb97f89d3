# mutant: hostile (every cell from this one on is lost): masked_softmax runs a copy of the reference's code object with another co_filename/co_firstlineno (code.replace), so it is no "copy" by (file, line, bytecode)
# fails: grade_masked_softmax grade_attention grade_encoder grade_decoder grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% masked_softmax
import types as _types

_f = getattr(course, "seq" + "2seq").masked_softmax
masked_softmax = _types.FunctionType(_f.__code__.replace(co_filename="<my cell>", co_firstlineno=1),
                                     dict(_f.__globals__), "masked_softmax", _f.__defaults__, _f.__closure__)
