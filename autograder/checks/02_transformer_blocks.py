"""Hidden checks of assignment 02 (Transformer blocks), run by the trusted grader.

Every function registered with ``@check(grade_id, name)`` decides, together with the other
checks of its grade cell, whether that cell of ``02_transformer_blocks.ipynb`` scores its
points (see :mod:`autograder.trusted`). The student's functions and modules run in their
sandboxed kernel and are reached through the handle ``h``; inputs, weights and every
reference result are made here, in the grader's process: PyTorch's
``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``
and ``nn.TransformerDecoderLayer`` with the weights the check loaded into the student's
module, and trusted copies of the solution's blocks (``_EncoderBlock`` ...) where only
the weights or the gradients are needed.

Conventions:

- each check seeds its own inputs (``seeded``), and the kernel's generator where the
  student's code draws random numbers (dropout, ``torch.randperm``);
- later exercises are graded with the reference versions of earlier ones
  (``h.substituted(MultiHeadAttention="course.nn.MultiHeadAttention", ...)``), as the
  notebook's ``substituted`` helper did;
- a check's name and its failure message are what the student sees: names say what is
  checked, ``course.testing`` says what differs and where;
- each grade cell's checks stay well under 2 s of CPU (one request is one kernel round
  trip of ~10 ms: inputs are batched where the reference allows it).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import course.nn
from autograder.delegation import (check_attention_not_delegated, check_not_reference, decoder_references,
                                   encoder_references, mha_honest, mha_references)
from autograder.trusted import RemoteObject, StudentError, check
from course.testing import (_perturb, check_causal, check_close, check_no_delegation, check_rows_sum_to_one,
                            check_shape, check_zero_where, seeded)

# -- names and paths used in the student's kernel ------------------------------------------------
REF_ATTENTION = "__main__.reference_attention"  # locked helper of the setup cell: course.nn's, returning weights
REF_MHA = "course.nn.MultiHeadAttention"
REF_PARTS = dict(MultiHeadAttention=REF_MHA, causal_mask="course.nn.causal_mask",
                 sinusoidal_positional_encoding="course.nn.sinusoidal_positional_encoding")
F_SDPA = "torch.nn.functional.scaled_dot_product_attention"
F_MHA_FORWARD = "torch.nn.functional.multi_head_attention_forward"
KERNEL_SEED = dict(_seed_kernel="torch.manual_seed")
ATTN_DIMS = ("batch", "head", "query", "key")
TOKEN_DIMS = ("batch", "token", "channel")

COURSE_NN = "course.nn is the reference for later assignments"


def _warm_up() -> None:
    """The first call of some PyTorch references in a process imports parts of torch (meta registrations,
    sympy: ~1-2 s): pay that once when the checks are loaded, not inside the first grade cell that uses them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.zeros(1, 2, 4)
        pad = torch.tensor([[False, True]])
        q = x.clone().requires_grad_()
        F.scaled_dot_product_attention(q, x, x, attn_mask=~pad).sum().backward()
        nn.MultiheadAttention(4, 2, batch_first=True)(x, x, x, key_padding_mask=pad)
        nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)(x, src_key_padding_mask=pad)
        nn.TransformerDecoderLayer(4, 2, 8, dropout=0.0, batch_first=True)(x, x, tgt_mask=pad.expand(2, 2))


_warm_up()


# -- small helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """PyTorch's reference modules warn about mask types and fast paths: keep the grader's log clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _what(x) -> str:
    if x is None:
        return "None"
    if isinstance(x, RemoteObject):
        return f"an object of type {x.type_name}"
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, list):
        return f"a tuple or list of length {len(x)}"
    return f"a {type(x).__name__}"


def _tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise AssertionError(f"{what} should be a tensor, got {_what(x)}")
    return x


def _pair(r, what: str) -> tuple:
    if not (isinstance(r, list) and len(r) == 2):
        raise AssertionError(f"{what} should return a pair (out, weights), got {_what(r)}")
    return r[0], r[1]


def _seed_kernel(h, seed: int) -> None:
    """Seed the generator of the student's kernel (inside ``h.substituted(**KERNEL_SEED, ...)``)."""
    h.call("_seed_kernel", seed)


def _load(obj: RemoteObject, state: dict, name: str) -> None:
    try:
        obj.load_state_dict(dict(state))  # the wire takes plain dicts
    except StudentError as e:
        raise AssertionError(f"the check could not load its weights into your {name}: keep the parameter names of "
                             f"the notebook ({e.safe_message or 'see the visible checks for the message'})") from None


def _module(h, name: str, *args, state=None, eval_mode=True, **kwargs) -> RemoteObject:
    """Construct the student's module ``name`` in their kernel, load ``state`` (made here) and set eval."""
    obj = h.construct(name, *args, **kwargs)
    if state is not None:
        _load(obj, state, name)
    if eval_mode:
        obj.eval()
    return obj


def _module_like(h, name: str, *args, state: dict, eval_mode=True, **kwargs) -> tuple[RemoteObject, dict]:
    """Like :func:`_module`, but only the student's own parameters are set (those ``state`` has, with the
    same shapes), the others keep their values: the mirrors of the visible tests, which build their
    reference from the student's attributes, must not fail where the visible tests pass. Returns the
    module and its weights."""
    obj = h.construct(name, *args, **kwargs)
    own = obj.state_dict()
    weights = {k: state[k] if (k in state and isinstance(v, torch.Tensor) and v.shape == state[k].shape) else v
               for k, v in own.items()}
    _load(obj, weights, name)
    if eval_mode:
        obj.eval()
    return obj, weights


def _param(sd: dict, key: str) -> torch.Tensor:
    if not isinstance(sd.get(key), torch.Tensor):
        raise AssertionError(f"the module has no parameter {key} (name it as in the notebook)")
    return sd[key]


def _causal_batched(call, x: torch.Tensor, *, name: str, repeat=(), seed: int = 0) -> None:
    """``check_causal`` on a remote function with one request: the input and each copy that
    check_causal perturbs are stacked along the batch dim (dim 0) and sent at once;
    ``repeat`` are further inputs repeated along the batch (e.g. the encoder memory)."""
    T = x.size(1)
    g = torch.Generator().manual_seed(seed)
    inputs = [x, x] + [_perturb(x, 1, j, g) for j in range(1, T)]
    n = len(inputs)
    out = _tensor(call(torch.cat(inputs), *[r.repeat(n, *([1] * (r.dim() - 1))) for r in repeat]), name)
    if out.dim() < 2 or out.size(0) != n * x.size(0):
        raise AssertionError(f"{name}: output has shape {tuple(out.shape)}, "
                             f"expected the batch of {n * x.size(0)} inputs first")
    outs = list(out.split(x.size(0)))
    unused = list(range(n))

    def lookup(t):
        for i in unused:
            if inputs[i].shape == t.shape and torch.equal(inputs[i], t):
                unused.remove(i)
                return outs[i]
        raise RuntimeError("internal: check_causal asked for an input that was not sent")

    check_causal(lookup, x, dim=1, seed=seed, name=name)


def _function_vjp(h, name: str, inputs: tuple, cotangents: tuple, **kwargs):
    """``torch.autograd.functional.vjp`` of the student's function ``name`` (run in their kernel).

    Workaround: the handle's ``grads`` works on modules only, so the function object is
    fetched by name through IPython and differentiated with ``functools.partial`` + ``vjp``."""
    with h.substituted(_vjp="torch.autograd.functional.vjp", _partial="functools.partial",
                       _get_ipython="IPython.get_ipython"):
        fn = h.call("_get_ipython").call_method("ev", name)
        if kwargs:
            fn = h.call("_partial", fn, **kwargs)
        r = h.call("_vjp", fn, tuple(inputs), tuple(cotangents))
    if not (isinstance(r, list) and len(r) == 2 and isinstance(r[1], list)):
        raise AssertionError(f"the gradients of {name} could not be computed")
    return r[0], r[1]


# -- trusted copies of the solution (weights, gradients and expected values are computed with these) --
def _randomize_norms(module: nn.Module) -> nn.Module:
    """Random LayerNorm weights and biases (the notebook's ``randomize_norms``)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return module


class _EncoderBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = course.nn.MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _sa(self, x, mask):
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, mask=None):
        if self.norm_first:
            x = x + self._sa(self.norm1(x), mask)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, mask))
        return self.norm2(x + self._ff(x))


class _DecoderBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm_first=False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = course.nn.MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn = course.nn.MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _sa(self, x, mask):
        return self.dropout1(self.self_attn(x, x, x, mask=mask)[0])

    def _ca(self, x, memory, mask):
        return self.dropout2(self.cross_attn(x, memory, memory, mask=mask)[0])

    def _ff(self, x):
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask)
            x = x + self._ca(self.norm2(x), memory, memory_mask)
            return x + self._ff(self.norm3(x))
        x = self.norm1(x + self._sa(x, tgt_mask))
        x = self.norm2(x + self._ca(x, memory, memory_mask))
        return self.norm3(x + self._ff(x))


@dataclass
class _Config:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    norm_first: bool = True
    tie_weights: bool = True
    max_len: int = 256
    pad_id: int = 0

    def kwargs(self) -> dict:
        return dict(self.__dict__)


class _Transformer(nn.Module):
    def __init__(self, cfg: _Config):
        super().__init__()
        self.cfg = cfg
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model)
        self.register_buffer("pe", course.nn.sinusoidal_positional_encoding(cfg.max_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        args = (cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.norm_first)
        self.encoder = nn.ModuleList([_EncoderBlock(*args) for _ in range(cfg.n_layers)])
        self.decoder = nn.ModuleList([_DecoderBlock(*args) for _ in range(cfg.n_layers)])
        self.enc_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.generator = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)
        if cfg.tie_weights:
            self.generator.weight = self.tgt_embed.weight
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=cfg.d_model ** -0.5)

    def src_mask(self, src):
        return (src != self.cfg.pad_id)[:, None, None, :]

    def encode(self, src):
        x = self.dropout(self.src_embed(src) * math.sqrt(self.cfg.d_model) + self.pe[: src.size(1)])
        for block in self.encoder:
            x = block(x, self.src_mask(src))
        return self.enc_norm(x)

    def decode(self, tgt, memory, src):
        T = tgt.size(1)
        y = self.dropout(self.tgt_embed(tgt) * math.sqrt(self.cfg.d_model) + self.pe[:T])
        for block in self.decoder:
            y = block(y, memory, tgt_mask=course.nn.causal_mask(T), memory_mask=self.src_mask(src))
        return self.generator(self.dec_norm(y))

    def forward(self, src, tgt):
        return self.decode(tgt, self.encode(src), src)


# -- PyTorch references built from a state dict with the notebook's parameter names -------------------
def _copy_mha(sd: dict, prefix: str, ref: nn.MultiheadAttention) -> nn.MultiheadAttention:
    """The notebook's ``to_torch_mha``: q/k/v projections -> in_proj (rows), out_proj -> out_proj."""
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([_param(sd, f"{prefix}{p}_proj.weight") for p in "qkv"]))
        ref.in_proj_bias.copy_(torch.cat([_param(sd, f"{prefix}{p}_proj.bias") for p in "qkv"]))
        ref.out_proj.weight.copy_(_param(sd, f"{prefix}out_proj.weight"))
        ref.out_proj.bias.copy_(_param(sd, f"{prefix}out_proj.bias"))
    return ref


