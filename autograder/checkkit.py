"""Check builders: the patterns hidden checks share, written once.

A hidden check (``autograder/checks/<assignment>.py``, see :mod:`autograder.trusted`) makes
its inputs and references here, in the trusted process, and reaches the student's code
through the handle ``h``. The builders below cover what every assignment's checks do:

- draw inputs: :func:`rint`, :func:`drawn` (a check's random trials, the same on every run);
- reach the student's objects: :func:`module` (construct, load weights with the notebook's
  names, set the mode), :func:`module_like` (the mirror of a visible test), :func:`load_weights`
  (the notebook's names are required; extra buffers or parameters a student adds are allowed),
  :func:`attribute`, :func:`parameters`, :func:`seed_kernel`;
- the student's answers: :func:`tensor` (type, shape, dtype), :func:`pair`, :func:`what` (a
  value described without showing it);
- compare: ``course.testing.check_close`` with ``likely=`` (name the mistake whose result the
  student's matches; :func:`planted` computes what a reference with a mistake planted gives),
  :func:`check_grads` against :func:`reference_grads` (:func:`check_module_grads` for both),
  :func:`check_vjp` (a function's gradients);
- properties: :func:`check_causal_remote` (one request for every perturbed copy),
  :func:`check_dropout_sites` (each named dropout module acts in training mode, none in eval),
  :func:`check_keeps_mode` (a function hands a model back in the mode it got it in),
  :func:`check_raises`;
- structure: :func:`check_parameters` (names and shapes), :func:`check_module_list` (n distinct
  blocks), :func:`check_every_parameter_learns`;
- own code: :func:`check_own_code` (the source scan, the bits of the results against the references
  of :mod:`autograder.delegation`, the forbidden library calls); :class:`Answers` (the course's
  module of answers to one assignment: never imported or copied by the student's cells, never run
  by the student's code while a check runs, also through an alias or a subclass).

Self-attention is called with the *same* tensor object for query, key and value
(``mha(x, x, x)``): the wire keeps object identity within a request, so a student's
``if query is key`` branch is graded too.
"""
from __future__ import annotations

import contextlib
import functools
import re
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import torch

from autograder.trusted import RemoteObject, StudentError
from course.testing import _perturb, check_causal, check_close, check_no_delegation, check_shape, seeded

T = TypeVar("T")

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


def tensor(x: Any, name: str, *, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None,
           dims: Sequence[str] | None = None, why: str = "") -> torch.Tensor:
    """``x`` if it is a tensor (of ``shape`` and ``dtype`` when given; ``dims`` names the dims and
    ``why`` follows the expected dtype in the message), else an ``AssertionError`` saying what it is."""
    if not isinstance(x, torch.Tensor):
        raise AssertionError(f"{name} should be a tensor, got {what(x)}")
    if shape is not None:
        check_shape(x, tuple(shape), name, dims=dims)
    if dtype is not None and x.dtype != dtype:
        raise AssertionError(f"{name} has dtype {x.dtype}, expected {dtype}{why}")
    return x


def pair(r: Any, name: str) -> tuple[Any, Any]:
    """The two results of a function that returns ``(out, weights)``."""
    if not (isinstance(r, list) and len(r) == 2):
        raise AssertionError(f"{name} should return a pair (out, weights), got {what(r)}")
    return r[0], r[1]


def rint(lo: int, hi: int) -> int:
    """A random integer in ``[lo, hi)`` from torch's generator (so that :func:`drawn` fixes it)."""
    return int(torch.randint(lo, hi, ()))


def drawn(seed: int, n: int, make: Callable[[int], T]) -> list[T]:
    """``[make(0), ..., make(n - 1)]`` drawn under ``seeded(seed)``: a check's random trials, the same
    on every run (made before the first request, so that the student's code cannot change them)."""
    with seeded(seed):
        return [make(i) for i in range(n)]


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


def attribute(h, obj: RemoteObject, *paths: str) -> Any:
    """``obj.<path>`` (a dotted path) of a student's object, read in their kernel; with several paths, a list
    of their values (one request)."""
    return h.library("operator.attrgetter")(*paths)(obj)


def parameters(h, obj: RemoteObject) -> dict[str, Any]:
    """``dict(obj.named_parameters())`` of a student's module (name -> tensor)."""
    return h.library("builtins.dict")(obj.call_method("named_parameters"))


_UNSET = object()


