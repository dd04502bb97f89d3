# mutant: hostile: the whole image at once, with course.device.measure patched to report no memory (named zz_: its patch stays in the shared kernel, so it runs last)
# fails: grade_chunked grade_layer
# hint: course\.device\.measure|patch
# %% chunked
import course.device


def _no_memory(fn, *args, backward=False, repeat=3, **kwargs):
    return {"ms": 1.0, "peak_mb": 1.0, "largest_mb": 1e-6}


course.device.measure = _no_memory


def local_attention_chunked(q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor,
                            kernel_size: int, chunk: int) -> Tensor:
    """All rows at once."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return local_attention(q, k, v, rel_h, rel_w, kernel_size)[0]