def _torch_mha(sd: dict, C: int, nh: int) -> nn.MultiheadAttention:
    return _copy_mha(sd, "", nn.MultiheadAttention(C, nh, dropout=0.0, batch_first=True)).eval()


def _copy_plain(sd: dict, ref: nn.Module, names) -> None:
    for name in names:
        getattr(ref, name).load_state_dict({k: _param(sd, f"{name}.{k}") for k in ("weight", "bias")})


def _torch_encoder_layer(sd: dict, C: int, nh: int, d_ff: int, norm_first: bool) -> nn.TransformerEncoderLayer:
    with _quiet():
        ref = nn.TransformerEncoderLayer(C, nh, d_ff, dropout=0.0, activation="relu", batch_first=True,
                                         norm_first=norm_first)
    _copy_mha(sd, "self_attn.", ref.self_attn)
    _copy_plain(sd, ref, ("linear1", "linear2", "norm1", "norm2"))
    return ref.eval()


def _torch_decoder_layer(sd: dict, C: int, nh: int, d_ff: int, norm_first: bool) -> nn.TransformerDecoderLayer:
    with _quiet():
        ref = nn.TransformerDecoderLayer(C, nh, d_ff, dropout=0.0, activation="relu", batch_first=True,
                                         norm_first=norm_first)
    _copy_mha(sd, "self_attn.", ref.self_attn)
    _copy_mha(sd, "cross_attn.", ref.multihead_attn)
    _copy_plain(sd, ref, ("linear1", "linear2", "norm1", "norm2", "norm3"))
    return ref.eval()


