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

import contextlib
import importlib.util
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
    """The student's code raised while a check called it."""

    def __init__(self, type_name: str, message: str, where: str):
        self.type_name, self.message, self.where = type_name, message, where
        text = f"your code raised {type_name}: {message}"
        super().__init__(text + (f" ({where})" if where else ""))


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
                             grad_output=wire.encode(grad_output))
        if not isinstance(r, dict) or not isinstance(r.get("inputs"), list) or not isinstance(r.get("params"), dict):
            raise BadAnswer("gradients could not be read")
        return r["inputs"], r["params"]


class Handle:
    """What a hidden check sees of one submission (see the module docstring)."""

    def __init__(self, run_request: Callable[[str], list[NotebookNode]], notebook: NotebookNode):
        self._run = run_request
        self._nb = notebook

    # -- requests --------------------------------------------------------------------------
    def _request(self, op: str, **fields) -> Any:
        for key in ("args", "kwargs"):
            if key in fields:
                fields[key] = wire.encode(list(fields[key]) if key == "args" else dict(fields[key]))
        outputs = self._run(agent.request_code(op, **fields))
        replies = [o for o in outputs if o.get("output_type") == "display_data" and agent.MIME in o.get("data", {})]
        if not replies:
            errors = [o for o in outputs if o.get("output_type") == "error"]
            if errors:
                e = errors[-1]
                raise StudentError(str(e.get("ename", "Error")), str(e.get("evalue", ""))[:500], "")
            raise BadAnswer("no answer came back from the notebook (was the grading agent tampered with?)")
        try:
            reply = wire.parse_reply(replies[-1]["data"][agent.MIME])
        except wire.ProtocolError as e:
            raise BadAnswer(f"the answer could not be read: {e}") from None
        if not reply["ok"]:
            err = reply["error"]
            raise StudentError(err["type"], err["message"], err["where"])
        return self._wrap(reply["value"])

    def _wrap(self, v: Any) -> Any:
        if isinstance(v, wire.ObjectRef):
            return RemoteObject(self, v)
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
        delegates to the reference it is graded against fails."""
        self._request("forbid", paths=list(paths))
        try:
            yield
        finally:
            self._request("restore")

    def source(self, grade_id: str) -> str:
        """The source of the student's cell ``grade_id``, read from the submitted notebook."""
        for cell in self._nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                return cell.source
        raise KeyError(f"no cell {grade_id!r} in the notebook")

    def student_source(self) -> str:
        """Every code cell the student could edit (solution cells and added cells)."""
        parts = []
        for cell in self._nb.cells:
            md = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and (md.get("solution") or not md.get("locked")):
                parts.append(cell.source)
        return "\n\n".join(parts)


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
