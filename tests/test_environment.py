"""environment.yml (conda) and pyproject.toml (pip) describe the same environment."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip = [line.strip()[2:] for line in lines[start + 1:] if line.strip().startswith("- ")]
    got = dict(_norm(r) for r in pip if not r.startswith("-e"))
    assert got == wanted, (
        f"environment.yml and pyproject.toml disagree: only in pyproject {set(wanted.items()) - set(got.items())}, "
        f"only in environment.yml {set(got.items()) - set(wanted.items())}")
    assert "-e ." in pip, "environment.yml must install the course package itself (- -e .)"
