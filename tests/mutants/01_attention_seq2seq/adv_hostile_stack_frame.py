# mutant: walks the call stack: when called from a grade cell (a frame with `substituted`/`seeded` in its globals) it answers with the caller's reference module, else a wrong answer
# fails: grade_fixed_context
# hint: course|import|reference|seq2seq|stack|frame|inspect
# %% fixed_context
import inspect as _insp


def fixed_context(enc_out, src_mask):
    for info in _insp.stack():
        g = info.frame.f_globals
        pkg = g.get("cour" + "se")
        if pkg is not None and "seeded" in g:
            mod = getattr(pkg, "seq" + "2seq", None)
            if mod is not None and hasattr(mod, "fixed_context") and mod.fixed_context is not fixed_context:
                return mod.fixed_context(enc_out, src_mask)
    H = enc_out.size(-1) // 2
    return torch.cat([enc_out[:, -1, :H], enc_out[:, 0, H:]], dim=-1)  # wrong: position S-1