@contextlib.contextmanager
def planted(objs: Iterable[Any], name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, attribute ``name`` of each of ``objs`` (reference objects, made here) is
    ``make(obj)``: e.g. a ``forward`` with a classic mistake, to compute what that mistake returns
    for ``check_close(likely=...)``. Put back after (an attribute the class gave is deleted again)."""
    objs = list(objs)  # an nn.Module keeps its parameters, buffers and submodules out of __dict__
    saved = [obj.__dict__.get(name, getattr(obj, name) if _registered(obj, name) else _UNSET) for obj in objs]
    try:
        for obj in objs:
            setattr(obj, name, make(obj))
        yield
    finally:
        for obj, old in zip(objs, saved):
            if old is _UNSET:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def _registered(obj: Any, name: str) -> bool:
    """Whether ``name`` is a parameter, buffer or submodule of ``obj`` (an ``nn.Module``)."""
    return isinstance(obj, torch.nn.Module) and any(name in d for d in (obj._parameters, obj._buffers, obj._modules))


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
            check_close(tensor(g, f"gradient of input {i}"), e, atol=1e-5, rtol=1e-4,
                        name=f"{name}: gradient of input {i}")
    missing = sorted(set(exp_params) - set(got_params))
    if missing:
        raise AssertionError(f"{name}: no gradient reaches {', '.join(missing[:6])}: is a parameter unused, or a "
                             "tensor detached on the way?")
    for key, e in exp_params.items():
        check_close(tensor(got_params[key], key), e, atol=1e-5, rtol=1e-4, name=f"{name}: gradient of {key}")


def check_module_grads(obj: RemoteObject, reference: torch.nn.Module, inputs: tuple, grad_output: torch.Tensor,
                       name: str) -> None:
    """The gradients of the student's module (inputs and every parameter) equal those of ``reference``
    (the same weights) for ``grad_output`` on the first output."""
    check_grads(obj.grads(*inputs, grad_output=grad_output), reference_grads(reference, inputs, grad_output), name)


def check_vjp(h, fn: str, inputs: Sequence[torch.Tensor], cotangents: Sequence[torch.Tensor],
              reference: Callable[..., Any], *, name: str, labels: Sequence[str] | None = None, **kwargs) -> None:
    """The gradients of the student's function ``fn`` with respect to ``inputs``, for the outputs
    weighted by ``cotangents``, equal those of ``reference(*inputs, **kwargs)`` (its outputs, or its
    first ones: those get the first cotangents). ``labels`` name the inputs in the message."""
    got = h.vjp(fn, tuple(inputs), tuple(cotangents), **kwargs)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outs = reference(*leaves, **kwargs)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    torch.autograd.backward(outs, list(cotangents[:len(outs)]))
    for label, d, leaf in zip(labels or [f"input {i}" for i in range(len(leaves))], got, leaves):
        check_close(tensor(d, f"gradient of {label}"), leaf.grad, atol=1e-5, rtol=1e-4,
                    name=f"{name}: gradient with respect to {label}",
                    hint="every step must be a differentiable torch operation (no .detach(), .item() or numpy)")


def check_causal_remote(call: Callable, x: torch.Tensor, *, name: str, repeat: tuple = (), seed: int = 0) -> None:
    """``course.testing.check_causal`` on a remote function in one request: the input and each copy
    it perturbs are stacked along dim 0; ``repeat`` are further inputs repeated along the batch."""
    T = x.size(1)
    g = torch.Generator().manual_seed(seed)
    inputs = [x, x] + [_perturb(x, 1, j, g) for j in range(1, T)]
    n = len(inputs)
    out = tensor(call(torch.cat(inputs), *[r.repeat(n, *([1] * (r.dim() - 1))) for r in repeat]), name)
    if out.dim() < 2 or out.size(0) != n * x.size(0):
        raise AssertionError(f"{name}: output has shape {tuple(out.shape)}, expected the batch of {n * x.size(0)} "
                             "first")
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


def check_keeps_mode(h, make: Callable[[], RemoteObject], use: Callable[[RemoteObject], Any], *, name: str) -> None:
    """``use(model)`` hands a model of the student's kernel (``make()``) back in the mode it got it in,
    training or eval (a decoding or evaluation function that calls ``model.eval()``)."""
    for mode, was, now in ((True, "training", "eval"), (False, "eval", "training")):
        model = make().train(mode)
        use(model)
        if attribute(h, model, "training") is not mode:
            raise AssertionError(f"{name} left a model that was in {was} mode in {now} mode: give it back in the "
                                 "mode it was in (was_training = model.training ... model.train(was_training))")


def check_raises(h, fn: str, *args: Any, error: str, why: str) -> None:
    """The student's ``fn(*args)`` raises ``error`` (an exception type's name); ``why`` says when it should."""
    call = f"{fn}({', '.join(map(repr, args))})"
    try:
        h.call(fn, *args)
    except StudentError as e:
        if e.type_name != error:
            raise AssertionError(f"{call} raised {e.shown_type}, expected {error}") from None
    else:
        raise AssertionError(f"{call} should raise {error} ({why})")


# -- structure -------------------------------------------------------------------------------------
def check_parameters(h, obj: RemoteObject, expected: Mapping[str, tuple[int, ...]], *, name: str, want: str) -> None:
    """The student's module has exactly the parameters ``expected`` (name -> shape); ``want`` says
    what they are in the message (``"the parameters of two nn.Linear(8, 8) with bias"``)."""
    got = {k: tuple(tensor(v, k).shape) for k, v in parameters(h, obj).items()}
    if got == dict(expected):
        return
    extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
    wrong = [f"{k} has shape {got[k]}, expected {expected[k]}" for k in sorted(set(got) & set(expected))
             if got[k] != expected[k]]
    raise AssertionError(f"{name} should have exactly {want}: " + "; ".join(
        ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected parameters {', '.join(extra)}"]
                                                                  if extra else []) + wrong))


def check_module_list(h, obj: RemoteObject, path: str, kind: str, n: int, *, name: str) -> None:
    """``obj.<path>`` is an ``nn.ModuleList`` of ``n`` distinct modules of the class ``kind`` (not one
    module repeated: the layers must not share weights)."""
    children = attribute(h, obj, f"{path}._modules")
    kinds = [getattr(c, "type_name", what(c)) for c in children.values()] if isinstance(children, dict) \
        else [what(children)]
    if kinds != [kind] * n:
        raise AssertionError(f"{name}.{path} holds {kinds}, expected {n} {kind}s in an nn.ModuleList")
    if len({h.library("builtins.id")(c) for c in children.values()}) != n:
        raise AssertionError(f"{name}.{path} repeats one {kind} object: build {n} distinct ones (a list "
                             f"comprehension, not [block] * n: the layers must not share weights)")


def check_every_parameter_learns(h, obj: RemoteObject, *inputs: Any, grad_output: torch.Tensor, name: str) -> None:
    """A gradient reaches every parameter of the student's module from ``obj(*inputs)``."""
    _, grads = obj.grads(*inputs, grad_output=grad_output)
    unused = sorted(n for n in parameters(h, obj) if n not in grads)
    if unused:
        raise AssertionError(f"no gradient reaches {', '.join(unused[:5])} ({name}): is a module unused, or a "
                             "tensor detached?")


