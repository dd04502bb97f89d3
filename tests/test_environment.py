"""environment.yml (conda) and pyproject.toml (pip) describe the same environment, and
`make setup` gives that environment the course's Jupyter settings (jupyter-config/)."""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "jupyter-config"  # copied into the venv by `make setup`
SERVER_CONFIG = "etc/jupyter/jupyter_server_config.d/zz-attention-course.json"
PAGE_CONFIG = "etc/jupyter/labconfig/page_config.d/attention-course.json"
OVERRIDES = "share/jupyter/lab/settings/overrides.d/attention-course.json"
EXCHANGE_SERVER = ("nbgrader.server_extensions.assignment_list", "nbgrader.server_extensions.course_list")
EXCHANGE_LAB = ("@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:course-list")
NEWS = "@jupyterlab/apputils-extension:notification"


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


# -- Jupyter settings of the course environment ---------------------------------------------

def test_jupyter_config_files_say_what_they_should():
    assert sorted(str(p.relative_to(CONFIG)) for p in CONFIG.rglob("*") if p.is_file()) == sorted(
        [SERVER_CONFIG, PAGE_CONFIG, OVERRIDES])
    server = json.loads((CONFIG / SERVER_CONFIG).read_text())["ServerApp"]["jpserver_extensions"]
    assert server == dict.fromkeys(EXCHANGE_SERVER, False)
    # the .d files are merged in name order; nbgrader's own nbgrader.json enables the extensions
    assert Path(SERVER_CONFIG).name > "nbgrader.json"
    assert json.loads((CONFIG / PAGE_CONFIG).read_text()) == {"disabledExtensions": dict.fromkeys(EXCHANGE_LAB, True)}
    assert json.loads((CONFIG / OVERRIDES).read_text()) == {NEWS: {"fetchNews": "false"}}


venv_only = pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="not running in the course environment that `make setup` creates (.venv)")


@venv_only
@pytest.mark.parametrize("name", [SERVER_CONFIG, PAGE_CONFIG, OVERRIDES])
def test_make_setup_installed_the_jupyter_config(name):
    installed = Path(sys.prefix) / name
    assert installed.is_file(), f"{installed} is missing: run `make setup`"
    assert installed.read_text() == (CONFIG / name).read_text(), f"{installed} is stale: run `make setup`"


@venv_only
def test_the_settings_name_what_the_installed_jupyter_has():
    """The setting and extension names exist in the installed JupyterLab and nbgrader, and
    Jupyter reads the installed files the way they are meant."""
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager
    from jupyterlab.commands import get_app_dir
    from jupyterlab_server.config import get_page_config
    from jupyterlab_server.settings_utils import _get_overrides

    prefix = Path(sys.prefix)
    schema = json.loads((prefix / "share/jupyter/lab/schemas/@jupyterlab/apputils-extension/notification.json")
                        .read_text())
    assert {"const": "false", "title": "Never"} in schema["properties"]["fetchNews"]["oneOf"]
    static = prefix / "share/jupyter/labextensions/@jupyter/nbgrader/static"
    bundle = "".join(p.read_text(errors="replace") for p in static.glob("*.js"))
    for plugin in EXCHANGE_LAB:
        assert f'id:"{plugin}"' in bundle, f"nbgrader's labextension has no plugin {plugin}"

    server = ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
    assert all(server[name] is False for name in EXCHANGE_SERVER), server
    assert server["nbgrader.server_extensions.formgrader"] and server["nbgrader.server_extensions.validate_assignment"]

    app_settings_dir = str(Path(get_app_dir()) / "settings")
    page = get_page_config([str(prefix / "share/jupyter/labextensions")], app_settings_dir)
    assert set(EXCHANGE_LAB) <= set(page["disabledExtensions"])
    overrides, error = _get_overrides(app_settings_dir)
    assert not error and overrides[NEWS]["fetchNews"] == "false"