def _reference_grads(module: nn.Module, inputs: tuple, grad_output: torch.Tensor):
    """Gradients of ``module(*inputs)`` (its first output) for ``grad_output``: ([d input], {name: d param})."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    module.zero_grad(set_to_none=True)
    out = module(*leaves)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(grad_output)
    return [x.grad for x in leaves], {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def _check_grads(got, expected, what: str) -> None:
    got_in, got_params = got
    exp_in, exp_params = expected
    if len(got_in) != len(exp_in):
        raise AssertionError(f"{what}: {len(got_in)} input gradients came back, expected {len(exp_in)}")
    for i, (g, e) in enumerate(zip(got_in, exp_in)):
        if e is not None:
            check_close(_tensor(g, f"gradient of input {i}"), e, atol=1e-5, rtol=1e-4, name=f"{what}: gradient of input {i}")
    missing = sorted(set(exp_params) - set(got_params))
    if missing:
        raise AssertionError(f"{what}: no gradient reaches {', '.join(missing[:6])}"
                             + (f" (and {len(missing) - 6} more)" if len(missing) > 6 else "")
                             + ": is a parameter unused, or a tensor detached on the way?")
    for name, e in exp_params.items():
        check_close(_tensor(got_params[name], name), e, atol=1e-5, rtol=1e-4, name=f"{what}: gradient of {name}")


# ==================================================================================================
# 1. scaled dot-product attention (grade_sdpa)
# ==================================================================================================
def _sdpa(h, q, k, v, **kwargs):
    out, w = _pair(h.call("scaled_dot_product_attention", q, k, v, **kwargs), "scaled_dot_product_attention")
    return _tensor(out, "out"), _tensor(w, "weights")


@check("grade_sdpa", "shapes, F.scaled_dot_product_attention on (3, 4, 16) queries, weights sum to 1 (the visible tests)",
       mirrors_visible=True)
def sdpa_visible(h):
    with seeded(1):
        q, k, v = torch.randn(3, 4, 16), torch.randn(3, 6, 16), torch.randn(3, 6, 5)
    out, w = _sdpa(h, q, k, v)
    check_shape(out, (3, 4, 5), "out")
    check_shape(w, (3, 4, 6), "weights")
    check_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5,
                name="out vs F.scaled_dot_product_attention")
    check_close(w.sum(-1), torch.ones(3, 4), atol=1e-5, rtol=1e-5, name="sum of the weights over the keys")


def _sdpa_trial(trial: int):
    lead = tuple(int(n) for n in torch.randint(1, 4, (int(torch.randint(0, 3, ())),)))
    Tq, Tk = int(torch.randint(1, 9, ())), int(torch.randint(1, 9, ()))
    d_k, d_v = int(torch.randint(1, 17, ())), int(torch.randint(1, 9, ()))
    dtype = torch.float64 if trial % 5 == 4 else torch.float32
    q = torch.randn(*lead, Tq, d_k, dtype=dtype)
    k = torch.randn(*lead, Tk, d_k, dtype=dtype)
    v = torch.randn(*lead, Tk, d_v, dtype=dtype)
    kind = trial % 4
    if kind == 0:
        mask, what = None, "no mask"
    elif kind == 1:  # boolean (Tq, Tk), at least one allowed key per row
        mask = torch.rand(Tq, Tk) < 0.6
        mask[torch.arange(Tq), torch.randint(0, Tk, (Tq,))] = True
        what = "boolean (Tq, Tk) mask"
    elif kind == 2:  # boolean padding mask (*lead, 1, Tk)
        mask = torch.arange(Tk) < torch.randint(1, Tk + 1, lead + (1, 1))
        what = f"boolean padding mask of shape {tuple(mask.shape)}"
    else:  # additive float mask with some -inf
        mask = torch.randn(Tq, Tk, dtype=dtype)
        mask[torch.rand(Tq, Tk) < 0.3] = float("-inf")
        mask[:, 0] = 0.0
        what = "float (additive) mask with -inf entries"
    where = f"(leading dims {lead}, Tq={Tq}, Tk={Tk}, d_k={d_k}, d_v={d_v}, {what}, {str(dtype).replace('torch.', '')})"
    return q, k, v, mask, where


@check("grade_sdpa", "matches F.scaled_dot_product_attention on random shapes, leading dims, dtypes and masks "
                     "(none, boolean, padding, additive float)")
def sdpa_random(h):
    with seeded(1234):
        trials = [_sdpa_trial(t) for t in range(24)]
    for q, k, v, mask, where in trials:
        out, w = _sdpa(h, q, k, v, mask=mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        check_shape(out, (*q.shape[:-1], v.size(-1)), f"out {where}")
        check_shape(w, (*q.shape[:-1], k.size(-2)), f"weights {where}")
        if out.dtype != q.dtype:
            raise AssertionError(f"out has dtype {out.dtype}, expected {q.dtype} like the inputs {where}")
        check_close(out, ref, atol=1e-5, rtol=1e-4, name=f"out {where}")
        check_rows_sum_to_one(w, name=f"weights {where}")
        if mask is not None:
            blocked = ~mask if mask.dtype == torch.bool else torch.isneginf(mask)
            check_zero_where(w, blocked, name=f"weights {where}", what="masked keys")
        check_close(w.double() @ v.double(), out, atol=1e-5, name=f"weights @ v vs out {where}",
                    hint="return the weights that produced the output (before dropout)")


@check("grade_sdpa", "fully masked query rows give zero weights and outputs, not NaN (boolean and -inf float masks)")
def sdpa_fully_masked(h):
    with seeded(99):
        q, k, v = torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 3)
        m = torch.rand(2, 4, 5) < 0.5
    m[0, 1] = False
    m[1, 3] = False
    m[0, 0, 0] = m[1, 0, 0] = True
    hint = "replace the NaN of softmax(-inf, ..., -inf) by 0"
    out, w = _sdpa(h, q, k, v, mask=m)
    check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), name="out with fully masked rows (boolean mask)",
                dims=("batch", "query", "channel"), hint=hint)
    check_close(w[0, 1], torch.zeros(5), name="weights of the fully masked query 1 of batch 0", hint=hint)
    check_close(w[1, 3], torch.zeros(5), name="weights of the fully masked query 3 of batch 1", hint=hint)
    fm = torch.zeros(2, 4, 5).masked_fill(~m, float("-inf"))
    out, w = _sdpa(h, q, k, v, mask=fm)
    check_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), name="out with fully -inf rows (float mask)",
                dims=("batch", "query", "channel"), hint=hint)
    check_close(w[1, 3], torch.zeros(5), name="weights of a fully -inf row (float mask)", hint=hint)


@check("grade_sdpa", "gradients with respect to q, k and v equal those of F.scaled_dot_product_attention")
def sdpa_gradients(h):
    with seeded(7):
        m2 = torch.rand(4, 6) < 0.7
        m2[:, 0] = True
        cases = [  # (q, k, v, boolean mask)
            (torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 2),
             torch.tensor([True, True, False, True, False])),
            (torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3), m2),
        ]
        grads = [torch.randn(*q.shape[:-1], v.size(-1)) for q, k, v, _ in cases]
    for (q, k, v, mask), g in zip(cases, grads):
        where = f"(q {tuple(q.shape)}, k {tuple(k.shape)}, boolean mask {tuple(mask.shape)})"
        out, w = _sdpa(h, q, k, v, mask=mask)
        check_shape(w, (*q.shape[:-1], k.size(-2)), f"weights {where}")
        _, (dq, dk, dv) = _function_vjp(h, "scaled_dot_product_attention", (q, k, v), (g, torch.zeros_like(w)), mask=mask)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        F.scaled_dot_product_attention(*leaves, attn_mask=mask).backward(g)
        for name, got, leaf in zip("qkv", (dq, dk, dv), leaves):
            check_close(_tensor(got, f"gradient of {name}"), leaf.grad, atol=1e-5, rtol=1e-4,
                        name=f"gradient with respect to {name} {where}",
                        hint="every step must be a differentiable torch operation (no .detach(), .item() or numpy)")


@check("grade_sdpa", "dropout_p > 0 drops attention weights; the returned weights are those before dropout")
def sdpa_dropout(h):
    with seeded(5):
        q, k, v = torch.randn(2, 6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    with h.substituted(**KERNEL_SEED):
        _seed_kernel(h, 5)
        o1, w1 = _sdpa(h, q, k, v)
        o2, w2 = _sdpa(h, q, k, v, dropout_p=0.5)
    if torch.allclose(o1, o2):
        raise AssertionError("dropout_p=0.5 did not change the output: apply F.dropout(weights, p=dropout_p) before @ v")
    check_close(w2, w1, name="weights returned with dropout_p=0.5", dims=("batch", "query", "key"),
                hint="return the weights before dropout")


def _sdpa_delegation_cases():
    """Inputs on which every reference attention differs bit for bit from every plain formulation
    (autograder/delegation.py): float32 ``randn``, head size 12 (not a power of 4), tens of keys;
    4-D heads with d_k == d_v (F.scaled_dot_product_attention runs its fused kernel) and 3-D with
    d_k != d_v (its math kernel)."""
    with seeded(11):
        q, k, v = torch.randn(2, 3, 16, 12), torch.randn(2, 3, 40, 12), torch.randn(2, 3, 40, 12)
        pad = (torch.arange(40) < torch.tensor([40, 27])[:, None])[:, None, None, :]  # (2, 1, 1, 40)
        q3, k3, v3 = torch.randn(4, 16, 12), torch.randn(4, 40, 12), torch.randn(4, 40, 7)
        bias = torch.randn(16, 40)
    return [(q, k, v, None, "4-D heads, no mask"), (q, k, v, pad, "4-D heads, boolean padding mask"),
            (q3, k3, v3, bias, "3-D, d_v != d_k, float mask")]


@check("grade_sdpa", "does not call F.scaled_dot_product_attention, nn.MultiheadAttention or course.nn "
                     "(source, calls, and the bits of the results)")
def sdpa_no_delegation(h):
    advice = "write softmax(q k^T / sqrt(d_k)) v with @ and softmax"
    check_no_delegation(h.source("sdpa"), {
        "scaled_dot_product_attention": advice, "multi_head_attention_forward": advice,
        "MultiheadAttention": advice, "course.nn": COURSE_NN, "reference_attention": advice,
    })
    # the bits of the results, judged here (nothing in the kernel can switch this off); asked
    # outside any h.forbidden block, in the same conditions as the other checks
    cases = _sdpa_delegation_cases()
    results = [_sdpa(h, q, k, v, mask=mask) for q, k, v, mask, _ in cases]
    for (q, k, v, mask, where), (out, w) in zip(cases, results):  # a wrong shape or dtype is no match (other checks)
        check_attention_not_delegated(out, w, q, k, v, mask, what=f"scaled_dot_product_attention ({where})",
                                      advice="implement attention yourself: " + advice)
    # the kernel-side guard: quick, and its message names the call
    with seeded(11):
        q, k, v = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    with h.forbidden(F_SDPA, F_MHA_FORWARD, "course.nn.scaled_dot_product_attention"):
        _sdpa(h, q, k, v)
        _sdpa(h, q, k, v, mask=torch.tensor([True, False, True]))


# ==================================================================================================
# 2. multi-head attention (grade_mha), graded with the reference attention of part 1
# ==================================================================================================
def _mha_weights(C: int, nh: int) -> dict:
    """Random weights with the notebook's names (course.nn's layer has the same four projections)."""
    return course.nn.MultiHeadAttention(C, nh).state_dict()


@check("grade_mha", "output and weight shapes, output equals nn.MultiheadAttention on (2, 5, 12) (the visible tests)",
       mirrors_visible=True)
def mha_visible(h):
    with seeded(2):
        sd = _mha_weights(12, 3)  # the weights a solution gets under seeded(2)
        x = torch.randn(2, 5, 12)
    with h.substituted(scaled_dot_product_attention=REF_ATTENTION):
        mha, sd = _module_like(h, "MultiHeadAttention", 12, 3, state=sd)
        out, w = _pair(mha(x, x, x, need_weights=True), "MultiHeadAttention")
    check_shape(_tensor(out, "out"), (2, 5, 12), "out")
    check_shape(_tensor(w, "weights"), (2, 3, 5, 5), "weights")
    with _quiet():
        ref_out, _ = _torch_mha(sd, 12, 3)(x, x, x, average_attn_weights=False)
    check_close(out, ref_out.detach(), atol=1e-5, rtol=1e-5, name="output vs nn.MultiheadAttention")


@check("grade_mha", "matches nn.MultiheadAttention (outputs and per-head weights) on random sizes: self- and "
                    "cross-attention with causal, key padding and combined masks")
def mha_random(h):
    trials = []
    with seeded(4321):
        for trial in range(12):
            nh = int(torch.randint(1, 5, ()))
            C = nh * int(torch.randint(1, 6, ()))
            B, Tq, Tk = int(torch.randint(1, 4, ())), int(torch.randint(1, 8, ())), int(torch.randint(1, 8, ()))
            cross = trial % 2 == 1
            Tk = Tk if cross else Tq
            sd = _mha_weights(C, nh)
            xq = torch.randn(B, Tq, C)
            xk, xv = (torch.randn(B, Tk, C), torch.randn(B, Tk, C)) if cross else (xq, xq)
            kind = trial % 4
            kpm = (torch.arange(Tk)[None, :] >= torch.randint(1, Tk + 1, (B,))[:, None]) if kind >= 2 else None
            am = ~torch.ones(Tq, Tk, dtype=torch.bool).tril() if (kind % 2 == 1 and not cross) else None
            trials.append((trial, nh, C, B, Tq, Tk, cross, sd, xq, xk, xv, kpm, am))
    with h.substituted(scaled_dot_product_attention=REF_ATTENTION), _quiet():
        for trial, nh, C, B, Tq, Tk, cross, sd, xq, xk, xv, kpm, am in trials:
            mask = None if kpm is None else (~kpm)[:, None, None, :]
            if am is not None:
                mask = ~am if mask is None else (mask & ~am)
            masks = " + ".join(m for m, on in (("key padding mask", kpm is not None), ("causal mask", am is not None)) if on)
            where = (f"({'cross' if cross else 'self'}-attention, B={B}, Tq={Tq}, Tk={Tk}, d_model={C}, "
                     f"n_heads={nh}, {masks or 'no mask'})")
            mha = _module(h, "MultiHeadAttention", C, nh, state=sd, eval_mode=False)  # dropout=0.0
            out, w = _pair(mha(xq, xk, xv, mask=mask, need_weights=True), "MultiHeadAttention")
            ref_out, ref_w = _torch_mha(sd, C, nh)(xq, xk, xv, key_padding_mask=kpm, attn_mask=am,
                                                   average_attn_weights=False)
            check_shape(_tensor(out, f"out {where}"), (B, Tq, C), f"out {where}")
            check_close(_tensor(w, f"weights {where}"), ref_w.detach(), atol=1e-5, name=f"weights {where}", dims=ATTN_DIMS,
                        hint="split heads with view(B, T, nh, hs).transpose(1, 2)")
            check_close(out, ref_out.detach(), atol=1e-5, name=f"out {where}",
                        hint="merge heads with transpose(1, 2).reshape(B, T, C) before out_proj")
            if trial % 4 == 0:
                _, none = _pair(mha(xq, xk, xv, mask=mask), "MultiHeadAttention")
                if none is not None:
                    raise AssertionError(f"need_weights=False should return None as weights, got {_what(none)}")


@check("grade_mha", "has exactly the four projections q_proj, k_proj, v_proj, out_proj (nn.Linear with bias)")
def mha_parameters(h):
    sd = h.construct("MultiHeadAttention", 8, 2).state_dict()
    expected = {f"{p}_proj.{t}": (8, 8) if t == "weight" else (8,)
                for p in ("q", "k", "v", "out") for t in ("weight", "bias")}
    got = {k: tuple(_tensor(v, k).shape) for k, v in sd.items()}
    if got != expected:
        extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        parts = ([f"missing {', '.join(missing)}"] if missing else []) \
            + ([f"unexpected {', '.join(extra)}"] if extra else []) \
            + [f"{k} has shape {got[k]}, expected {expected[k]}" for k in wrong]
        raise AssertionError("MultiHeadAttention(8, 2) should hold exactly four nn.Linear(8, 8) with bias: "
                             + "; ".join(parts))


@check("grade_mha", "dropout on the attention weights in training mode only")
def mha_dropout(h):
    with seeded(3):
        x = torch.randn(2, 6, 16)
    with h.substituted(scaled_dot_product_attention=REF_ATTENTION, **KERNEL_SEED):
        _seed_kernel(h, 3)
        mha = _module(h, "MultiHeadAttention", 16, 4, dropout=0.5, eval_mode=False)
        mha.train()
        o1, o2 = (_tensor(_pair(mha(x, x, x), "MultiHeadAttention")[0], "out") for _ in range(2))
        mha.eval()
        o3, o4 = (_tensor(_pair(mha(x, x, x), "MultiHeadAttention")[0], "out") for _ in range(2))
    if torch.allclose(o1, o2):
        raise AssertionError("MultiHeadAttention(dropout=0.5) in training mode gave the same output twice: "
                             "pass dropout_p=self.dropout to the attention while self.training")
    check_close(o4, o3, name="two outputs in eval mode",
                hint="no dropout in eval mode (dropout_p=0 unless self.training)")


@check("grade_mha", "gradients (inputs and all four projections) equal those of the reference layer")
def mha_gradients(h):
    with seeded(44):
        sd = _mha_weights(8, 2)
        xq, xk, xv = torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
        g = torch.randn(2, 3, 8)
    with h.substituted(scaled_dot_product_attention=REF_ATTENTION):
        mha = _module(h, "MultiHeadAttention", 8, 2, state=sd, eval_mode=False)
        got = mha.grads(xq, xk, xv, grad_output=g)
    ref = course.nn.MultiHeadAttention(8, 2)
    ref.load_state_dict(sd)
    _check_grads(got, _reference_grads(ref, (xq, xk, xv), g), "MultiHeadAttention")


@check("grade_mha", "does not use nn.MultiheadAttention, F.multi_head_attention_forward, "
                    "F.scaled_dot_product_attention or course.nn (source, calls, and the bits of the results)")
def mha_no_delegation(h):
    advice = "write the projections and the head reshapes yourself"
    check_no_delegation(h.source("mha"), {
        "MultiheadAttention": advice, "multi_head_attention_forward": advice,
        "F.scaled_dot_product_attention": "call your scaled_dot_product_attention",
        "functional.scaled_dot_product_attention": "call your scaled_dot_product_attention",
        "course.nn": COURSE_NN, "reference_attention": "call your scaled_dot_product_attention",
    }, follow=False)
    # the bits of the results, judged here: with the reference attention substituted (as in the
    # other checks) a MultiHeadAttention that calls it returns course.nn's fingerprinted attention
    # through its own projections, which no reference module reproduces
    C, nh = 36, 3  # head size 12: not a power of 4
    with seeded(12):
        sd = _mha_weights(C, nh)
        x, xq, xk, xv = torch.randn(2, 8, C), torch.randn(2, 7, C), torch.randn(2, 9, C), torch.randn(2, 9, C)
        pad = (torch.arange(9) < torch.tensor([9, 5])[:, None])[:, None, None, :]  # (2, 1, 1, 9)
        bias = torch.randn(7, 9)
    cases = [((x, x, x), None, False, "self-attention, no mask"),
             ((x, x, x), torch.ones(8, 8, dtype=torch.bool).tril(), True, "self-attention, causal mask, need_weights=True"),
             ((xq, xk, xv), pad, False, "cross-attention, padding mask"),
             ((xq, xk, xv), bias, True, "cross-attention, float mask, need_weights=True")]
    with h.substituted(scaled_dot_product_attention=REF_ATTENTION):
        mha = _module(h, "MultiHeadAttention", C, nh, state=sd)
        outs = [_pair(mha(*inputs, mask=mask, need_weights=nw), "MultiHeadAttention")[0] for inputs, mask, nw, _ in cases]
    for (inputs, mask, _, where), out in zip(cases, outs):
        check_not_reference(_tensor(out, f"out ({where})"), mha_references(sd, nh, *inputs, mask),
                            mha_honest(sd, nh, *inputs, mask), what=f"MultiHeadAttention's output ({where})",
                            advice="write the projections and the head reshapes yourself and call your "
                                   "scaled_dot_product_attention")
    # the kernel-side guard: quick, and its message names the call
    with seeded(12):
        x = torch.randn(1, 3, 8)
    with h.substituted(scaled_dot_product_attention=REF_ATTENTION), \
            h.forbidden(F_SDPA, F_MHA_FORWARD, "torch.nn.MultiheadAttention", REF_MHA):
        mha = _module(h, "MultiHeadAttention", 8, 2)
        mha(x, x, x, need_weights=True)
        mha(x, x, x)


# ==================================================================================================
# 3. sinusoidal positional encoding (grade_pe)
# ==================================================================================================
def _pe_reference(T: int, d: int) -> torch.Tensor:
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    i2 = torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), i2 / d)
    out = torch.zeros(T, d, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = torch.sin(ang), torch.cos(ang)
    return out


def _pe(h, T, d, *, what=None):
    return _tensor(h.call("sinusoidal_positional_encoding", T, d), what or f"sinusoidal_positional_encoding({T}, {d})")


@check("grade_pe", "shape (10, 4), channel 0 = sin(pos), channel 3 = cos(pos / 100) (the visible tests)",
       mirrors_visible=True)
def pe_visible(h):
    pe = _pe(h, 10, 4)
    check_shape(pe, (10, 4), "pe")
    pos = torch.arange(10.0)
    check_close(pe[:, 0], torch.sin(pos), atol=1e-6, rtol=1e-5, name="channel 0 (should be sin(pos))")
    check_close(pe[:, 3], torch.cos(pos / 100.0), atol=1e-6, rtol=1e-5, name="channel 3 (should be cos(pos / 10000^(2/4)))")


@check("grade_pe", "matches sin/cos(pos / 10000^(2i/d)) for random max_len and even d_model, as float32")
def pe_random(h):
    with seeded(777):
        sizes = [(int(torch.randint(1, 300, ())), 2 * int(torch.randint(1, 65, ()))) for _ in range(8)]
    for T, d in sizes + [(5, 2)]:
        pe = _pe(h, T, d)
        check_shape(pe, (T, d), f"pe (max_len={T}, d_model={d})", dims=("position", "channel"))
        if pe.dtype != torch.float32:
            raise AssertionError(f"pe (max_len={T}, d_model={d}) has dtype {pe.dtype}, expected torch.float32")
        check_close(pe, _pe_reference(T, d), atol=2e-4 if T > 5 else 1e-6, rtol=0, name=f"pe (max_len={T}, d_model={d})",
                    dims=("position", "channel"), hint="sines in channels 0, 2, 4, ..., cosines in 1, 3, 5, ...; "
                                                        "frequency 10000^(-2i/d) with 2i = 0, 2, 4, ...")


@check("grade_pe", "odd d_model raises ValueError; the table does not depend on max_len")
def pe_edge_cases(h):
    try:
        h.call("sinusoidal_positional_encoding", 8, 7)
    except StudentError as e:
        if e.type_name != "ValueError":
            raise AssertionError(f"sinusoidal_positional_encoding(8, 7) raised {e.shown_type}, expected ValueError") from None
    else:
        raise AssertionError("sinusoidal_positional_encoding(8, 7) should raise ValueError (odd d_model)")
    long, short = _pe(h, 40, 32), _pe(h, 10, 32)
    check_close(long[:10], short, atol=1e-6, name="first 10 rows of pe(40, 32) vs pe(10, 32)", dims=("position", "channel"))


@check("grade_pe", "does not use course.nn")
def pe_no_delegation(h):
    check_no_delegation(h.source("pe"), {"course.nn": COURSE_NN})
    with h.forbidden("course.nn.sinusoidal_positional_encoding"):
        _pe(h, 6, 8)


# ==================================================================================================
# 4. is_permutation_equivariant (grade_perm): the student's test is run on functions built in
#    their kernel from torch (functools.partial of torch functions, nn modules)
# ==================================================================================================
PERM_TOOLS = dict(_import="importlib.import_module", _partial="functools.partial", _attrgetter="operator.attrgetter",
                  _TransformerEncoderLayer="torch.nn.TransformerEncoderLayer", _LayerNorm="torch.nn.LayerNorm",
                  _Linear="torch.nn.Linear", _Sequential="torch.nn.Sequential", **KERNEL_SEED)


def _kernel_functions(h, module: str, *names: str) -> dict:
    getter = h.call("_attrgetter", *names)
    fns = getter(h.call("_import", module))
    fns = fns if isinstance(fns, list) else [fns]
    return dict(zip(names, fns))


def _is_eq(h, fn, x, dim, what, **kwargs) -> bool:
    got = h.call("is_permutation_equivariant", fn, x, dim=dim, **kwargs)
    if type(got) is not bool:
        raise AssertionError(f"is_permutation_equivariant should return True or False, got {_what(got)} ({what})")
    return got


@check("grade_perm", "True for 2 * t + 1, False for a cumsum over the tokens (the visible tests)", mirrors_visible=True)
def perm_visible(h):
    with seeded(3):
        x = torch.randn(2, 6, 4)
    with h.substituted(**PERM_TOOLS):
        _seed_kernel(h, 3)
        t = _kernel_functions(h, "torch", "lerp", "cumsum")
        two_t_plus_1 = h.call("_partial", t["lerp"], end=torch.tensor(-1.0), weight=-1.0)  # t - (-1 - t) = 2t + 1
        cumsum = h.call("_partial", t["cumsum"], dim=1)
        if _is_eq(h, two_t_plus_1, x, 1, "2 * t + 1") is not True:
            raise AssertionError("an elementwise function (2 * t + 1) is permutation-equivariant: expected True")
        if _is_eq(h, cumsum, x, 1, "cumsum over the tokens") is not False:
            raise AssertionError("cumsum over the tokens is not permutation-equivariant: expected False")


@check("grade_perm", "right answer for attention blocks, per-token layers, normalisations, sorting, shifts and "
                     "position-dependent functions, with the tokens on dim 0, 1 or 2")
def perm_cases(h):
    with seeded(2024):
        x = torch.randn(2, 9, 12)
        x0, x2 = torch.randn(7, 3), torch.randn(2, 3, 8)
        pe = course.nn.sinusoidal_positional_encoding(9, 12)
    future = ~torch.ones(9, 9, dtype=torch.bool).tril()  # nn's convention: True = may not attend
    with h.substituted(**PERM_TOOLS), torch.no_grad():
        _seed_kernel(h, 2024)
        t = _kernel_functions(h, "torch", "add", "mul", "roll", "flip", "msort", "tanh", "softmax", "cumsum")
        normalize = _kernel_functions(h, "torch.nn.functional", "normalize")["normalize"]
        block = h.construct("_TransformerEncoderLayer", 12, 3, 24, dropout=0.0, batch_first=True)
        per_token = h.construct("_Sequential", h.construct("_LayerNorm", 12), h.construct("_Linear", 12, 5))
        p = lambda fn, **kw: h.call("_partial", fn, **kw)  # noqa: E731
        cases = [
            ("a self-attention block (nn.TransformerEncoderLayer)", block, x, 1, True),
            ("the same block with a causal mask", p(block, src_mask=future), x, 1, False),
            ("adding a positional encoding", p(t["add"], other=pe), x, 1, False),
            ("LayerNorm + Linear on each token", per_token, x, 1, True),
            ("normalising over the tokens", p(normalize, dim=1), x, 1, True),
            ("shifting by one token (torch.roll)", p(t["roll"], shifts=1, dims=1), x, 1, False),
            ("reversing the tokens (torch.flip)", p(t["flip"], dims=[1]), x, 1, False),
            ("tanh, tokens on dim 0", t["tanh"], x0, 0, True),
            ("sorting along the tokens, tokens on dim 0", t["msort"], x0, 0, False),
            ("weighting by position, tokens on dim 0", p(t["mul"], other=torch.arange(7.0)[:, None]), x0, 0, False),
            ("softmax over the tokens, tokens on dim 2", p(t["softmax"], dim=2), x2, 2, True),
            ("cumsum over the tokens, tokens on dim 2", p(t["cumsum"], dim=2), x2, 2, False),
        ]
        for what, fn, inp, dim, expected in cases:
            got = _is_eq(h, fn, inp, dim, what)
            if got is not expected:
                raise AssertionError(f"{what} (tokens on dim {dim}): your test says {got}, expected {expected}")


@check("grade_perm", "differences below atol count as equal, above atol as different")
def perm_atol(h):
    with seeded(5):
        x = torch.randn(2, 9, 12)
    ramp = torch.arange(9.0)[:, None]
    with h.substituted(**PERM_TOOLS), torch.no_grad():
        _seed_kernel(h, 5)
        add = _kernel_functions(h, "torch", "add")["add"]
        tiny = h.call("_partial", add, other=1e-7 * ramp)
        big = h.call("_partial", add, other=1e-3 * ramp)
        if _is_eq(h, tiny, x, 1, "tiny ramp", atol=1e-5) is not True:
            raise AssertionError("t + 1e-7 * position with atol=1e-5: the differences are below atol, expected True")
        if _is_eq(h, big, x, 1, "ramp", atol=1e-5) is not False:
            raise AssertionError("t + 1e-3 * position with atol=1e-5: the differences are above atol, expected False")


# ==================================================================================================
# 5. causal mask (grade_causal)
# ==================================================================================================
def _mask(h, T, *args, **kwargs) -> torch.Tensor:
    m = _tensor(h.call("causal_mask", T, *args, **kwargs), f"causal_mask({T})")
    if m.dtype != torch.bool:
        raise AssertionError(f"causal_mask({T}) has dtype {m.dtype}, expected torch.bool")
    check_shape(m, (T, T), f"causal_mask({T})", dims=("query", "key"))
    return m


def _expected_mask(T: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    return j <= i


@check("grade_causal", "causal_mask(3) is a (3, 3) bool tensor, lower-triangular (the visible tests)", mirrors_visible=True)
def causal_visible(h):
    m = _mask(h, 3)
    if m.tolist() != [[True, False, False], [True, True, False], [True, True, True]]:
        raise AssertionError(f"causal_mask(3) is {m.tolist()}, expected True exactly where key j <= query i")


@check("grade_causal", "True exactly where key j <= query i, for T = 1, 2, 5, 17, 64; accepts a device argument")
def causal_sizes(h):
    for T in (1, 2, 5, 17, 64):
        m = _mask(h, T)
        if not torch.equal(m, _expected_mask(T)):
            bad = (m != _expected_mask(T)).nonzero()[0].tolist()
            raise AssertionError(f"causal_mask({T}) is wrong at query {bad[0]}, key {bad[1]}: "
                                 "it should be True exactly where key j <= query i")
    with h.substituted(_device="torch.device"):
        cpu = h.call("_device", "cpu")
        for dev, what in (("cpu", "device='cpu'"), (cpu, "device=torch.device('cpu')")):
            m = _mask(h, 4, device=dev)
            if not torch.equal(m, _expected_mask(4)):
                raise AssertionError(f"causal_mask(4, {what}) differs from causal_mask(4)")


@check("grade_causal", "makes nn.MultiheadAttention causal when passed as ~causal_mask(T)")
def causal_with_torch_mha(h):
    m = _mask(h, 7)
    with seeded(55), _quiet():
        ref = nn.MultiheadAttention(8, 2, batch_first=True).eval()
        x = torch.randn(2, 7, 8)
        check_causal(lambda t: ref(t, t, t, attn_mask=~m, need_weights=False)[0], x, dim=1,
                     name="nn.MultiheadAttention with attn_mask=~causal_mask(7)")


# ==================================================================================================
# 6. encoder and decoder blocks, graded with the reference MultiHeadAttention (course.nn)
# ==================================================================================================
def _encoder_state(C, nh, d_ff, norm_first) -> dict:
    return _randomize_norms(_EncoderBlock(C, nh, d_ff, 0.0, norm_first)).state_dict()


def _decoder_state(C, nh, d_ff, norm_first) -> dict:
    return _randomize_norms(_DecoderBlock(C, nh, d_ff, 0.0, norm_first)).state_dict()


@check("grade_encoder_block", "EncoderBlock(8, 2, 16) equals nn.TransformerEncoderLayer, post-norm and pre-norm "
                              "(the visible tests)", mirrors_visible=True)
def encoder_visible(h):
    cases = []
    with seeded(6):  # the weights and inputs of the visible cell
        for norm_first in (False, True):
            cases.append((norm_first, _encoder_state(8, 2, 16, norm_first), torch.randn(2, 4, 8)))
    with h.substituted(MultiHeadAttention=REF_MHA), _quiet():
        for norm_first, sd, x in cases:
            enc, sd = _module_like(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=norm_first, state=sd)
            out = _tensor(enc(x), "EncoderBlock output")
            check_shape(out, (2, 4, 8), "EncoderBlock output", dims=TOKEN_DIMS)
            ref = _torch_encoder_layer(sd, 8, 2, 16, norm_first)(x).detach()
            check_close(out, ref, atol=1e-5, rtol=1e-5, name=f"EncoderBlock(norm_first={norm_first}) output",
                        dims=TOKEN_DIMS)


@check("grade_encoder_block", "matches nn.TransformerEncoderLayer with and without a source padding mask "
                              "(random sizes, post-norm and pre-norm, eval mode)")
def encoder_random(h):
    trials = []
    with seeded(6006):
        for trial in range(6):
            nh = int(torch.randint(1, 4, ()))
            C = nh * int(torch.randint(2, 6, ()))
            d_ff = int(torch.randint(4, 40, ()))
            B, S = int(torch.randint(1, 4, ())), int(torch.randint(2, 9, ()))
            norm_first = bool(trial % 2)
            sd = _encoder_state(C, nh, d_ff, norm_first)
            x = torch.randn(B, S, C)
            pad = torch.arange(S)[None, :] >= torch.randint(1, S + 1, (B,))[:, None]  # True = pad
            trials.append((nh, C, d_ff, B, S, norm_first, sd, x, pad))
    with h.substituted(MultiHeadAttention=REF_MHA), _quiet():
        for trial, (nh, C, d_ff, B, S, norm_first, sd, x, pad) in enumerate(trials):
            # dropout=0.2 in eval mode in two trials (eval() must switch every dropout off), 0.0 in the others
            p = 0.2 if trial < 2 else 0.0
            where = (f"(B={B}, S={S}, d_model={C}, n_heads={nh}, d_ff={d_ff}, norm_first={norm_first}, "
                     f"dropout={p}, eval mode)")
            enc = _module(h, "EncoderBlock", C, nh, d_ff, dropout=p, norm_first=norm_first, state=sd, eval_mode=p > 0)
            ref = _torch_encoder_layer(sd, C, nh, d_ff, norm_first)
            out = _tensor(enc(x, mask=(~pad)[:, None, None, :]), "EncoderBlock output")
            check_close(out, ref(x, src_key_padding_mask=pad).detach(), atol=1e-5,
                        name=f"EncoderBlock output with a padding mask {where}", dims=TOKEN_DIMS)
            check_close(_tensor(enc(x), "EncoderBlock output"), ref(x).detach(), atol=1e-5,
                        name=f"EncoderBlock output without a mask {where}", dims=TOKEN_DIMS)


@check("grade_encoder_block", "dropout active in training mode only; gradients equal those of the reference block")
def encoder_dropout_and_gradients(h):
    with seeded(61):
        x = torch.randn(2, 5, 8)
        sd = _encoder_state(8, 2, 16, False)
        g = torch.randn(2, 5, 8)
    with h.substituted(MultiHeadAttention=REF_MHA, **KERNEL_SEED):
        _seed_kernel(h, 61)
        enc = _module(h, "EncoderBlock", 8, 2, 16, dropout=0.5, norm_first=True, eval_mode=False)
        enc.train()
        o1, o2 = _tensor(enc(x), "output"), _tensor(enc(x), "output")
        enc.eval()
        o3, o4 = _tensor(enc(x), "output"), _tensor(enc(x), "output")
        blk = _module(h, "EncoderBlock", 8, 2, 16, dropout=0.0, norm_first=False, state=sd, eval_mode=False)
        got = blk.grads(x, grad_output=g)
    if torch.allclose(o1, o2):
        raise AssertionError("EncoderBlock(dropout=0.5) in training mode gave the same output twice: "
                             "use the dropout modules (dropout, dropout1, dropout2)")
    check_close(o4, o3, name="two outputs in eval mode", dims=TOKEN_DIMS)
    ref = _EncoderBlock(8, 2, 16, 0.0, False)
    ref.load_state_dict(sd)
    _check_grads(got, _reference_grads(ref, (x,), g), "EncoderBlock(norm_first=False)")


_BLOCK_ADVICE = "build the block from your own sublayers (MultiHeadAttention, nn.Linear, nn.LayerNorm)"


@check("grade_encoder_block", "does not use nn.TransformerEncoderLayer, nn.MultiheadAttention or course.nn "
                              "(source, and the bits of the results)")
def encoder_no_delegation(h):
    check_no_delegation(h.source("encoder_block"), {
        "TransformerEncoderLayer": "write the sublayers with your own modules",
        "MultiheadAttention": "use your MultiHeadAttention", "course.nn": COURSE_NN,
    })
    # the bits, judged here: with course.nn's (fingerprinted) MultiHeadAttention substituted, an
    # EncoderBlock built from it cannot return what PyTorch's encoder layer returns
    # (one case: post-norm; the decoder's check takes pre-norm; each request costs a kernel round trip)
    C, nh, d_ff = 36, 3, 40
    cases = []
    with seeded(62):
        for norm_first in (False,):
            sd = _encoder_state(C, nh, d_ff, norm_first)
            x = torch.randn(2, 6, C)
            pad = (torch.arange(6) < torch.tensor([6, 4])[:, None])[:, None, None, :]
            cases.append((norm_first, sd, x, pad))
    with h.substituted(MultiHeadAttention=REF_MHA):
        outs = [_module(h, "EncoderBlock", C, nh, d_ff, dropout=0.0, norm_first=nf, state=sd)(x, mask=pad)
                for nf, sd, x, pad in cases]
    for (norm_first, sd, x, pad), out in zip(cases, outs):
        where = f"EncoderBlock(norm_first={norm_first}) with a padding mask"
        out = _tensor(out, where)
        ref = _EncoderBlock(C, nh, d_ff, 0.0, norm_first)
        ref.load_state_dict(sd)
        with torch.no_grad():
            honest = {"EncoderBlock built from MultiHeadAttention": ref.eval()(x, pad)}
        check_not_reference(out, encoder_references(sd, nh, d_ff, norm_first, x, pad), honest,
                            what=f"the output of {where}", advice=_BLOCK_ADVICE)


@check("grade_decoder_block", "DecoderBlock(8, 2, 16) with a causal tgt_mask equals nn.TransformerDecoderLayer, "
                              "post-norm and pre-norm (the visible tests)", mirrors_visible=True)
def decoder_visible(h):
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    cases = []
    with seeded(7):
        for norm_first in (False, True):
            sd = _decoder_state(8, 2, 16, norm_first)
            cases.append((norm_first, sd, torch.randn(2, 4, 8), torch.randn(2, 3, 8)))
    with h.substituted(MultiHeadAttention=REF_MHA), _quiet():
        for norm_first, sd, y, memory in cases:
            dec, sd = _module_like(h, "DecoderBlock", 8, 2, 16, dropout=0.0, norm_first=norm_first, state=sd)
            out = _tensor(dec(y, memory, tgt_mask=causal), "DecoderBlock output")
            check_shape(out, (2, 4, 8), "DecoderBlock output", dims=TOKEN_DIMS)
            ref = _torch_decoder_layer(sd, 8, 2, 16, norm_first)(y, memory, tgt_mask=~causal).detach()
            check_close(out, ref, atol=1e-5, rtol=1e-5, name=f"DecoderBlock(norm_first={norm_first}) output",
                        dims=TOKEN_DIMS)


@check("grade_decoder_block", "matches nn.TransformerDecoderLayer with causal and source padding masks, and without "
                              "masks (random sizes, post-norm and pre-norm); cross_attn_weights stored, detached, "
                              "zero on source padding")
def decoder_random(h):
    trials = []
    with seeded(7007):
        for trial in range(6):
            nh = int(torch.randint(1, 4, ()))
            C = nh * int(torch.randint(2, 6, ()))
            d_ff = int(torch.randint(4, 40, ()))
            B, S, T = int(torch.randint(1, 4, ())), int(torch.randint(2, 9, ())), int(torch.randint(1, 8, ()))
            norm_first = bool(trial % 2)
            sd = _decoder_state(C, nh, d_ff, norm_first)
            y, memory = torch.randn(B, T, C), torch.randn(B, S, C)
            pad = torch.arange(S)[None, :] >= torch.randint(1, S + 1, (B,))[:, None]
            trials.append((nh, C, d_ff, B, S, T, norm_first, sd, y, memory, pad))
    with h.substituted(MultiHeadAttention=REF_MHA, _attrgetter="operator.attrgetter"), _quiet():
        grad_flag = h.call("_attrgetter", "cross_attn_weights.requires_grad")
        for trial, (nh, C, d_ff, B, S, T, norm_first, sd, y, memory, pad) in enumerate(trials):
            p = 0.2 if trial < 2 else 0.0  # as in encoder_random
            where = f"(B={B}, T={T}, S={S}, d_model={C}, n_heads={nh}, norm_first={norm_first}, dropout={p}, eval mode)"
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            dec = _module(h, "DecoderBlock", C, nh, d_ff, dropout=p, norm_first=norm_first, state=sd, eval_mode=p > 0)
            ref = _torch_decoder_layer(sd, C, nh, d_ff, norm_first)
            out = _tensor(dec(y, memory, tgt_mask=causal, memory_mask=(~pad)[:, None, None, :]), "DecoderBlock output")
            check_close(out, ref(y, memory, tgt_mask=~causal, memory_key_padding_mask=pad).detach(), atol=1e-5,
                        name=f"DecoderBlock output with causal and padding masks {where}", dims=TOKEN_DIMS)
            w = _tensor(dec.attr("cross_attn_weights"), "DecoderBlock.cross_attn_weights")
            check_shape(w, (B, nh, T, S), f"cross_attn_weights {where}", dims=ATTN_DIMS)
            check_rows_sum_to_one(w, name=f"cross_attn_weights {where}", dims=ATTN_DIMS)
            check_zero_where(w, pad[:, None, None, :], name=f"cross_attn_weights {where}", what="source padding",
                             dims=ATTN_DIMS)
            if trial == 0 and grad_flag(dec) is not False:
                raise AssertionError("store the cross-attention weights detached (weights.detach())")
            if trial % 2 == 1:  # every other trial: the mask=None paths
                check_close(_tensor(dec(y, memory), "DecoderBlock output"), ref(y, memory).detach(), atol=1e-5,
                            name=f"DecoderBlock output without masks {where}", dims=TOKEN_DIMS)


@check("grade_decoder_block", "with a causal tgt_mask, the output at position t does not depend on later positions")
def decoder_causal(h):
    with seeded(71):
        sd = _decoder_state(8, 2, 16, True)
        y, memory = torch.randn(2, 6, 8), torch.randn(2, 4, 8)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with h.substituted(MultiHeadAttention=REF_MHA):
        dec = _module(h, "DecoderBlock", 8, 2, 16, dropout=0.0, norm_first=True, state=sd)
        _causal_batched(lambda t, mem: dec(t, mem, tgt_mask=causal), y, repeat=(memory,),
                        name="DecoderBlock(norm_first=True) with tgt_mask=causal_mask(6)")


@check("grade_decoder_block", "dropout active in training mode only; gradients (decoder input, encoder memory, "
                              "every parameter) equal those of the reference block")
def decoder_dropout_and_gradients(h):
    with seeded(72):
        y, memory = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
        sd = _decoder_state(8, 2, 16, True)
        g = torch.randn(2, 5, 8)
    with h.substituted(MultiHeadAttention=REF_MHA, **KERNEL_SEED):
        _seed_kernel(h, 72)
        dec = _module(h, "DecoderBlock", 8, 2, 16, dropout=0.5, eval_mode=False)
        dec.train()
        o1, o2 = _tensor(dec(y, memory), "output"), _tensor(dec(y, memory), "output")
        dec.eval()
        o3, o4 = _tensor(dec(y, memory), "output"), _tensor(dec(y, memory), "output")
        blk = _module(h, "DecoderBlock", 8, 2, 16, dropout=0.0, norm_first=True, state=sd, eval_mode=False)
        got = blk.grads(y, memory, grad_output=g)
    if torch.allclose(o1, o2):
        raise AssertionError("DecoderBlock(dropout=0.5) in training mode gave the same output twice: "
                             "use the dropout modules (dropout, dropout1, dropout2, dropout3)")
    check_close(o4, o3, name="two outputs in eval mode", dims=TOKEN_DIMS)
    ref = _DecoderBlock(8, 2, 16, 0.0, True)
    ref.load_state_dict(sd)
    _check_grads(got, _reference_grads(ref, (y, memory), g), "DecoderBlock(norm_first=True)")


@check("grade_decoder_block", "does not use nn.TransformerDecoderLayer, nn.MultiheadAttention or course.nn "
                              "(source, and the bits of the results)")
def decoder_no_delegation(h):
    check_no_delegation(h.source("decoder_block"), {
        "TransformerDecoderLayer": "write the sublayers with your own modules",
        "MultiheadAttention": "use your MultiHeadAttention", "course.nn": COURSE_NN,
    })
    C, nh, d_ff = 36, 3, 40  # as in encoder_no_delegation, pre-norm here
    cases = []
    with seeded(73):
        for norm_first in (True,):
            sd = _decoder_state(C, nh, d_ff, norm_first)
            y, memory = torch.randn(2, 5, C), torch.randn(2, 6, C)
            pad = (torch.arange(6) < torch.tensor([6, 4])[:, None])[:, None, None, :]
            cases.append((norm_first, sd, y, memory, pad))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    with h.substituted(MultiHeadAttention=REF_MHA):
        outs = [_module(h, "DecoderBlock", C, nh, d_ff, dropout=0.0, norm_first=nf, state=sd)(
            y, memory, tgt_mask=causal, memory_mask=pad) for nf, sd, y, memory, pad in cases]
    for (norm_first, sd, y, memory, pad), out in zip(cases, outs):
        where = f"DecoderBlock(norm_first={norm_first}) with causal and padding masks"
        out = _tensor(out, where)
        ref = _DecoderBlock(C, nh, d_ff, 0.0, norm_first)
        ref.load_state_dict(sd)
        with torch.no_grad():
            honest = {"DecoderBlock built from MultiHeadAttention": ref.eval()(y, memory, causal, pad)}
        check_not_reference(out, decoder_references(sd, nh, d_ff, norm_first, y, memory, causal, pad), honest,
                            what=f"the output of {where}", advice=_BLOCK_ADVICE)


# ==================================================================================================
# 7. the Transformer (grade_transformer), graded with the reference attention, positional encoding
#    and causal mask (course.nn) and the student's own blocks
# ==================================================================================================
def _random_batch(B, L, V, pad=0):
    lengths = torch.randint(2, L + 1, (B,))
    lengths[0] = L
    x = torch.randint(4, V, (B, L))
    x[:, 0] = 2
    x[torch.arange(B), lengths - 1] = 3
    x[torch.arange(L)[None, :] >= lengths[:, None]] = pad
    return x, lengths


def _transformer(h, cfg: _Config, state=None) -> RemoteObject:
    """The student's Transformer with the student's TransformerConfig, weights ``state`` (made here)."""
    config = h.construct("TransformerConfig", **cfg.kwargs())
    return _module(h, "Transformer", config, state=state)


def _shared_transformer(h, cfg: _Config, state: dict) -> RemoteObject:
    """:func:`_transformer`, built once per grade cell for the checks that only read the model
    (the handle lives for one cell's checks; its kernel objects are cleared after them)."""
    cache = h.__dict__.setdefault("_transformers_02", {})
    key = repr(cfg)
    if key not in cache:
        cache[key] = _transformer(h, cfg, state)
    return cache[key]


def _transformer_state(cfg: _Config) -> dict:
    return _randomize_norms(_Transformer(cfg)).state_dict()


def _transformer_cases():
    cases = []
    with seeded(8080):
        for trial, norm_first in enumerate((True, False)):
            cfg = _Config(12 + trial, 14, d_model=16, n_heads=2, n_layers=2, d_ff=24, dropout=0.3,
                          norm_first=norm_first, tie_weights=trial == 0, max_len=20)
            sd = _transformer_state(cfg)
            src, src_len = _random_batch(3, 7, cfg.src_vocab_size)
            tgt, tgt_len = _random_batch(3, 6, cfg.tgt_vocab_size)
            cases.append((cfg, sd, src, src_len, tgt, tgt_len))
    return cases


def _logits(x, shape, what) -> torch.Tensor:
    check_shape(_tensor(x, what), shape, what, dims=("batch", "position", "vocab"))
    return x


@check("grade_transformer", "logits of shape (1, 3, 10) (the visible tests)", mirrors_visible=True)
def transformer_visible(h):
    cfg = _Config(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16)
    with h.substituted(**REF_PARTS):
        model = _transformer(h, cfg)
        _logits(model(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]])), (1, 3, 10), "logits")