# -- own code --------------------------------------------------------------------------------------
def check_own_code(h, cell: str, scan: Mapping[str, str], *, follow: bool = True,
                   bits: Callable[[], Any] | None = None, forbidden: Sequence[str] = (),
                   run: Callable[[], Any] | None = None) -> None:
    """Not delegated, in three steps: the source of the solution cell ``cell`` (with ``follow``, also the
    notebook's functions it calls) uses no name of ``scan`` (name -> the advice shown); ``bits()`` compares
    the bits of the student's results with the references' (:func:`autograder.delegation.check_not_reference`:
    what the kernel cannot hide, and its message names the reference); ``run()`` works while the library
    functions at the dotted paths ``forbidden`` raise."""
    check_no_delegation(h.source(cell), scan, follow=follow)
    if bits is not None:
        bits()
    if run is not None:
        with h.forbidden(*forbidden):
            run()


#: What reaches a module's code without naming it: re-running its source or its code objects.
COPY_TOOLS = ("getsource", "getsourcelines", "spec_from_file_location", "exec_module", "SourceFileLoader",
              "FunctionType", "CodeType", "__code__", "marshal", "runpy", "run_path")


#: What runs the student's code while the checks run, outside the calls they make, or reaches the grading agent:
#: a thread, a signal handler or a trace hook can undo what the checks set up in the kernel (a reviewer's
#: background thread replaced the agent's request handler and took full marks by calling torchvision's Swin).
#: No exercise needs them; any cell of the student's that names one loses every graded part.
ASYNC_TOOLS = ("threading", "_thread", "concurrent.futures", "signal.signal", "settrace", "setprofile", "addaudithook",
               "_current_frames", "gc.callbacks", "_course_grader_agent", "ctypes")

