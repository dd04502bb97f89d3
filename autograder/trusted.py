"""Trusted grading: hidden checks that run outside the student's process.

A hidden check is a plain function in an instructor-only file,
``autograder/checks/<assignment>.py``, registered for the grade cell whose points it
decides::

    from autograder.trusted import check
    from course.testing import check_close, check_no_delegation

    @check("grade_sdpa", "matches F.scaled_dot_product_attention on random shapes")
    def sdpa_random(h):
        for seed in range(5):
            q, k, v = ...                         # made here, in the trusted process
            out, w = h.call("scaled_dot_product_attention", q, k, v)
            check_close(out, F.scaled_dot_product_attention(q, k, v), name="output")

``h`` (a :class:`Handle`) reaches the student's objects in their sandboxed kernel: call a
function, construct a module (``h.construct``), call its methods, read its
``state_dict``, get gradients for given output gradients (``obj.grads``), temporarily
swap names for reference implementations (``h.substituted``), read the source of a
solution cell (``h.source``). Only tensors, numbers, strings and object ids cross the
boundary, in a format the grader parses itself (:mod:`autograder.wire`); every
comparison happens here. A check passes by returning and fails by raising
``AssertionError`` (``course.testing`` raises those, with messages that say what is
wrong and where); the student's feedback shows the check's name and that message, never
its code or inputs. All checks of a grade cell must pass for its points.

``mirrors_visible=True`` marks a check that repeats the cell's visible asserts: if the
notebook's own run of the cell and the trusted run disagree, the submission is flagged
for review (someone tampered with the checks in their kernel, or the environment differs).
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from nbformat.notebooknode import NotebookNode

from autograder import agent, wire

CHECKS_DIR = Path(__file__).resolve().parent / "checks"


@dataclass
class Check:
    grade_id: str
    name: str
    fn: Callable[["Handle"], None]
    mirrors_visible: bool = False


_REGISTRY: list[Check] | None = None


def check(grade_id: str, name: str | None = None, *, mirrors_visible: bool = False):
    """Register the decorated function as a hidden check of grade cell ``grade_id``."""

    def deco(fn):
        if _REGISTRY is not None:
            _REGISTRY.append(Check(grade_id, name or fn.__name__.replace("_", " "), fn, mirrors_visible))
        return fn

    return deco


def load_checks(assignment: str, checks_dir: str | Path | None = None) -> dict[str, list[Check]]:
    """The checks of ``assignment`` grouped by grade id ({} when it has no checks file)."""
    global _REGISTRY
    path = Path(checks_dir or CHECKS_DIR) / f"{assignment}.py"
    if not path.exists():
        return {}
    _REGISTRY = []
    try:
        spec = importlib.util.spec_from_file_location(f"_checks_{assignment}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        found = list(_REGISTRY)
    finally:
        _REGISTRY = None
    out: dict[str, list[Check]] = {}
    for c in found:
        out.setdefault(c.grade_id, []).append(c)
    return out


class StudentError(AssertionError):
    """The student's code raised while a check called it.

    What the student's kernel reports is untrusted and may carry the hidden inputs (a
    function can raise them in its message, in the name of an exception class it makes up,
    in the line it raises from): ``str()`` of this error, which is what the student's
    feedback shows, keeps only what cannot carry more than a few words of a fixed
    vocabulary. The exception's type is shown if it is one of Python's or PyTorch's, or a
    name of the notebook's locked cells; the function it was raised in, if that is such a
    name; the message only when it has the shape of one of Python's or PyTorch's
    shape/type/key messages (:data:`SAFE_MESSAGES`), with every number masked and every
    word from that vocabulary. Never line numbers or code. The raw fields stay available to
    checks as ``type_name``, ``message`` and ``where``.
    """

    def __init__(self, type_name: str, message: str, where: str, known: "_SourceIndex | None" = None):
        self.type_name, self.message, self.where = type_name, message, where
        known = known or _SourceIndex("")
        shown_type = self.shown_type = type_name if known.is_exception_name(type_name) else "an exception"
        text = f"your code raised {shown_type}"
        msg = self.safe_message = safe_message(message, known)
        if msg:
            text += f": {msg}"
        place = known.where(where)
        if place:
            text += f" ({place})"
        if not msg and message.strip():
            text += " [its message is not shown while hidden checks run: the visible checks show it]"
        super().__init__(text)


#: Messages of Python and PyTorch that only name shapes, sizes, dtypes, devices and parameter
#: names: shown in feedback. Anything else a student's code raises during a hidden check is not.
SAFE_MESSAGES = [re.compile(p) for p in (
    r"The size of tensor a \(\d+\) must match the size of tensor b \(\d+\) at non-singleton dimension -?\d+",
    r"mat1 and mat2 shapes cannot be multiplied \(\d+x\d+ and \d+x\d+\)",
    r"shape '\[[-\d, ]*\]' is invalid for input of size \d+",
    r"Dimension out of range \(expected to be in range of \[-?\d+, -?\d+\], but got -?\d+\)",
    r"expected scalar type \w+ but found \w+",
    r"Expected all tensors to be on the same device[\w ,:!]*",
    r"(Missing|Unexpected) key\(s\) in state_dict: (\"[\w.]+\"(, )?){1,3}\.?",
    r"size mismatch for [\w.]+: copying a param with shape torch\.Size\(\[[\d, ]*\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[[\d, ]*\]\)\.?",
    r"name '\w+' is not defined(: did you run the cell that defines it\?)?",
    r"\w+\(\) (got an unexpected keyword argument '\w+'|missing \d+ required positional arguments?: '\w+')",
    r"\w+\(\) takes \d+ positional arguments? but \d+ (were|was) given",
    r"'\w+' object has no attribute '\w+'",
    r"'\w+' object is not (callable|subscriptable|iterable)",
)]


def safe_message(message: str, known: "_SourceIndex | None" = None) -> str:
    """The lines of ``message`` that are one of :data:`SAFE_MESSAGES` in full and whose words
    are all in the fixed vocabulary (:meth:`_SourceIndex.is_word`), with every number
    masked, joined; "" when none is."""
    known = known or _SourceIndex("")
    keep = []
    for line in str(message).strip().splitlines()[:20]:
        if keep:  # one line: a list of lines would be a longer message to choose
            break
        line = line.strip()
        if line.startswith("Error(s) in loading state_dict for "):
            line = line.split(":", 1)[1].strip() if ":" in line else ""
        if not line or len(line) > 400 or not any(p.fullmatch(line) for p in SAFE_MESSAGES):
            continue
        if all(known.is_word(w) for w in re.findall(r"[A-Za-z_]\w*", line)):
            keep.append(re.sub(r"\b\d+\b", "N", line))
    return "; ".join(keep)[:600]


def _template_words() -> set[str]:
    return {w for p in SAFE_MESSAGES for w in re.findall(r"[A-Za-z_]\w*", re.sub(r"\\\w", " ", p.pattern))}


class _SourceIndex:
    """The words a kernel's report may use in a student's feedback: names of the notebook's
    locked cells (the instructor's text, restored from the release before grading), of
    Python and of torch. The student can choose among them, not add to them."""

    _WHERE = re.compile(r"in ([\w<>]+), line (\d+): (.*)", re.S)

    def __init__(self, source: str):
        self.names = set(re.findall(r"[A-Za-z_]\w*", source))

    def is_exception_name(self, name: str) -> bool:
        import builtins

        if not re.fullmatch(r"[A-Za-z_]\w{0,60}", name or ""):
            return False
        obj = getattr(builtins, name, None)
        return (isinstance(obj, type) and issubclass(obj, BaseException)) or name in self.names \
            or name in ("OutOfMemoryError", "LinAlgError", "_LinAlgError")

    def where(self, where: str) -> str:
        """"in <function>" when the function is a name of the locked cells; else ""."""
        m = self._WHERE.fullmatch(str(where).strip())
        return f"in {m.group(1)}" if m and m.group(1) in self.names else ""

    def is_word(self, word: str) -> bool:
        """A word that may appear in a message shown to the student: a word of the message
        templates, a name of the locked cells, or a parameter name of PyTorch's layers (a
        few dozen). Not any builtin or torch name: the student would choose among thousands."""
        return len(word) <= 60 and (word in self.names or word in _TEMPLATE_WORDS or word in _param_words())

    def type_name(self, name: str) -> str:
        """``name`` if it is a name of the locked cells or of PyTorch's common types; else "object"."""
        if re.fullmatch(r"[A-Za-z_]\w{0,60}", name or "") and (name in self.names or name in _param_words()):
            return name
        return "object"