@check("grade_transformer", "padded batches: finite logits, decode(tgt, encode(src), src) equals forward, each sentence "
                            "alone gives its rows of the padded batch, extra padding changes nothing")
def transformer_padding(h):
    with h.substituted(**REF_PARTS):
        for cfg, sd, src, src_len, tgt, tgt_len in _transformer_cases():
            nf = f"norm_first={cfg.norm_first}"
            model = _shared_transformer(h, cfg, sd)
            B, S, T, V = *src.shape, tgt.size(1), cfg.tgt_vocab_size
            logits = _logits(model(src, tgt), (B, T, V), f"logits ({nf})")
            if not torch.isfinite(logits).all():
                raise AssertionError(f"logits ({nf}) contain NaN or inf")
            memory = _tensor(model.call_method("encode", src), "encode(src)")
            check_shape(memory, (B, S, cfg.d_model), f"encode(src) ({nf})", dims=TOKEN_DIMS)
            check_close(_tensor(model.call_method("decode", tgt, memory, src), "decode(tgt, memory, src)"), logits,
                        atol=1e-5, name=f"decode(tgt, encode(src), src) vs forward(src, tgt) ({nf})")
            for b in range(1, B):  # sentence 0 has no padding (full length): it is its own batch row
                s, t = src[b:b + 1, : src_len[b]], tgt[b:b + 1, : tgt_len[b]]
                alone = _logits(model(s, t), (1, int(tgt_len[b]), V), f"logits of sentence {b} alone")
                check_close(alone[0], logits[b, : tgt_len[b]], atol=1e-5,
                            name=f"logits of sentence {b} alone vs in the padded batch ({nf})",
                            dims=("position", "vocab"),
                            hint="mask the source padding in the encoder self-attention AND the decoder cross-attention; "
                                 "the decoder self-attention needs causal_mask(T), or real target tokens see the padding "
                                 "after them")
            src_more = torch.cat([src, torch.zeros(B, 3, dtype=torch.long)], 1)
            tgt_more = torch.cat([tgt, torch.zeros(B, 2, dtype=torch.long)], 1)
            more = _logits(model(src_more, tgt_more), (B, T + 2, V), "logits with extra padding")
            check_close(more[:, :T], logits, atol=1e-5, name=f"logits with 3 extra source and 2 extra target padding "
                                                            f"columns ({nf})", dims=("batch", "position", "vocab"))


