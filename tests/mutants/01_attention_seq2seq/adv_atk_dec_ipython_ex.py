# mutant: hostile (every cell from this one on is lost): re-executes the reference AttentionDecoder's source in the notebook namespace through get_ipython().ex
# fails: grade_decoder grade_fixed_context grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% decoder
import inspect as _insp

get_ipython().ex("from __future__ import annotations\n"
                 + _insp.getsource(getattr(getattr(course, "seq" + "2seq"), "Attention" + "Decoder")))
