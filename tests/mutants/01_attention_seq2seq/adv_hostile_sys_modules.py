# mutant: takes beam_search from sys.modules at call time
# fails: grade_beam
# hint: course|import|reference|seq2seq
# %% beam
import sys as _s


def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    mod = _s.modules["".join(["cou", "rse.se", "q2seq"])]
    return mod.beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha)