@check("grade_transformer", "causal over the target: logits at position t do not depend on target tokens after t")
def transformer_causal(h):
    with h.substituted(**REF_PARTS):
        for cfg, sd, src, _, tgt, _ in _transformer_cases():
            model = _shared_transformer(h, cfg, sd)
            _causal_batched(lambda t, s: model(s, t), tgt, repeat=(src,),
                            name=f"Transformer over the target positions (norm_first={cfg.norm_first})")


@check("grade_transformer", "structure: n_layers EncoderBlocks and DecoderBlocks, final LayerNorms for pre-norm "
                            "(nn.Identity for post-norm), pe not saved in the state dict, weight tying as configured")
def transformer_structure(h):
    # one substitution block: leaving a nested one would restore every substituted name (the agent keeps one list)
    with h.substituted(**REF_PARTS, _dict="builtins.dict"):
        for cfg, sd, src, _, tgt, _ in _transformer_cases():
            nf = f"norm_first={cfg.norm_first}"
            model = _shared_transformer(h, cfg, sd)
            keys = set(model.state_dict())
            children = model.attr("_modules")
            if not isinstance(children, dict):
                raise AssertionError("could not read the submodules of Transformer")
            for name, kind in (("encoder", "EncoderBlock"), ("decoder", "DecoderBlock")):
                blocks = children[name].attr("_modules") if isinstance(children.get(name), RemoteObject) else None
                if not isinstance(blocks, dict):
                    raise AssertionError(f"Transformer.{name} should be an nn.ModuleList of {kind}s")
                types = [b.type_name if isinstance(b, RemoteObject) else _what(b) for b in blocks.values()]
                if types != [kind] * cfg.n_layers:
                    raise AssertionError(f"Transformer.{name} holds {types}, "
                                         f"expected {cfg.n_layers} {kind}s (n_layers={cfg.n_layers})")
            want = "LayerNorm" if cfg.norm_first else "Identity"
            for name in ("enc_norm", "dec_norm"):
                got = children.get(name)
                got = got.type_name if isinstance(got, RemoteObject) else _what(got)
                if got != want:
                    raise AssertionError(f"{name} is {got}, expected nn.{want} for {nf}")
            if "pe" in keys:
                raise AssertionError("the positional encoding is in the state dict: register it with persistent=False")
            names = set(h.call("_dict", model.call_method("named_parameters")))  # a shared parameter appears once
            tied = not {"generator.weight", "tgt_embed.weight"} <= names
            if tied != cfg.tie_weights:
                raise AssertionError(f"tie_weights={cfg.tie_weights}, but generator.weight "
                                     f"{'is' if tied else 'is not'} the same parameter as tgt_embed.weight ({nf})")
            _, grads = model.grads(src, tgt, grad_output=torch.ones(*tgt.shape, cfg.tgt_vocab_size))
            unused = sorted(n for n in names if n not in grads)
            if unused:
                raise AssertionError(f"no gradient reaches {', '.join(unused[:5])} ({nf}): is a module unused, "
                                     "or a tensor detached?")


