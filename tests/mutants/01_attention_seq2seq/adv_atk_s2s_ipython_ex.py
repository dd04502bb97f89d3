# mutant: hostile (every cell from this one on is lost): re-executes the reference Seq2Seq's source (inspect.getsource) in the notebook namespace through get_ipython().ex: no exec/eval/compile name, new file name
# fails: grade_seq2seq grade_greedy grade_beam
# hint: course|copies|dynamic
# %% seq2seq
import inspect as _insp

get_ipython().ex("from __future__ import annotations\n"
                 + _insp.getsource(getattr(getattr(course, "seq" + "2seq"), "Seq2" + "Seq")))
