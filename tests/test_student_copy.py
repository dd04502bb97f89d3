"""The student copy (``python -m autograder student-copy``): what the class receives.

- it holds the release, the `course` package, the student README and the environment, and no
  ``source/``, ``solutions/``, ``autograder/`` (hidden checks) or other instructor files;
- AST proof: no function or class defined in the solution regions of an open assignment's
  source notebooks is in any .py file or notebook of the copy, by name (other than the
  release's own stubs) or by normalised body; the check itself is shown to catch the
  references, renamed copies and stubs gone wrong;
- a closed assignment ships its references;
- the copy's `course` imports in a fresh interpreter that cannot reach this repository;
- the released 02 notebook, with its solutions filled in, runs top to bottom there
  (quick profile), and its first cell installs `course` from the copy where it is missing.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import classroom, release
from autograder import student_copy as sc

ROOT = Path(__file__).resolve().parent.parent
A01 = "01_attention_seq2seq"
A02 = "02_transformer_blocks"
A03 = "03_local_attention"
A04 = "04_vit"
A05 = "05_swin"
A06 = "06_unet"
AIDS = release.assignments(ROOT)
#: site-packages of this environment: a `python -S` child gets torch & co. from it, without the .pth
#: files that make this repository's own `course` and `autograder` importable (editable install).
SITE = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
TOP_LEVEL = {".gitignore", "Makefile", "README.md", "assignments", "course", "environment.yml", "jupyter-config",
             "nbgrader_config.py", "pyproject.toml"}
#: What 02's open copy must not hold: course.nn's blocks that answer 02.
ANSWERS_02 = {"scaled_dot_product_attention", "MultiHeadAttention", "sinusoidal_positional_encoding", "causal_mask",
              "MLP", "BlockConfig", "TransformerBlock", "EncoderBlock", "DecoderBlock", "TransformerConfig", "Transformer"}
#: What 01's open copy must not hold: course.seq2seq, every definition of which answers 01.
ANSWERS_01 = {"dot_score", "scaled_dot_score", "general_score", "additive_score", "masked_softmax", "AdditiveAttention",
              "Encoder", "AttentionDecoder", "fixed_context", "FixedContext", "PlainDecoder", "Seq2Seq", "greedy_decode",
              "beam_search"}
#: What 03's open copy must not hold: course.local_attention, every definition of which answers 03.
ANSWERS_03 = {"local_attention_naive", "local_attention", "local_attention_chunked", "LocalAttention2d", "NonLocalBlock",
              "ResBlock", "ResNet"}
#: What 04's open copy must not hold: course.vit's answers (its adapters to torchvision's names ship).
ANSWERS_04 = {"patchify", "LinearPatchEmbedding", "ConvPatchEmbedding", "ViTBlock", "ViT", "soft_cross_entropy",
              "attention_rollout", "position_similarity"}
#: What 05's open copy must not hold: course.swin's answers (its adapters to torchvision's names ship).
ANSWERS_05 = {"window_partition", "window_reverse", "relative_position_index", "shift_mask", "shifted_window_attention",
              "ShiftedWindowAttention", "PatchMerging", "SwinBlock", "Swin"}
#: What 06's open copy must not hold: course.unet's answers (double_conv, a helper its notebook imports, ships).
ANSWERS_06 = {"fc_to_conv", "conv_transpose2d_stamp", "max_unpool", "UNet", "bce_loss", "soft_dice_loss",
              "combined_loss", "pixel_accuracy", "iou", "dice"}


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The student copy as configured (02 open), built once (the release is checked by test_release)."""
    out = tmp_path_factory.mktemp("student") / "class"
    sc.build(out, check_release=False)
    return out


@pytest.fixture(scope="module")
def closed_copy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student-closed") / "class"
    sc.build(out, closed=[A02], check_release=False)
    return out


def _isolated(code: str, path: list[Path | str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in ``python -S`` with only ``path`` (then site-packages) to import from."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COVERAGE"))}
    environ.update(PYTHONPATH=os.pathsep.join([str(p) for p in path] + SITE), **env)
    return subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


# -- what is in it -----------------------------------------------------------------------------------------

