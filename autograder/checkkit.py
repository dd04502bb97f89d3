"""Check builders: the patterns hidden checks share, written once.

A hidden check (``autograder/checks/<assignment>.py``, see :mod:`autograder.trusted`) makes
its inputs and references here, in the trusted process, and reaches the student's code
through the handle ``h``. The builders below cover what every assignment's checks do:

- reach the student's objects: :func:`module` (construct, load weights with the notebook's
  names, set the mode), :func:`load_weights` (the notebook's names are required; extra
  buffers or parameters a student adds are allowed), :func:`seed_kernel`;
- compare: ``course.testing.check_close`` with ``likely=`` (name the mistake whose result the
  student's matches), :func:`check_grads` against :func:`reference_grads`;
- properties: :func:`check_causal_remote` (one request for every perturbed copy),
  :func:`check_dropout_sites` (each named dropout module acts in training mode, none in eval);
- the student's answers: :func:`tensor`, :func:`pair`, :func:`what` (a value described
  without showing it).

Self-attention is called with the *same* tensor object for query, key and value
(``mha(x, x, x)``): the wire keeps object identity within a request, so a student's
``if query is key`` branch is graded too.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import torch

from autograder.trusted import RemoteObject, StudentError
from course.testing import _perturb, check_causal, check_close

TOKEN_DIMS = ("batch", "token", "channel")
ATTN_DIMS = ("batch", "head", "query", "key")
LOGIT_DIMS = ("batch", "position", "vocab")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """PyTorch's reference modules warn about mask types and fast paths: keep the grader's log clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def what(x: Any) -> str:
    """A student's answer described by its kind, never its value."""
    if x is None:
        return "None"
    if isinstance(x, RemoteObject):
        return f"an object of type {x.type_name}"
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, list):
        return f"a tuple or list of length {len(x)}"
    return f"a {type(x).__name__}"


def tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise AssertionError(f"{name} should be a tensor, got {what(x)}")
    return x


def pair(r: Any, name: str) -> tuple[Any, Any]:
    if not (isinstance(r, list) and len(r) == 2):
        raise AssertionError(f"{name} should return a pair (out, weights), got {what(r)}")
    return r[0], r[1]


def seed_kernel(h, seed: int) -> None:
    """Seed the generator of the student's kernel (dropout, torch.randperm in their code)."""
    h.library("torch.manual_seed")(seed)


def load_weights(obj: RemoteObject, state: dict, name: str) -> None:
    """Load ``state`` (made here, with the notebook's parameter names) into the student's module.

    Every name of ``state`` must exist in the module with the same shape; what the module has
    beyond them (a ``scale`` buffer, a cached mask) keeps its own value."""
    try:
        r = obj.load_state_dict(dict(state), strict=False)
    except StudentError as e:
        raise AssertionError(f"the check could not load its weights into your {name}: keep the parameter names "
                             f"and shapes of the notebook ({e.safe_message or 'see the visible checks'})") from None
    unexpected = r[1] if isinstance(r, list) and len(r) == 2 and isinstance(r[1], list) else []
    if unexpected:
        raise AssertionError(f"your {name} has no parameter {', '.join(map(str, unexpected[:4]))}: "
                             "name the submodules as the notebook does")


def module(h, name: str, *args, state: dict | None = None, train: bool = False, **kwargs) -> RemoteObject:
    """The student's ``name(*args, **kwargs)`` in their kernel, ``state`` loaded, in eval mode
    unless ``train``."""
    obj = h.construct(name, *args, **kwargs)
    if state is not None:
        load_weights(obj, state, name)
    obj.train(train)
    return obj


def module_like(h, name: str, *args, state: dict, **kwargs) -> tuple[RemoteObject, dict]:
    """Like :func:`module`, but only the module's own parameters that ``state`` has with the same
    shape are set (the mirror of a visible test builds its reference from the student's
    attributes: it must not fail where the visible test passes). Returns (module, its weights)."""
    obj = h.construct(name, *args, **kwargs)
    own = obj.state_dict()
    weights = {k: state[k] if (k in state and isinstance(v, torch.Tensor) and v.shape == state[k].shape) else v
               for k, v in own.items()}
    load_weights(obj, weights, name)
    obj.eval()
    return obj, weights


