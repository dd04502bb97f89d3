# mutant: hostile (every cell from this one on is lost): keeps the reference fixed_context object and its __code__; at call time puts the original code back, calls it, re-installs the stub
# fails: grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% fixed_context
_ref_fc = getattr(getattr(course, "seq" + "2seq"), "fixed_" + "context")
_ref_code = _ref_fc.__code__


def fixed_context(enc_out, src_mask):
    current = _ref_fc.__code__
    _ref_fc.__code__ = _ref_code
    try:
        return _ref_fc(enc_out, src_mask)
    finally:
        _ref_fc.__code__ = current