def _param_words() -> set[str]:
    """The words of PyTorch's layers' parameter names (weight, bias, in_proj_weight, norm1...)."""
    global _PARAM_WORDS
    if _PARAM_WORDS is None:
        import torch

        _PARAM_WORDS = set()
        for m in (torch.nn.Linear(1, 1), torch.nn.LayerNorm(1), torch.nn.BatchNorm2d(1), torch.nn.Embedding(1, 1),
                  torch.nn.Conv2d(1, 1, 1), torch.nn.MultiheadAttention(2, 1),
                  torch.nn.TransformerEncoderLayer(2, 1, 2), torch.nn.TransformerDecoderLayer(2, 1, 2),
                  torch.nn.GRU(1, 1, bidirectional=True), torch.nn.LSTM(1, 1, bidirectional=True)):
            _PARAM_WORDS.update(w for k in m.state_dict() for w in k.split(".") if not w.isdigit())
        _PARAM_WORDS.update({"Tensor", "Parameter", "Module", "NoneType", "float", "int", "str", "bool",
                             "list", "tuple", "dict", "Float", "Double", "Long", "Half", "BFloat16", "Bool",
                             "Linear", "LayerNorm", "Dropout", "Embedding", "Conv2d", "ReLU", "GELU", "Sequential",
                             "ModuleList", "ModuleDict", "MultiheadAttention", "TransformerEncoderLayer",
                             "TransformerDecoderLayer", "OrderedDict", "function", "method", "generator"})
        _PARAM_WORDS.update(n for n in dir(torch.nn) if n[:1].isupper())  # nn.Identity, nn.GELU, ... (~200)
    return _PARAM_WORDS