def test_copy_holds_what_students_need_and_nothing_else(copy):
    assert {p.name for p in copy.iterdir()} == TOP_LEVEL
    for gone in ("source", "solutions", "autograder", "tests", "benchmarks", ".ci", "gradebook.db"):
        assert not list(copy.rglob(gone)), f"{gone} is in the student copy"
    # the release as committed (so a submitted notebook matches what grading regenerates) ...
    for aid in AIDS:
        for nb in sorted((ROOT / "assignments" / aid).glob("*.ipynb")):
            assert (copy / "assignments" / aid / nb.name).read_bytes() == nb.read_bytes(), nb
    # ... and `course`, the same apart from the withheld definitions
    ours = {p.relative_to(ROOT / "course") for p in (ROOT / "course").rglob("*.py")}
    theirs = {p.relative_to(copy / "course") for p in (copy / "course").rglob("*.py")}
    assert ours == theirs
    changed = {str(p) for p in ours if (ROOT / "course" / p).read_bytes() != (copy / "course" / p).read_bytes()}
    assert changed == {"nn.py", "seq2seq.py", "local_attention.py", "vit.py", "swin.py", "unet.py"}
    assert sc.check_copy(copy, ROOT, AIDS) == []


def test_environment_files_install_course_alone(copy):
    project = tomllib.loads((copy / "pyproject.toml").read_text())
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["course*"]
    deps = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["lab"]
    assert set(deps) <= set(ours["dependencies"]), "the copy's requirements must be the instructor's, same versions"
    assert {d.split(">")[0].split("=")[0].split("<")[0] for d in project["project"]["dependencies"]} == set(sc.RUNTIME)
    env = (copy / "environment.yml").read_text()
    assert all(f"- {d}\n" in env for d in deps) and "- -e .\n" in env
    make = (copy / "Makefile").read_text()
    assert "\nsetup:" in make and "\nlab: setup" in make and "autograder" not in make
    config = (copy / "nbgrader_config.py").read_text()
    assert "autograder" not in config and 'c.Execute.kernel_name = "python3"' in config
    assert sorted(p.relative_to(copy) for p in (copy / "jupyter-config").rglob("*") if p.is_file()) == \
        sorted(p.relative_to(ROOT) for p in (ROOT / "jupyter-config").rglob("*") if p.is_file())


def test_readme_is_the_student_part(copy):
    text = (copy / "README.md").read_text()
    assert text.startswith("# ") and "make lab" in text
    for instructor_only in ("## For instructors", "autograder/checks", "python -m autograder", "hidden checks"):
        assert instructor_only not in text, instructor_only