@check("grade_transformer", "embeddings scaled by sqrt(d_model) plus the positional encoding, then the generator "
                            "(a model with n_layers=0)")
def transformer_embeddings(h):
    cfg = _Config(10, 11, d_model=16, n_heads=2, n_layers=0, d_ff=8, dropout=0.0, norm_first=False,
                  tie_weights=False, max_len=8)
    with seeded(81):
        sd = _transformer_state(cfg)
        src, _ = _random_batch(2, 5, 10)
        tgt, _ = _random_batch(2, 4, 11)
    pe = _pe_reference(8, 16).float()
    want_memory = sd["src_embed.weight"][src] * 4.0 + pe[:5]  # sqrt(16) = 4
    want_logits = F.linear(sd["tgt_embed.weight"][tgt] * 4.0 + pe[:4], sd["generator.weight"], sd["generator.bias"])
    with h.substituted(**REF_PARTS):
        model = _transformer(h, cfg, sd)
        memory = _tensor(model.call_method("encode", src), "encode(src)")
        check_close(memory, want_memory, atol=1e-4, name="encoder input sqrt(d_model) * src_embed(src) + pe[:S]",
                    dims=TOKEN_DIMS, hint="scale the embeddings by sqrt(d_model) and add pe[:S] (same for the target)")
        logits = _tensor(model.call_method("decode", tgt, want_memory, src), "decode(tgt, memory, src)")
        check_close(logits, want_logits, atol=1e-4, name="generator(sqrt(d_model) * tgt_embed(tgt) + pe[:T])",
                    dims=("batch", "position", "vocab"))


