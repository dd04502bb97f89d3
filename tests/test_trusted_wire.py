"""The trusted-grading protocol without a kernel: the agent (what runs in the student's
process) driven in-process, and the strict parser of its replies."""
from __future__ import annotations

import base64
import json
import re
import types

import pytest
import torch
import torch.nn.functional as F

from autograder import agent, wire


@pytest.fixture
def kernel(monkeypatch):
    """Run request cells like the student's kernel would; return the parsed replies."""
    import IPython.display

    published: list[dict] = []
    monkeypatch.setattr(IPython.display, "publish_display_data", lambda data, *a, **k: published.append(data))
    ns: dict = {"__name__": "__main__"}
    ns["get_ipython"] = lambda: types.SimpleNamespace(user_ns=ns)
    exec(agent.install_code(), ns)  # RobustExecute installs it on the first request

    def request(op, **fields):
        for key in ("args", "kwargs"):
            if key in fields:
                fields[key] = wire.encode(fields[key])
        exec(agent.request_code(op, **fields), ns)
        return wire.parse_reply(published[-1][agent.MIME])

    yield ns, request
    import sys

    request("restore_all")
    sys.modules.pop("_course_grader_agent", None)


def test_tensors_cross_exactly(kernel):
    ns, request = kernel
    ns["double"] = lambda x, scale=2: (x if scale == 1 else x * scale, x.shape[0], "ok")
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.bool):
        x = (torch.randn(3, 4) * 10).to(dtype)
        r = request("call", name="double", args=[x], kwargs={"scale": 1})
        assert r["ok"], r
        out, n, s = r["value"]
        assert out.dtype == dtype and torch.equal(out, x) and n == 3 and s == "ok"


def test_student_errors_come_back_with_where(kernel):
    ns, request = kernel
    exec("def f(x):\n    return x.nonexistent\n", ns)
    r = request("call", name="f", args=[1])
    assert not r["ok"] and r["error"]["type"] == "AttributeError"
    r = request("call", name="undefined_function", args=[])
    assert not r["ok"] and "did you run the cell" in r["error"]["message"]


def test_objects_stay_in_the_kernel(kernel):
    ns, request = kernel

    class AlwaysEqual:
        def __eq__(self, other):
            return True

    ns["make"] = AlwaysEqual
    r = request("call", name="make", args=[])
    assert isinstance(r["value"], wire.ObjectRef) and r["value"].type_name == "AlwaysEqual"
    assert r["value"] != 3, "an opaque reference must not compare equal to a number"


def test_forbidden_catches_aliases_taken_earlier(kernel):
    ns, request = kernel
    exec("import torch.nn.functional as F\n_alias = F.scaled_dot_product_attention\n"
         "def attn(q, k, v):\n    return _alias(q, k, v)\n", ns)
    q = torch.randn(1, 2, 3, 4)
    assert request("call", name="attn", args=[q, q, q])["ok"]
    request("forbid", paths=["torch.nn.functional.scaled_dot_product_attention"])
    r = request("call", name="attn", args=[q, q, q])
    assert not r["ok"] and "may not be used" in r["error"]["message"]
    request("restore")
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    assert request("call", name="attn", args=[q, q, q])["ok"]


