"""The kernel-side half of the trusted-grading protocol.

:data:`AGENT_SOURCE` (the text of :mod:`autograder.kernel_agent`) is sent into the student's
(sandboxed, untrusted) kernel and runs there. It looks up the student's functions and classes, calls them with the arguments the
trusted grader sent, and publishes the results as JSON under a private MIME type:
tensors as raw little-endian bytes (base64) with dtype and shape, numbers, strings,
lists, dicts, and anything else as an opaque object id. Nothing here is trusted: the
grader parses the reply strictly (:mod:`autograder.wire`) and makes every comparison
itself. The agent holds no test logic, inputs only arrive with each request.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

MIME = "application/x-course-grader+json"

#: The agent's code, sent into the kernel with every request (see :mod:`autograder.kernel_agent`).
AGENT_SOURCE = (Path(__file__).resolve().parent / "kernel_agent.py").read_text()


_SOURCE_ID = hashlib.sha256(AGENT_SOURCE.encode()).hexdigest()[:16]


#: What a request answers when the kernel has no (current) agent: the grader installs it and asks again.
MISSING_REPLY = json.dumps({"ok": False, "error": {"type": "AgentMissing", "message": "", "where": ""}})


def install_code() -> str:
    """The code cell that (re)installs the agent as the module ``_course_grader_agent``."""
    return (
        "def __grader_install():\n"
        "    import sys, types\n"
        "    agent = types.ModuleType('_course_grader_agent')\n"
        f"    exec(compile({AGENT_SOURCE!r}, '<grader-agent>', 'exec'), agent.__dict__)\n"
        f"    agent.SOURCE_ID = {_SOURCE_ID!r}\n"
        "    sys.modules['_course_grader_agent'] = agent\n"
        "__grader_install()\n"
        "del __grader_install\n"
    )


def request_code(op: str, **fields) -> str:
    """The code cell that performs one request in the kernel. It is short (a request is one
    kernel round trip, thousands per class): it calls the installed agent, and answers
    :data:`MISSING_REPLY` when there is none (:func:`install_code`, then ask again)."""
    payload = base64.b64encode(json.dumps({"op": op, **fields}).encode()).decode("ascii")
    return (
        "__grader_agent = __import__('sys').modules.get('_course_grader_agent')\n"
        f"if getattr(__grader_agent, 'SOURCE_ID', None) != {_SOURCE_ID!r}:\n"
        f"    __import__('IPython.display').display.publish_display_data({{{MIME!r}: {MISSING_REPLY!r}}})\n"
        "else:\n"
        f"    __grader_agent.handle({payload!r}, get_ipython().user_ns)\n"
        "del __grader_agent\n"
    )


def is_missing(outputs: list) -> bool:
    """Whether the kernel answered a request with :data:`MISSING_REPLY`."""
    return any(o.get("output_type") == "display_data" and o.get("data", {}).get(MIME) == MISSING_REPLY
               for o in outputs)