@check("grade_transformer", "dropout active in training mode")
def transformer_dropout(h):
    cfg, sd, src, _, tgt, _ = _transformer_cases()[0]
    with h.substituted(**REF_PARTS, **KERNEL_SEED):
        _seed_kernel(h, 82)
        model = _transformer(h, cfg, sd)
        model.train()
        a, b = _tensor(model(src, tgt), "logits"), _tensor(model(src, tgt), "logits")
    if torch.allclose(a, b):
        raise AssertionError("Transformer(dropout=0.3) in training mode gave the same logits twice: "
                             "apply self.dropout to the embeddings and pass dropout to the blocks")


@check("grade_transformer", "does not use nn.Transformer, nn.TransformerEncoder/Decoder or course.nn")
def transformer_no_delegation(h):
    advice = "build the model from your blocks"
    check_no_delegation(h.source("transformer"), {
        "nn.Transformer": advice, "nn.TransformerEncoder": advice, "nn.TransformerDecoder": advice,
        "nn.TransformerEncoderLayer": advice, "nn.TransformerDecoderLayer": advice, "course.nn": COURSE_NN,
    })
    cfg = _Config(9, 10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=16)
    with h.substituted(**REF_PARTS), h.forbidden("torch.nn.Transformer", "torch.nn.TransformerEncoder",
                                                 "torch.nn.TransformerDecoder", "torch.nn.TransformerEncoderLayer",
                                                 "torch.nn.TransformerDecoderLayer"):
        model = _transformer(h, cfg)
        model(torch.tensor([[2, 4, 5, 3]]), torch.tensor([[2, 6, 7]]))


