# mutant: reaches the reference AdditiveAttention through importlib and string building
# fails: grade_attention
# hint: course|import|reference|seq2seq
# %% attention
import importlib as _il

_ref = _il.import_module("cour" + "se." + "seq" + str(2) + "seq")


class AdditiveAttention(getattr(_ref, "Additive" + "Attention")):
    """Bahdanau's attention."""