_PARAM_WORDS: set[str] | None = None


_TEMPLATE_WORDS = _template_words()


#: Cell magics whose body is Python the kernel runs: scans read the body as code, not as a string.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})


def as_python(source: str) -> str:
    """A cell's source as the Python the kernel runs: IPython's syntax (``%timeit``, ``!ls``, ``x?``) becomes
    ``get_ipython()`` calls; the body of a ``%%time``-like cell magic (:data:`PYTHON_CELL_MAGICS`) stays code, so
    that a scan sees it. A cell IPython cannot transform is returned as it is (a scan then names the line it
    cannot parse)."""
    first, _, body = source.lstrip("\n").partition("\n")
    if first.startswith("%%") and first[2:].split()[:1] and first[2:].split()[0] in PYTHON_CELL_MAGICS:
        return "\n" + as_python(body)  # (the magic's line stays a line, so line numbers still match)
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001
        return source


class BadAnswer(AssertionError):
    """The student's code answered with something that is not a valid value."""


class RemoteObject:
    """An object living in the student's kernel (e.g. their ``nn.Module``)."""

    def __init__(self, handle: "Handle", ref: wire.ObjectRef):
        self._h, self.ref = handle, ref

    @property
    def type_name(self) -> str:
        return self.ref.type_name

    def __call__(self, *args, **kwargs):
        return self._h._request("method", target=self.ref.oid, name="__call__", args=args, kwargs=kwargs)

    def call_method(self, name: str, *args, **kwargs):
        return self._h._request("method", target=self.ref.oid, name=name, args=args, kwargs=kwargs)

    def attr(self, name: str):
        return self._h._request("getattr", target=self.ref.oid, name=name)

    def state_dict(self) -> dict:
        sd = self._h._request("state_dict", target=self.ref.oid)
        if not isinstance(sd, dict):
            raise BadAnswer("state_dict() did not return a dict")
        return sd

    def load_state_dict(self, state_dict: dict, strict: bool = True):
        return self.call_method("load_state_dict", state_dict, strict=strict)

    def eval(self) -> "RemoteObject":
        self.call_method("eval")
        return self

    def train(self, mode: bool = True) -> "RemoteObject":
        self.call_method("train", mode)
        return self

    def grads(self, *inputs, grad_output, method: str = "__call__", **kwargs) -> tuple[list, dict]:
        """Gradients of ``<method>(*inputs)`` (its first output) given ``grad_output``:
        ``([d input_i], {parameter name: d parameter})``."""
        r = self._h._request("grad", target=self.ref.oid, name=method, args=inputs, kwargs=kwargs,
                             grad_output=grad_output)
        if not isinstance(r, dict) or not isinstance(r.get("inputs"), list) or not isinstance(r.get("params"), dict):
            raise BadAnswer("gradients could not be read")
        return r["inputs"], r["params"]


