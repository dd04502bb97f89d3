# mutant: hostile (every cell from this one on is lost): Encoder subclasses the Encoder of a fresh copy of course/seq2seq.py loaded from disk (import importlib.util is not "import importlib")
# fails: grade_encoder grade_decoder grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% encoder
import importlib.util as _u

_spec = _u.spec_from_file_location("_my_helpers2", course.__path__[0] + "/seq" + "2seq.py")
_helpers = _u.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


class Encoder(_helpers.Encoder):
    """Bidirectional GRU encoder."""
