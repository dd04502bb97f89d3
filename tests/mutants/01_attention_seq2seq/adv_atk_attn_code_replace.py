# mutant: hostile (every cell from this one on is lost): AdditiveAttention's methods are copies of the reference class's, with co_filename changed (code.replace) and a new __class__ cell
# fails: grade_attention grade_encoder grade_decoder grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% attention
import types as _types

_R = getattr(getattr(course, "seq" + "2seq"), "Additive" + "Attention")


class AdditiveAttention(nn.Module):
    """Bahdanau's attention."""


def _copy(fn, cls):
    cells = tuple(_types.CellType(cls) if n == "__class__" else c
                  for n, c in zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    return _types.FunctionType(fn.__code__.replace(co_filename="<my cell>"), dict(fn.__globals__), fn.__name__,
                               fn.__defaults__, cells or None)


for _k, _v in list(vars(_R).items()):
    if isinstance(_v, _types.FunctionType):
        setattr(AdditiveAttention, _k, _copy(_v, AdditiveAttention))