def test_a_forbidden_aten_operator_is_refused_however_python_reaches_it(kernel):
    """A transposed convolution "by stamping" that calls the operator under another name (a reviewer's
    torch.convolution(..., transposed=True), torch.ops.aten, the autograd of a convolution, an alias saved under
    DisableTorchFunction) kept its points while only F.conv_transpose2d was forbidden by name."""
    ns, request = kernel
    exec("import torch\nimport torch.nn.functional as F\n_saved = F.conv_transpose2d\n"
         "def by_name(x, w):\n    return torch.convolution(x, w, None, [2, 2], [0, 0], [1, 1], True, [0, 0], 1)\n"
         "def by_aten(x, w):\n    return torch.ops.aten.convolution.default(x, w, None, [2, 2], [0, 0], [1, 1], True,"
         " [0, 0], 1)\n"
         "def by_grad(x, w):\n    return torch.nn.grad.conv2d_input((1, 2, 6, 6), w, x, stride=2)\n"
         "def saved(x, w):\n    with torch._C.DisableTorchFunction():\n        return _saved(x, w, stride=2)\n"
         "def einsum(x, w):\n    return torch.einsum('bchw,cokl->bohkwl', x, w)\n", ns)
    x, w = torch.randn(1, 3, 3, 3), torch.randn(3, 2, 2, 2)
    names = ("by_name", "by_aten", "by_grad", "saved")
    assert all(request("call", name=n, args=[x, w])["ok"] for n in names + ("einsum",))
    request("forbid", paths=["torch.nn.functional.conv_transpose2d", "aten.convolution", "aten.convolution_backward"])
    for n in names:
        r = request("call", name=n, args=[x, w])
        assert not r["ok"] and "aten.convolution" in r["error"]["message"] and "may not be used" in \
            r["error"]["message"], (n, r)
    assert request("call", name="einsum", args=[x, w])["ok"]  # the other operators still run
    request("restore")
    assert all(request("call", name=n, args=[x, w])["ok"] for n in names)


def test_forbidden_python_functions_raise_through_aliases_subclasses_and_decorators(kernel):
    """A course reference forbidden while graded: an alias taken in another cell, a subclass and a
    decorated function all run the same function objects, whose code raises until restored."""
    import course.seq2seq as ref

    ns, request = kernel
    ns["ms"], ns["greedy"] = ref.masked_softmax, ref.greedy_decode
    exec("class Enc(Base):\n    pass\n", {**ns, "Base": ref.Encoder}, ns)
    scores, mask = torch.zeros(1, 3), torch.tensor([[True, True, False]])
    assert request("call", name="ms", args=[scores, mask])["ok"]
    request("forbid", paths=["course.seq2seq.masked_softmax", "course.seq2seq.Encoder", "course.seq2seq.greedy_decode"])
    for name, args in (("ms", [scores, mask]), ("Enc", [5, 2, 3, 4]), ("greedy", [None, None, None, 1, 0, 1])):
        r = request("call", name=name, args=args)
        assert not r["ok"] and "course.seq2seq." in r["error"]["message"] and "may not be used" in r["error"]["message"]
    request("restore")
    assert request("call", name="ms", args=[scores, mask])["ok"]
    assert request("call", name="Enc", args=[5, 2, 3, 4])["ok"]
    assert torch.equal(ref.masked_softmax(scores, mask), torch.tensor([[0.5, 0.5, 0.0]]))


def test_substitutions_nest_and_restore_in_order(kernel):
    ns, request = kernel
    ns["f"] = lambda: "student"
    exec("def which():\n    return f()\n", ns)
    request("substitute", names={"f": "os.getcwd"})
    request("forbid", paths=["torch.nn.functional.relu"])
    request("restore")  # undoes the forbid only
    assert request("call", name="which")["value"] != "student"
    request("restore")
    assert request("call", name="which")["value"] == "student"


def _reply(value):
    return json.dumps({"ok": True, "value": value})


def _tensor(dtype="float32", shape=(2,), data=b"\0" * 8):
    return {"__tensor__": {"dtype": dtype, "shape": list(shape), "data": base64.b64encode(data).decode()}}