def test_notebooks_install_course_first_and_stay_sealed(copy):
    from nbgrader.utils import compute_checksum

    for nb_path in sorted((copy / "assignments").glob("*/*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert release.INSTALL_LINE.search(first.source), f"{nb_path.name}: the first code cell must install course"
        assert release.install_line(classroom.PACKAGE_URL) in first.source
        for cell in nb.cells:  # nbgrader's Validate would complain about a locked cell that changed
            md = cell.metadata.get("nbgrader", {})
            if md.get("locked") and "checksum" in md:
                assert compute_checksum(cell) == md["checksum"], md["grade_id"]


# -- the AST proof -----------------------------------------------------------------------------------------

def test_no_solution_definition_of_an_open_assignment_is_in_the_copy(copy):
    answers = sc.solution_definitions(ROOT, AIDS)
    names = {a.qualname for a in answers}
    # the proof is not vacuous: it knows 02's answers, methods included ...
    assert {"scaled_dot_product_attention", "MultiHeadAttention", "MultiHeadAttention.forward", "causal_mask",
            "sinusoidal_positional_encoding", "EncoderBlock._sa_block", "DecoderBlock.forward", "Transformer.encode",
            "greedy_decode", "translation_loss"} <= names
    # ... and reads every .py file and every code cell of the copy
    found, unparsed = sc.definitions(copy)
    assert unparsed == []
    assert {d.path for d in found} >= {"course/nn.py", "course/testing.py", "course/data/text.py",
                                       f"assignments/{A02}/{A02}.ipynb"}
    # same name or same normalised body: nothing, except the release's own stubs (same cell, other body)
    assert sc.find_leaks(copy, ROOT, AIDS) == []
    stubs = [d for d in found if d.qualname in names]
    assert stubs and all(d.path.startswith("assignments/") for d in stubs)
    bodies = {a.shape for a in answers} | {a.structure for a in answers}
    assert not [d.where for d in found if d.shape in bodies or d.structure in bodies]


def test_the_proof_catches_references_renamed_copies_and_misplaced_answers(closed_copy, tmp_path):
    # the references of course.nn, where 02 is closed but checked as open: by name and by body
    leaks = "\n".join(sc.find_leaks(closed_copy, ROOT, [A02]))
    for expected in ("course/nn.py line", "scaled_dot_product_attention has the name",
                     "MultiHeadAttention has the name", "causal_mask has the body of causal_mask",
                     "TransformerBlock.forward has the body of EncoderBlock.forward"):
        assert expected in leaks, expected
    # planted: a solution under another name with other local names, in a module and in a notebook cell;
    # a class with a solution's name in another notebook; and nothing else is reported
    planted = tmp_path / "planted"
    (planted / "course").mkdir(parents=True)
    (planted / "course" / "masks.py").write_text(textwrap.dedent('''\
        import torch

        def lower_triangle(n, where=None):
            """Not called causal_mask, but it is."""
            return torch.ones(n, n, dtype=torch.bool, device=where).tril()

        def upper_triangle(n):
            return torch.ones(n, n, dtype=torch.bool).triu()
        '''))
    loss_cell = nbformat.v4.new_code_cell(textwrap.dedent('''\
        def seq2seq_loss(net, b, pad=0, eps=0.1):
            inputs, targets = b.tgt[:, :-1], b.tgt[:, 1:]
            out = net(b.src, inputs)
            return F.cross_entropy(out.reshape(-1, out.size(-1)), targets.reshape(-1),
                                   ignore_index=pad, label_smoothing=eps)'''))
    mha_cell = nbformat.v4.new_code_cell("%matplotlib inline\nclass MultiHeadAttention(nn.Module):\n    pass")
    (planted / "assignments" / "04_vit").mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[loss_cell, mha_cell]), planted / "assignments/04_vit/04_vit.ipynb")
    leaks = sc.find_leaks(planted, ROOT, [A02])
    assert len(leaks) == 3, leaks
    for expected in ("course/masks.py line 3: lower_triangle has the body of causal_mask",
                     "assignments/04_vit/04_vit.ipynb cell 1 line 1: seq2seq_loss has the body of translation_loss",
                     "assignments/04_vit/04_vit.ipynb cell 2 line 2: MultiHeadAttention has the name of a solution"):
        assert any(leak.startswith(expected) for leak in leaks), (expected, leaks)
    # a closed assignment is not checked
    assert sc.find_leaks(planted, ROOT, []) == []


def test_a_cell_that_does_not_parse_is_a_finding(tmp_path):
    (tmp_path / "a").mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def f(:\n    pass")]),
                   tmp_path / "a" / "x.ipynb")
    [leak] = sc.find_leaks(tmp_path, ROOT, [A02])
    assert leak.startswith("a/x.ipynb cell 1: ") and leak.endswith("cannot be parsed, so it cannot be checked")


# -- the declaration and the cut ---------------------------------------------------------------------------

def test_declaration_withholds_02s_references_while_it_is_open():
    assert sc.withheld(ROOT) == {"course.nn": dict.fromkeys(ANSWERS_02, A02),
                                 "course.seq2seq": dict.fromkeys(ANSWERS_01, A01),
                                 "course.local_attention": dict.fromkeys(ANSWERS_03, A03),
                                 "course.vit": dict.fromkeys(ANSWERS_04, A04),
                                 "course.swin": dict.fromkeys(ANSWERS_05, A05),
                                 "course.unet": dict.fromkeys(ANSWERS_06, A06)}
    assert sc.withheld(ROOT, closed=[A02, A03, A04, A05, A06]) == {"course.seq2seq": dict.fromkeys(ANSWERS_01, A01)}
    assert sc.withheld(ROOT, closed=[A01, A02, A03, A04, A05, A06]) == {}


def test_an_undeclared_reference_or_an_unknown_assignment_stops_the_build(monkeypatch, tmp_path):
    monkeypatch.setattr(classroom, "REFERENCES", tuple(r for r in classroom.REFERENCES if r.name != "causal_mask"))
    with pytest.raises(sc.StudentCopyError, match=r"course\.nn\.causal_mask is not declared"):
        sc.build(tmp_path / "out", check_release=False)
    monkeypatch.undo()
    with pytest.raises(sc.StudentCopyError, match=r"closed assignment '07_nope' is not a folder of source/"):
        sc.build(tmp_path / "out", closed=["07_nope"], check_release=False)
    assert not (tmp_path / "out").exists()


