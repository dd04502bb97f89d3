# mutant: hostile: the course's ViT subclassed, reached through sys.modules and a string built at run time
# fails: grade_vit
# hint: course|copies|dynamic|ViT
# %% vit
import sys as _sys


class ViT(vars(_sys.modules["course." + "vit"])["V" + "iT"]):
    """The definition."""