@pytest.mark.parametrize("bad, why", [
    ("not json", "not valid JSON"),
    (json.dumps({"value": 1}), "malformed reply"),
    (_reply(_tensor(data=b"\0" * 7)), "needs 8 bytes"),
    (_reply(_tensor(dtype="object")), "unsupported tensor dtype"),
    (_reply(_tensor(shape=(-1,))), "malformed tensor shape"),
    (_reply({"__tensor__": {"dtype": "float32", "shape": [1], "data": "!!"}}), "not base64"),
    (_reply({"__object__": "x", "type": "T"}), "malformed object reference"),
    (_reply(json.loads("[" * 40 + "]" * 40)), "too deeply nested"),
    (_reply({"__pickle__": "gASVAAAAAAAAAACMBHRlc3SULg=="}), None),  # a plain dict: data, never unpickled
])
def test_parser_rejects_anything_off_grammar(bad, why):
    if why is None:
        assert wire.parse_reply(bad)["value"] == {"__pickle__": "gASVAAAAAAAAAACMBHRlc3SULg=="}
        return
    with pytest.raises(wire.ProtocolError, match=re.escape(why)):
        wire.parse_reply(bad)


def test_the_agent_is_a_standalone_module_sent_as_text():
    """The kernel cannot import autograder (it is not in the sandbox): the agent module may
    import only the standard library at its top, and what is sent is exactly its text."""
    import ast

    from autograder import kernel_agent

    tree = ast.parse(agent.AGENT_SOURCE)
    assert agent.AGENT_SOURCE == open(kernel_agent.__file__).read()
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top for a in n.names} | {n.module for n in top
                                                                    if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "base64", "json", "sys", "traceback", "importlib"}, names
    module = types.ModuleType("_agent_under_test")
    exec(compile(agent.AGENT_SOURCE, "<grader-agent>", "exec"), module.__dict__)
    x = torch.randn(3, 2).to(torch.bfloat16)
    assert torch.equal(module.tensor_from_bytes(base64.b64decode(module.tensor_payload(x)["data"]), "bfloat16", [3, 2]), x)


def _handle_in_process(kernel):
    """A trusted Handle whose requests run in the in-process agent of ``kernel``."""
    import nbformat

    from autograder.trusted import Handle

    ns, _ = kernel
    import IPython.display

    def run(code):
        out, before = [], IPython.display.publish_display_data
        IPython.display.publish_display_data = lambda data, *a, **k: out.append(
            {"output_type": "display_data", "data": data})
        try:
            exec(code, ns)
        finally:
            IPython.display.publish_display_data = before
        return out

    return Handle(run, nbformat.v4.new_notebook())


def test_a_tensor_sent_twice_is_one_object_in_the_kernel(kernel):
    ns, _ = kernel
    exec("def same(q, k, v):\n    return [q is k, k is v, q is v]\n", ns)
    h = _handle_in_process(kernel)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    assert h.call("same", x, x, x) == [True, True, True]
    assert h.call("same", x, y, y) == [False, True, False]
    assert h.call("same", x, k=x, v=x.clone()) == [True, False, False]


def test_library_objects_vjp_and_cache_need_no_names_in_the_notebook(kernel):
    ns, _ = kernel
    exec("import torch\ndef f(a, b, scale=1.0):\n    return a * b * scale, (a + b).detach()\n", ns)
    before = set(ns)
    h = _handle_in_process(kernel)
    seed = h.library("torch.manual_seed")
    seed(3)
    a, b, g = torch.randn(4), torch.randn(4), torch.randn(4)
    da, db = h.vjp("f", (a, b), (g, torch.zeros(4)), scale=2.0)
    assert torch.allclose(da, 2 * b * g) and torch.allclose(db, 2 * a * g)
    (dx,) = h.vjp("f", (a,), (g,), b=b)
    assert torch.allclose(dx, b * g)
    da, db = h.vjp("f", (a, a), (g, g))  # one leaf: d(a*a) = 2a
    assert torch.allclose(da, 2 * a * g) and torch.allclose(db, da)
    assert set(ns) - before <= {"__builtins__"}, f"names added to the notebook: {set(ns) - before}"
    assert h.cache == {} and h.cache.setdefault("k", 1) == 1