MODULE = '''\
"""A toy reference module."""
import functools

__all__ = ["attend", "Block", "helper", "keep"]

_SCALE = 2.0


def _unused():
    return 0


@functools.lru_cache
def attend(x):
    return _SCALE * x


class Block:
    def f(self, x):
        return attend(x)


def keep(x):
    return x + 1


def helper(x):
    return keep(x)
'''


def test_strip_module_cuts_definitions_their_private_helpers_and_all():
    out = sc.strip_module(MODULE, {"attend": "02_x", "Block": "02_x"}, "course.toy")
    tree = ast.parse(out)
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert top == {"_unused", "keep", "helper", "__getattr__"}  # _SCALE went with attend, _unused was never used
    assert "_SCALE" not in out and "lru_cache" not in out
    assert '__all__ = [\n    "helper",\n    "keep",\n]' in out
    namespace: dict = {"__name__": "course.toy"}
    exec(compile(out, "toy", "exec"), namespace)
    assert namespace["helper"](1) == 2
    with pytest.raises(AttributeError, match="answers assignment 02_x, and ships once that assignment is closed"):
        namespace["__getattr__"]("attend")
    with pytest.raises(sc.StudentCopyError, match=r"kept code uses a definition .*helper uses keep"):
        sc.strip_module(MODULE, {"keep": "02_x"}, "course.toy")


def test_output_never_lands_in_the_repository(tmp_path):
    for bad in (ROOT, ROOT.parent, ROOT / "source" / "x", ROOT / "course" / "x"):
        with pytest.raises(sc.StudentCopyError, match="choose another output"):
            sc.build(bad, check_release=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(sc.StudentCopyError, match="exists and is not empty"):
        sc.build(tmp_path / "full", check_release=False)
    with pytest.raises(sc.StudentCopyError, match="does not look like an earlier student copy"):
        sc.build(tmp_path / "full", force=True, check_release=False)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


# -- closed assignments ------------------------------------------------------------------------------------

def test_a_closed_assignment_ships_its_references(closed_copy):
    assert (closed_copy / "course" / "nn.py").read_bytes() == (ROOT / "course" / "nn.py").read_bytes()
    assert sc.check_copy(closed_copy, ROOT, [A01]) == []  # with 02 closed only 01 is open


# -- the copy's course, alone ------------------------------------------------------------------------------

def test_copys_course_imports_where_this_repository_cannot_be_reached(copy, closed_copy, tmp_path):
    code = f'''
        import importlib, importlib.util, json, sys
        assert importlib.util.find_spec("autograder") is None, "the instructor's package is reachable"
        mods = ["course", *("course." + m for m in ("profile", "device", "train", "plots", "testing", "data",
                                                    "nn", "results", "data.augment", "data.cifar10", "data.isbi"))]
        for m in mods:
            importlib.import_module(m)
        import course.nn, torch
        files = sorted({{m.__file__ for name, m in sys.modules.items() if name.split(".")[0] == "course"}})
        try:
            course.nn.MultiHeadAttention
            message = None
        except AttributeError as e:
            message = str(e)
        print(json.dumps(dict(files=files, all=course.nn.__all__, message=message,
                              has={{n: hasattr(course.nn, n) for n in {sorted(ANSWERS_02)!r}}},
                              fingerprint=float(course.nn.fingerprint(torch.ones(3, dtype=torch.float64))[0]))))
    '''
    for folder, shipped in ((copy, False), (closed_copy, True)):
        run = _isolated(code, [folder], cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout.splitlines()[-1])
        assert got["files"] and all(f.startswith(str(folder / "course")) for f in got["files"]), got["files"]
        assert set(got["has"].values()) == {shipped}
        assert got["fingerprint"] == float.fromhex("0x1.fffffffffffffp-1")  # one ulp below 1: still works
        if shipped:
            assert got["message"] is None and set(got["all"]) > ANSWERS_02
        else:
            assert sorted(got["all"]) == ["fingerprint", "to_torch_decoder_layer", "to_torch_encoder_layer",
                                          "to_torch_mha"]  # the adapters answer nothing
            assert "answers assignment 02_transformer_blocks" in got["message"]


# -- the notebook in the copy ------------------------------------------------------------------------------

CHECK_ALONE = '''\
import sys
_here = {here!r}
_loaded = sorted({{m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
                  and m.__name__.split(".")[0] in ("course", "autograder")}})
assert _loaded and all(f.startswith(_here) for f in _loaded), _loaded
import importlib
for _module, _name in {withheld!r}:
    assert not hasattr(importlib.import_module(_module), _name), (_module, _name)
print("ran on the copy's course alone")'''


@pytest.mark.slow
@pytest.mark.parametrize("aid", [A01, A02, A03, A04, A05, A06])
def test_released_notebook_runs_in_the_copy_with_the_solutions(aid, copy, tmp_path, monkeypatch):
    """Each release from the copy, solution cells filled from source/, runs top to bottom in the quick
    profile in a kernel (python -S) that imports only the copy's course, where the references that answer
    it are missing (its grade cells then substitute nothing: the filled-in solutions stand in)."""
    from nbclient import NotebookClient

    from autograder.demo import fill

    kernels = tmp_path / "jupyter" / "kernels" / "copy-python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-S", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "student copy", "language": "python",
        "env": {"PYTHONPATH": os.pathsep.join([str(copy)] + SITE), "COURSE_PROFILE": "quick", "MPLBACKEND": "Agg"},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("COURSE_RESULTS", raising=False)
    folder = copy / "assignments" / aid
    nb = fill(nbformat.read(folder / f"{aid}.ipynb", as_version=4),
              nbformat.read(ROOT / "source" / aid / f"{aid}.ipynb", as_version=4))
    withheld = sorted((module, name) for module, names in sc.withheld(ROOT).items() for name in names)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK_ALONE.format(here=str(copy / "course"), withheld=withheld)))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="copy-python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    seconds = time.perf_counter() - t0
    assert "ran on the copy's course alone" in nb.cells[-1].outputs[0]["text"]
    assert seconds < 120, f"the notebook took {seconds:.0f} s in the quick profile"


