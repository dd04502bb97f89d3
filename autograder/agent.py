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


def request_code(op: str, **fields) -> str:
    """The code cell that performs one request in the kernel."""
    payload = base64.b64encode(json.dumps({"op": op, **fields}).encode()).decode("ascii")
    return (
        "def __grader_request():\n"
        "    import sys, types\n"
        "    agent = sys.modules.get('_course_grader_agent')\n"
        f"    if agent is None or getattr(agent, 'SOURCE_ID', None) != {_SOURCE_ID!r}:\n"
        "        agent = types.ModuleType('_course_grader_agent')\n"
        f"        exec(compile({AGENT_SOURCE!r}, '<grader-agent>', 'exec'), agent.__dict__)\n"
        f"        agent.SOURCE_ID = {_SOURCE_ID!r}\n"
        "        sys.modules['_course_grader_agent'] = agent\n"
        f"    agent.handle({payload!r}, get_ipython().user_ns)\n"
        "__grader_request()\n"
        "del __grader_request\n"
    )