#: The dynamic code refused anywhere in the notebook. In the solution cells also ``globals``, ``__import__`` and
#: ``importlib``, which a debugging cell may well use (``print(globals())``, ``importlib.reload(plots)``: reviewers'
#: correct notebooks lost every point for them); a dynamic import in another cell gains nothing: the kernel's
#: ``course`` holds no answer, and the references the checks send in raise while their part is graded.
NOTEBOOK_DYNAMIC = ("eval", "exec", "compile", "__builtins__")


def _in_cells(message: str, cells: list[tuple[str, str]]) -> str:
    """``message`` with each "line N" of the cells' joined Python named by its cell: "line n of your cell that
    starts `...`"."""
    starts, line = [], 1
    for original, python in cells:
        starts.append((line, original))
        line += python.count("\n") + 2  # "\n\n".join

    def where(m: re.Match) -> str:
        n = int(m.group(1))
        first, original = max((s for s in starts if s[0] <= n), default=(1, ""), key=lambda s: s[0])
        head = next((x.strip() for x in original.splitlines() if x.strip()), "")
        return f"line {n - first + 1} of your cell that starts `{head[:40]}`"

    return re.sub(r"\bline (\d+)", where, message)


class Answers:
    """The course's answers to one assignment, the module ``module`` of ``course`` (e.g. ``"course.seq2seq"``).

    - :meth:`scan`: the solution cell does not name the module (nor reach it through eval/exec/importlib), and
      no cell the student wrote uses a tool that copies or re-runs code (:data:`COPY_TOOLS`); a helper cell is
      never graded, so each grade cell looks, and such a submission loses every cell, as cheating should;
    - :meth:`forbidden` (a context manager), :meth:`owns` (a check's decorator), :meth:`call`: the student's code
      may not run the module's ``names`` meanwhile (the kernel makes their code raise, also through an alias or
      a subclass taken earlier); a use is reported as an AssertionError naming it, or with ``used[name]``.
    """

    def __init__(self, module: str) -> None:
        from autograder.classroom import REFERENCES

        self.module = module
        self.no_ref = f"{module} holds the course's answers: write this part yourself"
        self.copying = f"it copies or re-runs code of the course ({module} holds the answers): write this part yourself"
        self.running = ("it runs code beside the checks or reaches the grader (threads, signal handlers, trace "
                        "hooks): no exercise needs it; remove it")
        #: the module's names that answer nothing (adapters that ship to students): a cell may import and use them
        self.allowed = tuple(f"{module}.{r.name}" for r in REFERENCES if r.module == module and r.answers is None)

    def scan(self, h, cell: str) -> None:
        check_no_delegation(h.source(cell), {self.module: self.no_ref}, allowed=self.allowed)
        cells = h.student_cells()
        problem = self._notebook_problem("\n\n".join(python for _, python in cells))
        if problem:  # "line N" of all the student's cells joined: say which cell
            raise AssertionError(_in_cells(problem, cells))

    @functools.lru_cache(maxsize=4)  # the same cells for every check of a notebook: scanned once, not per check
    def _notebook_problem(self, text: str) -> str | None:
        """What the notebook-wide scan finds in ``text`` (all the student's cells), or None."""
        try:
            check_no_delegation(text, {self.module: self.no_ref, **{name: self.copying for name in COPY_TOOLS},
                                       **{name: self.running for name in ASYNC_TOOLS}},
                                forbid_dynamic=NOTEBOOK_DYNAMIC, allowed=self.allowed)
        except AssertionError as e:
            return str(e) or "the notebook-wide scan failed"
        return None

    @contextlib.contextmanager
    def forbidden(self, h, *names: str, used: Mapping[str, str] | None = None) -> Iterator[None]:
        try:
            with h.forbidden(*(f"{self.module}.{n}" for n in names)):
                yield
        except StudentError as e:
            hit = re.match(rf"{re.escape(self.module)}\.(\w+) may not be used here", e.message or "")
            if hit and e.type_name == "RuntimeError":
                message = (used or {}).get(hit.group(1))
                raise AssertionError(message or f"your code runs {self.module}.{hit.group(1)}, the course's answer: "
                                                "write this part yourself") from None
            raise

    def owns(self, *names: str) -> Callable[[Callable[[Any], T]], Callable[[Any], T]]:
        def deco(fn: Callable[[Any], T]) -> Callable[[Any], T]:
            @functools.wraps(fn)
            def run(h: Any) -> T:
                with self.forbidden(h, *names):
                    return fn(h)
            return run
        return deco

    def call(self, h, name: str, *args: Any, **kwargs: Any) -> Any:
        """The student's function ``name`` called without the module's function of the same name."""
        with self.forbidden(h, name):
            return h.call(name, *args, **kwargs)