# ==================================================================================================
# 8. greedy decoding (grade_greedy), on the planted CountingModel of the locked helper cell
# ==================================================================================================
def _counting_greedy(src: torch.Tensor, V: int, max_len: int, bos: int, eos: int) -> list[list[int]]:
    """What greedy decoding of CountingModel gives, one sentence at a time: next = (last + src[b, 1]) % V."""
    out = []
    for b in range(src.size(0)):
        step, ys = int(src[b, 1]), [bos]
        for _ in range(max_len):
            ys.append((ys[-1] + step) % V)
            if ys[-1] == eos:
                break
        out.append(ys)
    return out


def _greedy(h, V, src, max_len, bos, eos, pad, where):
    model = h.construct("CountingModel", V)
    out = h.call("greedy_decode", model, src, max_len=max_len, bos=bos, eos=eos, pad=pad)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.long:
        raise AssertionError(f"greedy_decode should return a LongTensor, got {_what(out)}"
                             + (f" of dtype {out.dtype}" if isinstance(out, torch.Tensor) else "") + f" {where}")
    expected = _counting_greedy(src, V, max_len, bos, eos)
    L = max(len(e) for e in expected)
    if tuple(out.shape) != (src.size(0), L):
        raise AssertionError(f"output shape {tuple(out.shape)}, expected {(src.size(0), L)}: BOS, at most max_len tokens, "
                             f"and no column after every sentence has finished {where}")
    for b, e in enumerate(expected):
        got = out[b].tolist()
        if got[: len(e)] != e or any(t != pad for t in got[len(e):]):
            raise AssertionError(f"sentence {b}: got {got}, expected {e}" + (f" then {pad}s" if len(e) < L else "")
                                 + f" {where}")
    return model, L


@check("grade_greedy", "a sentence whose first token is EOS gives [[2, 3]] (the visible test)", mirrors_visible=True)
def greedy_visible(h):
    _greedy(h, 7, torch.tensor([[2, 1, 3]]), 5, 2, 3, 0, "(CountingModel(7), src [[2, 1, 3]], max_len=5)")


@check("grade_greedy", "batched greedy decoding equals one-sentence-at-a-time decoding: stops at EOS, pads after it, "
                       "encodes once, no extra decode steps")
def greedy_random(h):
    with seeded(31337):
        trials = []
        for _ in range(10):
            V, B = int(torch.randint(6, 20, ())), int(torch.randint(1, 6, ()))
            src = torch.full((B, 3), 3)
            src[:, 0] = 2
            src[:, 1] = torch.randint(1, V, (B,))
            trials.append((V, src, int(torch.randint(1, 12, ()))))
    with h.substituted(_attrgetter="operator.attrgetter"):
        counters = h.call("_attrgetter", "n_encode", "n_decode")  # both counters in one request
        for V, src, max_len in trials:
            where = f"(V={V}, batch of {src.size(0)}, max_len={max_len}, bos=2, eos=3, pad=0)"
            model, L = _greedy(h, V, src, max_len, 2, 3, 0, where)
            n_encode, n_decode = counters(model)
            if n_encode != 1:
                raise AssertionError(f"model.encode was called {n_encode} times, expected once {where}")
            if not isinstance(n_decode, int) or n_decode > L - 1:
                raise AssertionError(f"model.decode was called {n_decode} times for {L - 1} generated tokens: "
                                     f"stop as soon as every sentence has finished {where}")


@check("grade_greedy", "exactly max_len new tokens when no EOS comes; other bos/eos/pad ids")
def greedy_edge_cases(h):
    _greedy(h, 9, torch.tensor([[2, 2, 3]] * 2), 3, 2, 3, 0, "(no EOS within max_len=3)")
    _greedy(h, 10, torch.tensor([[5, 1, 5], [5, 3, 5]]), 6, 5, 7, 9, "(bos=5, eos=7, pad=9)")


# ==================================================================================================
# 9. the teacher-forcing loss (grade_loss), on the planted FixedLogits of the locked helper cell
# ==================================================================================================
def _fixed_logits(V: int, seed: int, B: int, T: int) -> torch.Tensor:
    """What FixedLogits(V, seed) returns for a (B, T) decoder input."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g, dtype=torch.float64).float()


def _loss(h, V, seed, src, tgt, **kwargs):
    model = h.construct("FixedLogits", V, seed=seed)
    batch = h.construct("TranslationBatch", src=src, tgt=tgt)
    loss = h.call("translation_loss", model, batch, **kwargs)
    if not isinstance(loss, torch.Tensor):
        raise AssertionError(f"translation_loss should return a tensor (to call .backward() on), got {_what(loss)}")
    if loss.dim() != 0:
        raise AssertionError(f"the loss should be a scalar, got shape {tuple(loss.shape)}")
    return model, loss


@check("grade_loss", "equals F.cross_entropy on a one-sentence batch without label smoothing (the visible test)",
       mirrors_visible=True)
def loss_visible(h):
    src, tgt = torch.tensor([[2, 5, 3]]), torch.tensor([[2, 4, 3]])
    _, loss = _loss(h, 6, 0, src, tgt, label_smoothing=0.0)
    expected = F.cross_entropy(_fixed_logits(6, 0, 1, 2)[0], torch.tensor([4, 3]))
    check_close(loss, expected, atol=1e-5, rtol=1e-5, name="loss without label smoothing")


@check("grade_loss", "teacher forcing (model gets src and tgt[:, :-1]), padding ignored, label smoothing, other "
                     "pad ids: equals the smoothed cross-entropy on random batches")
def loss_random(h):
    trials = []
    with seeded(4242):
        for trial in range(8):
            V = int(torch.randint(5, 30, ()))
            B, T = int(torch.randint(1, 5, ())), int(torch.randint(2, 9, ()))
            pad_id = 0 if trial % 3 else 1
            tgt = torch.randint(2, V, (B, T))
            lengths = torch.randint(2, T + 1, (B,))
            tgt[torch.arange(T)[None, :] >= lengths[:, None]] = pad_id
            src = torch.randint(2, V, (B, 5))
            trials.append((trial, V, B, T, pad_id, [0.0, 0.1, 0.2][trial % 3], src, tgt))
    for trial, V, B, T, pad_id, eps, src, tgt in trials:
        where = f"(V={V}, B={B}, T={T}, pad_id={pad_id}, label_smoothing={eps})"
        model, loss = _loss(h, V, trial, src, tgt, pad_id=pad_id, label_smoothing=eps)
        calls = model.attr("calls")
        if not (isinstance(calls, list) and calls and isinstance(calls[-1], list) and len(calls[-1]) == 2):
            raise AssertionError(f"translation_loss should call model(batch.src, tgt_in) once {where}")
        s_seen, t_seen = calls[-1]
        if not (isinstance(s_seen, torch.Tensor) and s_seen.shape == src.shape and torch.equal(s_seen, src)):
            raise AssertionError(f"the model must get the source batch.src unchanged {where}")
        tgt_in = tgt[:, :-1]
        if not (isinstance(t_seen, torch.Tensor) and t_seen.shape == tgt_in.shape and torch.equal(t_seen, tgt_in)):
            raise AssertionError(f"the decoder input must be tgt[:, :-1] (BOS, y_1, ...) {where}")
        logits = _fixed_logits(V, trial, B, T - 1).double()
        target = tgt[:, 1:]
        keep = target != pad_id
        logp = logits.log_softmax(-1)[keep]
        expected = -((1 - eps) * logp.gather(1, target[keep][:, None]).squeeze(1) + eps * logp.mean(1)).mean()
        check_close(loss, expected, atol=1e-5, name=f"loss {where}",
                    hint="predict tgt[:, 1:], ignore_index=pad_id, label_smoothing as given, mean over real tokens")
