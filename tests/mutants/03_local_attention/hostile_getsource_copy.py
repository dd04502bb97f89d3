# mutant: hostile: the course's local_attention copied with inspect.getsource and run (every cell's scan refuses it; its own cell proves it)
# fails: grade_vectorised
# hint: course|copies|dynamic
# %% vectorised
import inspect as _inspect
import sys as _sys

_code = _inspect.getsource(_sys.modules["course.local" + "_attention"].local_attention)
exec(_code.replace("    _check_args(q, k, v, rel_h, rel_w, kernel_size)\n", ""), globals())
