"""The grading agent: the kernel-side half of the trusted-grading protocol.

This file is not imported by the kernel: :mod:`autograder.agent` sends its text into the
student's (sandboxed, untrusted) kernel, where it runs as the module
``_course_grader_agent`` (the kernel cannot import ``autograder``: it is not in the
sandbox). It is a real module so that it can be read, linted and tested like any other,
and so that :mod:`autograder.wire` shares its tensor encoding (:func:`tensor_payload`,
:func:`tensor_from_bytes`). It must only import the standard library and, lazily, torch.

It looks up the student's functions and classes, calls them with the arguments the
trusted grader sent, and publishes the results as JSON under a private MIME type. Nothing
here is trusted: the grader parses the reply strictly and makes every comparison itself.
The agent holds no test logic; inputs only arrive with each request.
"""
import base64 as _b64, json as _json, sys as _sys, traceback as _tb, importlib as _il

MIME = "application/x-course-grader+json"
OBJECTS = {}
SAVED = []  # a stack: one frame of replaced names per substitute/forbid, undone by restore
_MISSING = object()


def tensor_from_bytes(raw, dtype_name, shape):
    """A tensor of ``dtype_name`` and ``shape`` made from little-endian ``raw`` bytes (a copy)."""
    import torch
    dt = getattr(torch, dtype_name)
    buf = bytearray(raw)
    if not buf:
        return torch.empty(shape, dtype=dt)
    if dt is torch.bfloat16:
        t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16)
    else:
        t = torch.frombuffer(buf, dtype=dt)
    return t.reshape(shape).clone()


def tensor_payload(t):
    """``{"dtype", "shape", "data"}`` of a tensor: raw little-endian bytes in base64 (the wire format)."""
    import torch
    t = torch.Tensor.as_subclass(t.detach(), torch.Tensor).cpu().contiguous()
    name = str(t.dtype).replace("torch.", "")
    arr = t.view(torch.int16) if t.dtype is torch.bfloat16 else t
    return {"dtype": name, "shape": list(t.shape), "data": _b64.b64encode(arr.numpy().tobytes()).decode("ascii")}


def _tensor(d):
    return tensor_from_bytes(_b64.b64decode(d["data"]), d["dtype"], d["shape"])


SEEN = []  # the tensors of the current request, in order: {"__same__": i} is the i-th again


def decode(v):
    if isinstance(v, dict):
        if "__tensor__" in v:
            SEEN.append(_tensor(v["__tensor__"]))
            return SEEN[-1]
        if "__same__" in v:  # a tensor passed twice (self-attention: mha(x, x, x)) is one object here too
            return SEEN[v["__same__"]]
        if "__object__" in v:
            return OBJECTS[v["__object__"]]
        if "__tuple__" in v:
            return tuple(decode(x) for x in v["__tuple__"])
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


class _Ref:
    """Forces an object reference in the reply (a library function is not sent as a value)."""

    def __init__(self, obj):
        self.obj = obj


def encode(v):
    if isinstance(v, _Ref):
        oid = len(OBJECTS) + 1
        OBJECTS[oid] = v.obj
        return {"__object__": oid, "type": type(v.obj).__name__}
    torch = _sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(v, torch.Tensor):
        return {"__tensor__": tensor_payload(v)}
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, (list, tuple)):  # namedtuples too
        return [encode(x) for x in v]
    if isinstance(v, dict) and all(type(k) is str for k in v):
        return {k: encode(x) for k, x in v.items()}
    oid = len(OBJECTS) + 1
    OBJECTS[oid] = v
    return {"__object__": oid, "type": type(v).__name__}


SNAPSHOTS = {}
ENTERED = []
PROVIDED = {}  # module name -> (sha of its code, the module): the checks' references, sent in once


def _provide(name, sha, code_b64):
    """Make the module ``name`` (the kernel's ``course`` lacks its answers) from the compiled code the grader sent."""
    import marshal, types
    mod = types.ModuleType(name)
    parent, _, leaf = name.rpartition(".")
    mod.__package__ = parent
    old = _sys.modules.get(name)
    _sys.modules[name] = mod  # as an import does: a dataclass looks its module up while it is made
    try:
        exec(marshal.loads(_b64.b64decode(code_b64)), mod.__dict__)
    except BaseException:
        if old is None:
            _sys.modules.pop(name, None)
        else:
            _sys.modules[name] = old
        raise
    if parent in _sys.modules:
        setattr(_sys.modules[parent], leaf, mod)
    PROVIDED[name] = (sha, mod)


def _modes():
    torch = _sys.modules.get("torch")
    return (torch.get_default_dtype(), torch.is_grad_enabled()) if torch is not None else None


