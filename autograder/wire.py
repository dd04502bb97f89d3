"""Strict parsing of what a student's kernel sends back (trusted side).

Replies are JSON; nothing is ever unpickled or evaluated. A tensor arrives as
``{"__tensor__": {"dtype": ..., "shape": [...], "data": base64}}`` and is rebuilt here
from raw bytes after its dtype, shape and byte count are checked; anything that does not
fit the grammar below raises :class:`ProtocolError`.

    value  := null | bool | int | float | str | [value, ...] | {str: value, ...}
            | {"__tensor__": {"dtype": DTYPE, "shape": [int, ...], "data": str}}
            | {"__object__": int, "type": str}
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from autograder import kernel_agent

DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
MAX_BYTES = 64 * 2**20  # one reply
MAX_DEPTH = 16
MAX_NODES = 100_000
MAX_DIMS = 8


class ProtocolError(ValueError):
    """The kernel's reply is not in the expected format."""


@dataclass(frozen=True)
class ObjectRef:
    """An object that stays in the student's kernel (a module, a custom class...)."""

    oid: int
    type_name: str


def _tensor(d: Any) -> torch.Tensor:
    if not isinstance(d, dict) or set(d) != {"dtype", "shape", "data"}:
        raise ProtocolError("malformed tensor")
    dtype = DTYPES.get(d["dtype"]) if isinstance(d["dtype"], str) else None
    if dtype is None:
        raise ProtocolError(f"unsupported tensor dtype {str(d['dtype'])[:40]!r}")
    shape = d["shape"]
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(s) is int and 0 <= s < 2**31 for s in shape)):
        raise ProtocolError("malformed tensor shape")
    if not isinstance(d["data"], str):
        raise ProtocolError("malformed tensor data")
    try:
        raw = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("tensor data is not base64") from None
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(raw) != numel * itemsize:
        raise ProtocolError(f"tensor of shape {shape} and dtype {d['dtype']} needs {numel * itemsize} bytes, got {len(raw)}")
    return kernel_agent.tensor_from_bytes(raw, d["dtype"], shape)  # the agent's own decoding


def decode(v: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise ProtocolError("reply too large or too deeply nested")
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [decode(x, depth + 1, budget) for x in v]
    if type(v) is dict:
        if "__tensor__" in v:
            if len(v) != 1:
                raise ProtocolError("malformed tensor")
            return _tensor(v["__tensor__"])
        if "__object__" in v:
            if set(v) != {"__object__", "type"} or type(v["__object__"]) is not int or type(v["type"]) is not str:
                raise ProtocolError("malformed object reference")
            return ObjectRef(v["__object__"], v["type"][:100])
        if not all(type(k) is str for k in v):
            raise ProtocolError("dict keys must be strings")
        return {k: decode(x, depth + 1, budget) for k, x in v.items()}
    raise ProtocolError(f"unexpected JSON value of type {type(v).__name__}")


def parse_reply(text: Any) -> dict:
    """``{"ok": True, "value": ...}`` or ``{"ok": False, "error": {type, message, where}}``."""
    if not isinstance(text, str):
        raise ProtocolError("reply is not text")
    if len(text) > MAX_BYTES * 4 // 3 + 1024:
        raise ProtocolError("reply too large")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError, OverflowError):  # JSONDecodeError, too many digits, nesting
        raise ProtocolError("reply is not valid JSON") from None
    if not isinstance(obj, dict) or type(obj.get("ok")) is not bool:
        raise ProtocolError("malformed reply")
    if obj["ok"]:
        return {"ok": True, "value": decode(obj.get("value"))}
    err = obj.get("error")
    if not isinstance(err, dict):
        raise ProtocolError("malformed error reply")
    return {"ok": False, "error": {k: str(err.get(k, ""))[:2000] for k in ("type", "message", "where")}}


def encode(v: Any, seen: dict[int, int] | None = None) -> Any:
    """Trusted side -> kernel: tensors, numbers, strings, lists, dicts, tuples, object refs.

    A tensor object met again in the same request (``seen``, shared by the calls that build
    one request) is sent as ``{"__same__": i}`` (the i-th tensor sent): the kernel gets the
    same object twice, so ``mha(x, x, x)`` takes a student's ``query is key`` branch."""
    if seen is None:
        seen = {}
    if isinstance(v, torch.Tensor):
        if str(v.dtype).replace("torch.", "") not in DTYPES:
            raise TypeError(f"cannot send a tensor of dtype {v.dtype}")
        if id(v) in seen:
            return {"__same__": seen[id(v)]}
        seen[id(v)] = len(seen)
        return {"__tensor__": kernel_agent.tensor_payload(v)}  # the agent's own encoding
    if isinstance(v, ObjectRef):
        return {"__object__": v.oid}
    if hasattr(v, "ref") and isinstance(getattr(v, "ref"), ObjectRef):
        return {"__object__": v.ref.oid}
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, tuple):
        return {"__tuple__": [encode(x, seen) for x in v]}
    if isinstance(v, list):
        return [encode(x, seen) for x in v]
    if isinstance(v, dict):  # OrderedDict (a state_dict) too
        return {str(k): encode(x, seen) for k, x in v.items()}
    raise TypeError(f"cannot send a value of type {type(v).__name__} to the kernel")