def test_a_student_function_handed_to_a_library_function_runs_in_the_kernel(kernel):
    ns, _ = kernel
    exec("import torch\ndef double(x):\n    return 2 * x\n", ns)
    before = set(ns)
    h = _handle_in_process(kernel)
    double = h.named("double")
    x = torch.randn(3)
    assert torch.equal(double(x), 2 * x)  # callable from here, and handed on as the kernel's own object:
    r = h.library("course.device.measure")(double, torch.randn(64, 64), repeat=1)
    assert r["largest_mb"] == r["peak_mb"] == 64 * 64 * 4 / 2**20
    with pytest.raises(Exception, match="NameError"):
        h.named("missing_name")
    assert set(ns) - before <= {"__builtins__"}


def test_sources_reach_the_checks_as_python_with_cell_magic_bodies_as_code():
    from autograder.trusted import as_python

    from course.testing import CheckError, check_no_delegation

    assert as_python("x = 1\n%timeit x\n!ls\n") == "x = 1\nget_ipython().run_line_magic('timeit', 'x')\nget_ipython().system('ls')\n"
    hidden = as_python("%%time\nimport course.seq2seq as c\n")  # the body of %%time is code the kernel runs
    with pytest.raises(CheckError, match="course.seq2seq"):
        check_no_delegation(hidden, {"course.seq2seq": "no"})
    assert "run_cell_magic('bash'" in as_python("%%bash\nls\n")  # not Python: a string, as the kernel sees it


@pytest.mark.parametrize("source, refused", [
    ("from course.swin import load_torchvision_weights, torchvision_names\nload_torchvision_weights(m, tv)", None),
    ("import course.swin\ncourse.swin.load_torchvision_weights(m, tv)", None),  # what 05's setup cell does
    ('print("do not import course.swin here")', None),  # prose
    ('title = f"course.swin {1}"', None),
    ("signal = x.mean()\nprint(signal)", None),
    ("import gc\ngc.collect()", None),
    ("import course.swin\ncourse.swin.window_partition(x, 4)", "course.swin.window_partition"),
    ("from course.swin import shift_mask", "from course.swin import shift_mask"),
    ("import course.swin as cs\ngetattr(cs, 'window_partition')", "import course.swin"),
    ("import importlib\nimportlib.import_module('course.' + 'swin')", "'course.swin' in a string"),
    ("import course.swin\ncourse.swin.__dict__['shift_mask']", "course.swin.__dict__"),
    ("import threading\nthreading.Thread(target=f, daemon=True).start()", "import threading"),
    ("import importlib\nimportlib.import_module('thre' + 'ading')", "'threading' in a string"),
    ("import _thread", "import _thread"),
    ("import signal\nsignal.signal(signal.SIGALRM, handler)", "signal.signal"),
    ("import sys\nsys.setprofile(hook)", "sys.setprofile"),
    ("import sys\nagent = sys.modules.get('_course_' + 'grader_agent')", "'_course_grader_agent' in a string"),
    ("import ctypes", "import ctypes"),
])
def test_the_notebook_scan_allows_the_adapters_and_prose_and_refuses_answers_and_code_beside_the_checks(source, refused):
    """Answers.scan's notebook-wide rules (05's reviewer: the allowed adapter import and a print naming the module
    scored 0 of 70; a background thread that replaced the grading agent's handler took 70 of 70)."""
    from autograder.checkkit import ASYNC_TOOLS, COPY_TOOLS, NOTEBOOK_DYNAMIC, Answers
    from course.testing import CheckError, check_no_delegation

    answers = Answers("course.swin")
    assert "course.swin.load_torchvision_weights" in answers.allowed and \
        not any(a.endswith((".shift_mask", ".Swin")) for a in answers.allowed)
    forbidden = {answers.module: answers.no_ref, **{n: answers.copying for n in COPY_TOOLS},
                 **{n: answers.running for n in ASYNC_TOOLS}}
    try:
        check_no_delegation(source, forbidden, forbid_dynamic=NOTEBOOK_DYNAMIC, allowed=answers.allowed)
    except CheckError as e:
        assert refused is not None, f"refused a legitimate cell: {e}"
        assert refused in str(e), str(e)
    else:
        assert refused is None, f"not refused: {source!r}"