def _set_modes(modes):
    torch = _sys.modules.get("torch")
    if torch is not None and modes is not None:
        torch.set_default_dtype(modes[0])
        torch.set_grad_enabled(modes[1])


def _swap(ns, names):
    keep = {k: v for k, v in ns.items() if k.startswith("__grader")}  # the running request itself
    ns.clear()
    ns.update(names)
    ns.update(keep)


def _where(exc):
    frames = [f for f in _tb.extract_tb(exc.__traceback__) if "<grader" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"in {f.name}, line {f.lineno}: {(f.line or '').strip()}"


def _resolve(path):
    mod, _, attr = path.rpartition(".")
    return getattr(_il.import_module(mod), attr)


def _forbid_mode(names):
    from torch.overrides import TorchFunctionMode

    class _Forbid(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            path = names.get(getattr(func, "__name__", None))
            if path is not None:
                raise RuntimeError(f"{path} may not be used here: this exercise is to implement it yourself")
            return func(*args, **(kwargs or {}))

    return _Forbid()


def _forbid_ops(names):
    """A dispatch mode that refuses the ATen operators ``names`` (``{"convolution": "aten.convolution"}``): whatever
    Python path reaches them (an alias saved earlier, ``torch.ops.aten``, the autograd of another op)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _ForbidOps(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            path = names.get(func.overloadpacket.__name__)
            if path is not None:
                raise RuntimeError(f"{path} may not be used here: this exercise is to implement it yourself")
            return func(*args, **(kwargs or {}))

    return _ForbidOps()


def _blocked_code(fn, path):
    """A code object for ``fn`` that raises at once (same free variables, so it can replace ``fn.__code__``)."""
    free = fn.__code__.co_freevars
    message = path + " may not be used here: this exercise is to implement it yourself"
    src = ("def __outer():\n" + "".join(f"    {v} = None\n" for v in free)
           + "    def __stub(*a, **k):\n"
           + f"        raise RuntimeError({message!r})\n"
           + (f"        return ({', '.join(free)},)\n" if free else "") + "    return __stub\n")
    scope = {}
    exec(src, scope)
    code = scope["__outer"]().__code__
    return code if code.co_freevars == free else None


def _code_targets(obj):
    """The Python functions whose code runs when ``obj`` (a function, or a class's methods) is called."""
    import types
    found, todo = [], [obj]
    if isinstance(obj, type):
        todo = [getattr(v, "__func__", v) for v in vars(obj).values()]
    while todo:
        f = todo.pop()
        if isinstance(f, types.FunctionType) and f not in found:
            found.append(f)
            todo.append(getattr(f, "__wrapped__", None))
    return found


def _named(ns, name):
    if name not in ns:
        raise NameError(f"name '{name}' is not defined: did you run the cell that defines it?")
    return ns[name]


def handle(request_b64, ns):
    from IPython.display import publish_display_data
    try:
        req = _json.loads(_b64.b64decode(request_b64))
        op = req["op"]
        SEEN.clear()
        args = decode(req.get("args", []))
        kwargs = decode(req.get("kwargs", {}))
        if op == "has":
            value = req["name"] in ns
        elif op == "call":
            value = _named(ns, req["name"])(*args, **kwargs)
        elif op == "method":
            obj = OBJECTS[req["target"]]
            value = obj(*args, **kwargs) if req["name"] == "__call__" else getattr(obj, req["name"])(*args, **kwargs)
        elif op == "getattr":
            value = getattr(OBJECTS[req["target"]], req["name"])
        elif op == "state_dict":
            value = {k: v for k, v in OBJECTS[req["target"]].state_dict().items()}
        elif op in ("grad", "vjp"):
            import torch
            leaves = {}  # one leaf per distinct tensor: x passed twice stays one object

            def leaf(a):
                if not isinstance(a, torch.Tensor):
                    return a
                if id(a) not in leaves:
                    leaves[id(a)] = a.detach().clone().requires_grad_(a.is_floating_point())
                return leaves[id(a)]
            ins = [leaf(a) for a in args]
            if op == "grad":
                obj = OBJECTS[req["target"]]
                obj.zero_grad(set_to_none=True)
                fn = obj if req["name"] == "__call__" else getattr(obj, req["name"])
            else:
                fn = OBJECTS[req["target"]] if "target" in req else _named(ns, req["name"])
            out = fn(*ins, **kwargs)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            cots = decode(req["grad_output"])
            cots = cots if op == "vjp" else [cots]
            pairs = [(o, g) for o, g in zip(outs, cots) if isinstance(o, torch.Tensor) and o.requires_grad]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            value = {"inputs": [a.grad if isinstance(a, torch.Tensor) else None for a in ins]}
            if op == "grad":
                value["params"] = {n: p.grad for n, p in obj.named_parameters() if p.grad is not None}
        elif op == "named":  # the student's global itself, as an object reference (a function to hand on)
            value = _Ref(_named(ns, req["name"]))
        elif op == "resolve":  # a library object by its dotted path (torch.manual_seed, functools.partial ...)
            value = _resolve(req["path"])
            if not callable(value):
                raise TypeError(f"{req['path']} is not callable")
            value = _Ref(value)
        elif op == "substitute":
            frame = {}
            SAVED.append(frame)
            for name, path in req["names"].items():
                frame.setdefault(name, ns.get(name, _MISSING))
                ns[name] = _resolve(path)
            value = None
        elif op == "forbid":
            frame = {}
            SAVED.append(frame)
            torch_funcs = {}
            aten_ops = {p.split(".", 1)[1]: p for p in req["paths"] if p.startswith("aten.")}
            for path in req["paths"]:
                if path in aten_ops.values():
                    continue
                mod, _, attr = path.rpartition(".")
                owner = _il.import_module(mod)
                orig = getattr(owner, attr)
                frame.setdefault(("attr", path), (owner, attr, orig))
                if callable(orig) and not isinstance(orig, type) and \
                        not str(getattr(orig, "__module__", "")).startswith("torchvision"):
                    # torch's dispatch matches by name and no torch function is named as torchvision's Python
                    # functions (their code is patched below): a mode for them only slows every torch call down
                    torch_funcs[getattr(orig, "__name__", attr)] = path

                def _stub(*a, _path=path, **k):
                    raise RuntimeError(f"{_path} may not be used here: this exercise is to implement it yourself")
                setattr(owner, attr, _stub)
                # an alias taken earlier (f = course.seq2seq.masked_softmax, or a subclass) still runs the
                # same function objects: their code raises too
                for fn in _code_targets(orig):
                    code = _blocked_code(fn, path)
                    if code is not None:
                        frame.setdefault(("code", id(fn)), (fn, fn.__code__))
                        fn.__code__ = code
            if torch_funcs and "torch" in _sys.modules:
                # an alias taken earlier (f = F.scaled_dot_product_attention) escapes the
                # attribute patch above, but not torch's function dispatch
                frame[("mode",)] = _forbid_mode(torch_funcs)
                frame[("mode",)].__enter__()
            if aten_ops and "torch" in _sys.modules:  # "aten.convolution": the operator itself, below every alias
                frame[("ops",)] = _forbid_ops(aten_ops)
                frame[("ops",)].__enter__()
            value = None
        elif op in ("restore", "restore_all"):
            while SAVED:
                for name, old in SAVED.pop().items():
                    if name in (("mode",), ("ops",)):
                        old.__exit__(None, None, None)
                    elif name[0] == "code" if isinstance(name, tuple) else False:
                        old[0].__code__ = old[1]
                    elif isinstance(name, tuple):
                        owner, attr, orig = old
                        setattr(owner, attr, orig)
                    elif old is _MISSING:
                        ns.pop(name, None)
                    else:
                        ns[name] = old
                if op == "restore":
                    break
            value = None
        elif op == "clear":
            OBJECTS.clear()
            value = None
        elif op == "provide":  # answers the modules it still lacks; installs those whose code came along
            modules, code = req["modules"], req.get("code") or {}
            need = [n for n, sha in modules.items()
                    if PROVIDED.get(n, (None, None))[0] != sha or _sys.modules.get(n) is not PROVIDED[n][1]]
            for n in need:
                if n in code:
                    _provide(n, modules[n], code[n])
            value = [n for n in need if n not in code]
        elif op == "snapshot":
            # the names (and torch's global modes) right after a grade cell ran: its hidden
            # checks run after the whole notebook, against this state
            SNAPSHOTS[req["key"]] = (dict(ns), _modes())
            value = None
        elif op == "enter":
            names, modes = SNAPSHOTS[req["key"]]
            if not ENTERED:
                ENTERED.append((dict(ns), _modes()))
            _swap(ns, names)
            _set_modes(modes)
            value = None
        elif op == "leave":
            if ENTERED:
                names, modes = ENTERED.pop()
                _swap(ns, names)
                _set_modes(modes)
            value = None
        else:
            raise ValueError(f"unknown op {op!r}")
        reply = {"ok": True, "value": encode(value)}
    except BaseException as exc:
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) and not isinstance(exc, SystemExit):
            raise
        reply = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)[:2000],
                                        "where": _where(exc)[:500]}}
    publish_display_data({MIME: _json.dumps(reply)})
