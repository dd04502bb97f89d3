# mutant: hostile: the course's UNet.forward copied with inspect.getsource and run (every cell's scan refuses it; its own cell proves it)
# fails: grade_unet
# hint: course|copies|dynamic
# %% unet
import inspect as _inspect
import sys as _sys

_code = _inspect.getsource(_sys.modules["course." + "unet"].UNet)
exec(_code, globals())