@pytest.mark.slow
def test_first_cell_installs_course_from_the_class_repository_where_it_is_missing(copy, tmp_path):
    """The install cell of the copy's notebook, pointed at a zip of the copy (as on Colab with a zip URL),
    installs its `course` into a Python that has none; where `course` is importable it does nothing."""
    zipped = sc.build(tmp_path / "class.zip", make_zip=True, check_release=False).out
    with zipfile.ZipFile(zipped) as z:
        names = z.namelist()
    assert all(n.startswith("class/") for n in names)
    assert sorted(n[len("class/"):] for n in names) == sorted(  # (other tests ran the copy: no __pycache__)
        p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    nb = nbformat.read(copy / "assignments" / A02 / f"{A02}.ipynb", as_version=4)
    install = next(c for c in nb.cells if c.cell_type == "code").source
    cell = release.INSTALL_LINE.sub(f"COURSE_PACKAGE_URL = {str(zipped)!r}", install)
    target = tmp_path / "site"
    target.mkdir()
    env = dict(PIP_TARGET=str(target), PIP_NO_DEPS="1", PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="false",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    code = f'''
        import importlib.util
        assert importlib.util.find_spec("course") is None
        exec({cell!r})
        import course.nn
        assert course.__file__.startswith({str(target)!r}), course.__file__
        assert not hasattr(course.nn, "MultiHeadAttention")
        exec({cell!r})  # now a no-op
        print("installed")
    '''
    run = _isolated(code, [target], cwd=tmp_path, **env)
    assert run.returncode == 0 and run.stdout.strip().endswith("installed"), run.stdout + run.stderr
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["course"]
    # without a URL and without course: a clear error, no pip
    no_url = release.INSTALL_LINE.sub("COURSE_PACKAGE_URL = None", install)
    run = _isolated(f"exec({no_url!r})", [tmp_path / "empty"], cwd=tmp_path)
    assert run.returncode == 1 and "ModuleNotFoundError: the `course` package is not installed" in run.stderr


@pytest.mark.slow
def test_cli_builds_the_zip_after_checking_the_release(tmp_path, capsys):
    from autograder import cli

    assert cli.main(["student-copy", str(tmp_path / "class"), "--zip"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'class.zip'}" in out and "course.nn.MultiHeadAttention (02_transformer_blocks)" in out
    first = (tmp_path / "class.zip").read_bytes()
    assert cli.main(["student-copy", str(tmp_path / "class"), "--zip"]) == 1  # exists: not replaced silently
    assert cli.main(["student-copy", str(tmp_path / "class.zip"), "--zip", "--force"]) == 0
    assert (tmp_path / "class.zip").read_bytes() == first  # the same copy gives the same zip
