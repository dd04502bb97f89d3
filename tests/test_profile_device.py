"""Tests for course.profile and course.device (CPU only, fast)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import course
from course import device as D
from course.profile import describe, pick, profile


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    return monkeypatch


# -- profile -----------------------------------------------------------------


@pytest.mark.parametrize("cuda", [False, True])
def test_profile_falls_back_to_cuda_availability(clean_env: pytest.MonkeyPatch, cuda: bool) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: cuda)
    assert profile() == ("full" if cuda else "cpu")


@pytest.mark.parametrize("mode", ["autograde", "validate"])
def test_nbgrader_beats_cuda(clean_env: pytest.MonkeyPatch, mode: str) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setenv("NBGRADER_EXECUTION", mode)
    assert profile() == "quick"


@pytest.mark.parametrize("name", ["quick", "cpu", "full", " FULL "])
def test_course_profile_beats_nbgrader_and_cuda(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setenv("NBGRADER_EXECUTION", "autograde")
    clean_env.setenv("COURSE_PROFILE", name)
    assert profile() == name.strip().lower()


def test_profile_not_cached(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COURSE_PROFILE", "cpu")
    assert profile() == "cpu"
    clean_env.setenv("COURSE_PROFILE", "quick")
    assert profile() == "quick"


def test_invalid_profile_lists_valid_ones(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COURSE_PROFILE", "gpu")
    with pytest.raises(ValueError, match="quick, cpu, full") as err:
        profile()
    assert "'gpu'" in str(err.value)


def test_pick(clean_env: pytest.MonkeyPatch) -> None:
    for name, expected in [("quick", 1), ("cpu", 5), ("full", 40)]:
        clean_env.setenv("COURSE_PROFILE", name)
        assert pick(quick=1, cpu=5, full=40) == expected


def test_module_is_callable_as_in_design(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COURSE_PROFILE", "cpu")
    assert course.profile() == "cpu"


def test_describe_is_one_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COURSE_PROFILE", "quick")
    line = describe()
    assert "\n" not in line and "quick" in line and torch.__version__ in line


# -- device ------------------------------------------------------------------


def test_quick_profile_always_cpu(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COURSE_PROFILE", "quick")
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    assert D.get_device() == torch.device("cpu")
    assert D.get_device("cuda") == torch.device("cpu")


def test_get_device_prefers_cuda_then_falls_back(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("COURSE_PROFILE", "cpu")
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setattr(torch.backends.mps, "is_available", lambda: False)
    assert D.get_device() == torch.device("cpu")
    assert D.get_device("cpu") == torch.device("cpu")
    assert D.get_device("cuda") == torch.device("cpu")
    assert "not available" in capsys.readouterr().out
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    assert D.get_device() == torch.device("cuda")


def test_autocast_dtype_and_scaler_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert D.autocast_dtype(cpu) is None
    assert not D.make_grad_scaler(cpu).is_enabled()
    with D.autocast(cpu):
        y = nn.Linear(3, 2)(torch.randn(4, 3))
    assert y.dtype == torch.float32


@pytest.mark.parametrize(("major", "dtype"), [(9, torch.bfloat16), (8, torch.bfloat16), (7, torch.float16)])
def test_autocast_dtype_on_cuda_by_capability(monkeypatch: pytest.MonkeyPatch, major: int, dtype: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    assert D.autocast_dtype(torch.device("cuda")) == dtype


def test_maybe_compile_off_returns_model_and_never_crashes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Linear(2, 2)
    assert D.maybe_compile(model, enabled=False) is model

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    assert D.maybe_compile(model, enabled=True) is model
    assert "running eager" in capsys.readouterr().out


def test_seed_everything_reproducible() -> None:
    D.seed_everything(123)
    a = torch.randn(5)
    D.seed_everything(123)
    assert torch.equal(a, torch.randn(5))


def test_timer_measures_a_sleep() -> None:
    with D.Timer("cpu") as t:
        time.sleep(0.05)
    assert 45.0 <= t.ms < 1000.0
    assert t.s == pytest.approx(t.ms / 1000)


def test_memory_and_summary_on_cpu() -> None:
    D.reset_peak_memory("cpu")  # a no-op, but must not fail
    assert D.peak_memory_mb("cpu") > 1.0  # a Python process with torch uses far more than 1 MiB
    info = D.device_summary("cpu")
    assert info["device"] == "cpu" and info["torch"] == torch.__version__
    assert info["capability"] is None and info["autocast_dtype"] is None
    assert {"name", "cuda", "profile"} <= info.keys()


# -- imports -----------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("first", [
    "import course.device",
    "import course.profile",
    "from course.profile import describe; describe()",
    "from course.device import get_device; get_device()",
    "import course; course.profile(); course.device.get_device()",
    "import course.train",
])
def test_each_module_imports_first_in_a_fresh_interpreter(first: str) -> None:
    """Whatever is imported first, both modules load completely (no half-initialised
    module from an import cycle) and describe() works."""
    code = (f"{first}\n"
            "import course.device, course.profile\n"
            "assert callable(course.device.get_device) and callable(course.profile.pick)\n"
            "assert course.profile.profile is course.device.profile\n"
            "print(course.profile.describe())\n")
    env = {**os.environ, "COURSE_PROFILE": "quick"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "profile=quick" in proc.stdout


def _course_imports() -> dict[str, set[str]]:
    """Module -> the ``course`` modules it imports anywhere (top level or in a function)."""
    pkg_dir = ROOT / "course"
    names = {}
    for path in pkg_dir.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for mod, path in names.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        graph[mod] = {m for m in found if m in names and m != mod}
    return graph


def test_course_has_no_import_cycle() -> None:
    graph = _course_imports()
    assert "course.profile" in graph["course.train"]  # the parser sees imports at all

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    cycles = sorted(m for m in graph if m in reachable(m))
    assert not cycles, f"import cycle through {cycles}: " + ", ".join(
        f"{m} -> {sorted(graph[m])}" for m in cycles)