def reference_grads(mod: torch.nn.Module, inputs: tuple, grad_output: torch.Tensor):
    """Gradients of ``mod(*inputs)`` (first output) for ``grad_output``: ([d input], {name: d param}).
    An input passed twice (the same object) is one leaf, as in the student's kernel."""
    leaves: dict[int, torch.Tensor] = {}
    ins = [leaves.setdefault(id(x), x.detach().clone().requires_grad_(x.is_floating_point())) for x in inputs]
    mod.zero_grad(set_to_none=True)
    out = mod(*ins)
    (out[0] if isinstance(out, tuple) else out).backward(grad_output)
    return [x.grad for x in ins], {n: p.grad for n, p in mod.named_parameters() if p.grad is not None}


def check_grads(got, expected, name: str) -> None:
    """Gradients of the student's module (``RemoteObject.grads``) against :func:`reference_grads`."""
    (got_in, got_params), (exp_in, exp_params) = got, expected
    if len(got_in) != len(exp_in):
        raise AssertionError(f"{name}: {len(got_in)} input gradients came back, expected {len(exp_in)}")
    for i, (g, e) in enumerate(zip(got_in, exp_in)):
        if e is not None:
            check_close(tensor(g, f"gradient of input {i}"), e, atol=1e-5, rtol=1e-4, name=f"{name}: gradient of input {i}")
    missing = sorted(set(exp_params) - set(got_params))
    if missing:
        raise AssertionError(f"{name}: no gradient reaches {', '.join(missing[:6])}: is a parameter unused, or a "
                             "tensor detached on the way?")
    for key, e in exp_params.items():
        check_close(tensor(got_params[key], key), e, atol=1e-5, rtol=1e-4, name=f"{name}: gradient of {key}")


def check_causal_remote(call: Callable, x: torch.Tensor, *, name: str, repeat: tuple = (), seed: int = 0) -> None:
    """``course.testing.check_causal`` on a remote function in one request: the input and each copy
    it perturbs are stacked along dim 0; ``repeat`` are further inputs repeated along the batch."""
    T = x.size(1)
    g = torch.Generator().manual_seed(seed)
    inputs = [x, x] + [_perturb(x, 1, j, g) for j in range(1, T)]
    n = len(inputs)
    out = tensor(call(torch.cat(inputs), *[r.repeat(n, *([1] * (r.dim() - 1))) for r in repeat]), name)
    if out.dim() < 2 or out.size(0) != n * x.size(0):
        raise AssertionError(f"{name}: output has shape {tuple(out.shape)}, expected the batch of {n * x.size(0)} first")
    outs, unused = list(out.split(x.size(0))), list(range(n))

    def lookup(t):
        for i in unused:
            if inputs[i].shape == t.shape and torch.equal(inputs[i], t):
                unused.remove(i)
                return outs[i]
        raise RuntimeError("internal: check_causal asked for an input that was not sent")

    check_causal(lookup, x, dim=1, seed=seed, name=name)


def check_dropout_sites(h, obj: RemoteObject, sites: dict[str, str], call: Callable[[], Any], *, name: str,
                        seed: int = 0) -> None:
    """Each dropout module of ``sites`` (attribute path -> where it should act) changes the output of
    ``call()`` in training mode when it alone has p=0.5, and in eval mode nothing changes with every one
    at p=0.5. ``obj`` must be built with dropout 0 (so that nothing else is random)."""
    setattr_ = h.library("builtins.setattr")
    getter = h.library("operator.attrgetter")
    mods = {path: getter(path)(obj) for path in sites}
    for path, m in mods.items():
        if not isinstance(m, RemoteObject):
            raise AssertionError(f"{name} should have a dropout module {path} (nn.Dropout), got {what(m)}")
    seed_kernel(h, seed)
    obj.eval()
    base = tensor(call(), f"{name} output")
    obj.train()
    for path, role in sites.items():
        setattr_(mods[path], "p", 0.5)
        dropped = tensor(call(), f"{name} output")
        setattr_(mods[path], "p", 0.0)
        if torch.allclose(dropped, base, atol=1e-7, rtol=0):
            raise AssertionError(f"{name}: {path} never drops anything in training mode: apply self.{path} {role}")
    for m in mods.values():
        setattr_(m, "p", 0.5)
    obj.eval()
    still = tensor(call(), f"{name} output")
    for m in mods.values():
        setattr_(m, "p", 0.0)
    if not torch.allclose(still, base, atol=1e-6):
        raise AssertionError(f"{name}: with its dropouts at p=0.5 the output changes in eval mode: dropout must be off "
                             "in eval mode (use the nn.Dropout modules, or F.dropout(..., training=self.training))")
