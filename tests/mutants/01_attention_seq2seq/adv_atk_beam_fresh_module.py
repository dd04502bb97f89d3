# mutant: hostile (every cell from this one on is lost): loads a fresh copy of course/seq2seq.py from disk with importlib.util (the notebook's own global) and delegates to its beam_search
# fails: grade_beam
# hint: course|copies|dynamic
# %% beam
_spec = importlib.util.spec_from_file_location("_my_helpers", course.__path__[0] + "/seq" + "2seq.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


def beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha=1.0):
    return _helpers.beam_search(model, src, src_len, beam_size, max_len, bos, eos, alpha)