class Handle:
    """What a hidden check sees of one submission (see the module docstring)."""

    def __init__(self, run_request: Callable[[str], list[NotebookNode]], notebook: NotebookNode):
        self._run = run_request
        self._nb = notebook
        self._known_index: _SourceIndex | None = None
        #: a dict the checks of one grade cell share (one Handle per grade cell): build an
        #: expensive reference or remote object once, e.g. ``h.cache.setdefault(key, make())``
        self.cache: dict[Any, Any] = {}

    @property
    def _known(self) -> _SourceIndex:
        """The vocabulary of the locked cells (text from the kernel is checked against it)."""
        if self._known_index is None:
            self._known_index = _SourceIndex("\n".join(
                c.source for c in self._nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("locked")))
        return self._known_index

    # -- requests --------------------------------------------------------------------------
    def _request(self, op: str, **fields) -> Any:
        seen: dict[int, int] = {}  # one request: a tensor passed twice arrives as one object
        for key in ("args", "kwargs"):
            if key in fields:
                fields[key] = wire.encode(list(fields[key]) if key == "args" else dict(fields[key]), seen)
        if "grad_output" in fields:
            fields["grad_output"] = wire.encode(fields["grad_output"], seen)
        outputs = self._run(agent.request_code(op, **fields))
        replies = [o for o in outputs if o.get("output_type") == "display_data" and agent.MIME in o.get("data", {})]
        if not replies:
            errors = [o for o in outputs if o.get("output_type") == "error"]
            if errors:
                e = errors[-1]
                raise StudentError(str(e.get("ename", "Error"))[:100], str(e.get("evalue", ""))[:500], "", self._known)
            raise BadAnswer("no answer came back from the notebook (was the grading agent tampered with?)")
        try:
            reply = wire.parse_reply(replies[-1]["data"][agent.MIME])
        except wire.ProtocolError as e:  # details only in the grader's log: the text came from the kernel
            import logging

            logging.getLogger("autograder.trusted").warning("unreadable reply from the kernel: %s", str(e)[:200])
            raise BadAnswer("the answer could not be read (malformed reply from the grading agent: "
                            "was it tampered with?)") from None
        if not reply["ok"]:
            err = reply["error"]
            raise StudentError(err["type"], err["message"], err["where"], self._known)
        return self._wrap(reply["value"])

    def _wrap(self, v: Any) -> Any:
        if isinstance(v, wire.ObjectRef):  # its type name is shown in messages: only a name known here
            return RemoteObject(self, wire.ObjectRef(v.oid, self._known.type_name(v.type_name)))
        if isinstance(v, list):
            return [self._wrap(x) for x in v]
        if isinstance(v, dict):
            return {k: self._wrap(x) for k, x in v.items()}
        return v

    # -- the API of a check ------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether ``name`` is defined in the student's notebook."""
        return self._request("has", name=name) is True

    def call(self, name: str, *args, **kwargs) -> Any:
        """Call the student's function ``name`` and return its result (tensors arrive as tensors)."""
        return self._request("call", name=name, args=args, kwargs=kwargs)

    def named(self, name: str) -> RemoteObject:
        """The student's global ``name`` as a remote object, to hand to a library function of the kernel
        (``h.library("course.device.measure")(h.named("f"), x)``) without calling it here."""
        obj = self._request("named", name=name)
        if not isinstance(obj, RemoteObject):
            raise BadAnswer(f"{name} could not be reached in the notebook")
        return obj

    def library(self, path: str) -> RemoteObject:
        """A library object of the kernel by its dotted path (``"torch.manual_seed"``,
        ``"functools.partial"``, ``"torch.nn.LayerNorm"``), callable like the student's
        functions; nothing is added to the student's names."""
        obj = self._request("resolve", path=path)
        if not isinstance(obj, RemoteObject):
            raise BadAnswer(f"{path} could not be reached in the notebook")
        return obj

    def vjp(self, fn: "str | RemoteObject", inputs: tuple, cotangents: tuple | list, **kwargs) -> list:
        """Vector-Jacobian product of the student's function ``fn`` (a name, or a remote
        callable) at ``inputs``: the gradients of ``sum_i <out_i, cotangents[i]>`` with
        respect to each input (None for a non-tensor input). Outputs without a gradient
        path (e.g. weights that are not used) are skipped."""
        target = {"target": fn.ref.oid} if isinstance(fn, RemoteObject) else {"name": fn}
        r = self._request("vjp", args=tuple(inputs), kwargs=kwargs, grad_output=list(cotangents), **target)
        if not isinstance(r, dict) or not isinstance(r.get("inputs"), list):
            raise BadAnswer("gradients could not be read")
        return r["inputs"]

    def construct(self, name: str, *args, **kwargs) -> RemoteObject:
        """Instantiate the student's class ``name``; the object stays in their kernel."""
        obj = self.call(name, *args, **kwargs)
        if not isinstance(obj, RemoteObject):
            raise BadAnswer(f"{name}(...) did not create an object")
        return obj

    @contextlib.contextmanager
    def substituted(self, **names: str) -> Iterator[None]:
        """Within the block, the student's global ``name`` is the object at a dotted path,
        e.g. ``MultiHeadAttention="course.nn.MultiHeadAttention"``: grade one piece with
        the reference for the others."""
        self._request("substitute", names=names)
        try:
            yield
        finally:
            self._request("restore")

    @contextlib.contextmanager
    def forbidden(self, *paths: str) -> Iterator[None]:
        """Within the block, the library functions at these dotted paths raise when called
        (e.g. ``"torch.nn.functional.scaled_dot_product_attention"``): a solution that
        delegates to the reference it is graded against fails. ``"aten.NAME"`` refuses the ATen
        operator ``NAME`` itself (e.g. ``"aten.convolution"``), however Python reaches it."""
        self._request("forbid", paths=list(paths))
        try:
            yield
        finally:
            self._request("restore")

    def source(self, grade_id: str) -> str:
        """The source of the student's cell ``grade_id``, read from the submitted notebook, as the Python the
        kernel ran (IPython's magics and shell escapes become ``get_ipython()`` calls, so scans can parse it)."""
        for cell in self._nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                return as_python(cell.source)
        raise KeyError(f"no cell {grade_id!r} in the notebook")

    def student_cells(self) -> list[tuple[str, str]]:
        """Every code cell the student could edit (solution cells and added cells) that Python can parse: (its
        source as the student wrote it, as Python (:meth:`source`)). A cell with a syntax error never ran, so it
        defines and uses nothing; it costs its own part (its names are missing), not every part a scan of all the
        cells decides (a reviewer's notebook with one syntax error in part 8 scored 0 of 70)."""
        out = []
        for cell in self._nb.cells:
            md = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and (md.get("solution") or not md.get("locked")):
                python = as_python(cell.source)
                try:
                    ast.parse(python)
                except (SyntaxError, ValueError):
                    continue
                out.append((cell.source, python))
        return out

    def student_source(self) -> str:
        """:meth:`student_cells` as one Python text (each cell followed by a blank line)."""
        return "\n\n".join(python for _, python in self.student_cells())


@dataclass
class CellVerdict:
    grade_id: str
    in_kernel_ok: bool
    results: list[tuple[str, bool, str]] = field(default_factory=list)  # (check name, passed, message)
    mirrored: list[bool] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    @property
    def disagrees(self) -> bool:
        """The cell's own (visible) asserts and their trusted mirror disagree."""
        mirrors = [ok for (_, ok, _), m in zip(self.results, self.mirrored) if m]
        return bool(mirrors) and all(mirrors) != self.in_kernel_ok

    def as_dict(self) -> dict:
        return {"grade_id": self.grade_id, "in_kernel_ok": self.in_kernel_ok, "passed": self.passed,
                "disagrees": self.disagrees,
                "checks": [{"name": n, "passed": ok, "message": m} for n, ok, m in self.results]}
