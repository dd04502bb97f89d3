"""Build the student copy: what the class receives, ready to push as the class repository.

``python -m autograder student-copy OUT [--zip] [--closed AID ...]`` writes::

    OUT/
      README.md            the student part of this repository's README
      pyproject.toml       the `course` package alone (pip install . / pip install git+URL on Colab)
      environment.yml      the same for conda
      Makefile             make setup (venv + JupyterLab + nbgrader's Validate), make lab
      nbgrader_config.py   Validate runs the notebook as the graders do (kernel, time per cell)
      jupyter-config/      JupyterLab settings that `make setup` installs
      .gitignore
      assignments/         the release (nbgrader's student version); each notebook's first cell
                           installs `course` from PACKAGE_URL where it is missing (Colab)
      course/              the course package without the definitions that answer an open assignment

and nothing else: no ``source/``, ``solutions/``, ``autograder/`` (hidden checks included),
``tests/`` or ``benchmarks/``.

Which definition answers which assignment, which assignments are closed and where the
notebooks install ``course`` from is declared once, in :mod:`autograder.classroom`. A
definition that answers an open assignment is cut out of its module by its AST node's
lines; private helpers only it used go with it, ``__all__`` is updated, and a module
``__getattr__`` tells whoever asks for it that it ships once the assignment is closed. The
build fails when a kept definition uses a removed one.

Before anything is written, :func:`find_leaks` compares every function and class of every
``.py`` file and every notebook of the copy with those defined in the solution cells of
the open assignments' source notebooks (AST, docstrings and local names normalised): a
definition with the same name (other than the release's own stub) or the same body stops
the build. A grading kernel imports the same cut of ``course`` (:func:`kernel_package`); the hidden checks
run with the full one.
"""
from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import stat
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import classroom
from autograder import config as cfg
from autograder import release
from autograder.release import INSTALL_LINE, assignments, install_line

#: The student part of README.md lies between these markers (else: its "## For students" section).
README_BEGIN, README_END = "<!-- student:begin -->", "<!-- student:end -->"
#: Distributions of the instructor's pyproject that the copy needs: to import `course` and run the notebooks
#: (also on Colab), and for JupyterLab with nbgrader's Validate button (the `lab` extra, `make setup`).
RUNTIME = ("torch", "torchvision", "numpy", "matplotlib", "tqdm", "sacrebleu")
LAB = ("nbgrader", "jupyterlab", "ipykernel")
#: Folders of this repository an OUT may never be, or be inside of.
PROTECTED = ("source", "solutions", "autograder", "course", cfg.RELEASE, "tests", ".git", ".venv")
#: Solution bodies smaller than this many AST nodes (``return self.net(x)``: 8) are too common to prove a
#: copy by body; they are still caught by name. The smallest of 02 (``causal_mask``) has 21.
MIN_BODY_NODES = 12
#: Comment left where a withheld definition was.
WITHHELD_NOTE = "# withheld while its assignment is open:"
#: Appended to a module the copy withholds definitions of (ENTRIES: one ``"name": "assignment",`` a line).
WITHHELD_TRAILER = f'''\
# -- withheld from the class's copy {"-" * 66}
# These definitions answer assignments that are still open; they ship once the assignment is closed.
_WITHHELD = {{
ENTRIES}}


def __getattr__(name: str):
    if name in _WITHHELD:
        raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}} in the class's copy: it "
                             f"answers assignment {{_WITHHELD[name]}}, and ships once that assignment is closed")
    raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")
'''
#: Fixed time of every zip entry, so that the same copy gives the same zip.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


class StudentCopyError(RuntimeError):
    pass


# -- the declaration ---------------------------------------------------------------------------------------

def _module_path(course_dir: Path, module: str) -> Path:
    parts = module.split(".")
    base = Path(course_dir).joinpath(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    raise StudentCopyError(f"autograder/classroom.py names module {module}, which is not in {course_dir}")


def _top_level(tree: ast.Module) -> dict[str, ast.stmt]:
    """Top-level functions and classes of a module by name."""
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def withheld(course_dir: Path, closed: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """``module -> {name: assignment}``: the definitions the copy leaves out while their assignment is open.

    Checks the declaration first (raises :class:`StudentCopyError` listing every problem): each
    reference names an existing top-level definition and an existing assignment (or None), once; every
    public top-level definition of the reference modules is declared; the closed ones exist."""
    course_dir = Path(course_dir)
    aids = set(assignments(course_dir))
    closed = set(classroom.CLOSED) | set(closed)
    problems = [f"closed assignment {a!r} is not a folder of source/ (known: {sorted(aids)})"
                for a in sorted(closed - aids)]
    seen: dict[tuple[str, str], classroom.Reference] = {}
    defined: dict[str, dict[str, ast.stmt]] = {}
    for ref in classroom.REFERENCES:
        if ref.module not in defined:
            try:
                defined[ref.module] = _top_level(ast.parse(_module_path(course_dir, ref.module).read_text()))
            except StudentCopyError as e:
                problems.append(str(e))
                defined[ref.module] = {}
                continue
        if (ref.module, ref.name) in seen:
            problems.append(f"{ref.module}.{ref.name} is declared twice")
        seen[(ref.module, ref.name)] = ref
        if ref.name not in defined[ref.module]:
            problems.append(f"{ref.module}.{ref.name} is declared but {ref.module} defines no such function or class")
        if ref.answers is not None and ref.answers not in aids:
            problems.append(f"{ref.module}.{ref.name} answers {ref.answers!r}, which is not a folder of source/")
    for module in classroom.REFERENCE_MODULES:
        names = _top_level(ast.parse(_module_path(course_dir, module).read_text()))
        problems += [f"{module}.{name} is not declared in autograder/classroom.py (REFERENCES): say which "
                     f"assignment it answers, or None" for name in names
                     if not name.startswith("_") and (module, name) not in seen]
    if problems:
        raise StudentCopyError("autograder/classroom.py:\n" + "\n".join("  " + p for p in problems))
    out: dict[str, dict[str, str]] = {}
    for ref in classroom.REFERENCES:
        if ref.answers is not None and ref.answers not in closed:
            out.setdefault(ref.module, {})[ref.name] = ref.answers
    return out


# -- cutting definitions out of a module --------------------------------------------------------------------

def _span(node: ast.stmt) -> tuple[int, int]:
    """First and last line (1-based) of a statement, decorators included."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno


def _bound_names(node: ast.stmt) -> list[str]:
    """Names a top-level statement defines (def, class, simple assignments)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _loads(nodes: Iterable[ast.AST]) -> set[str]:
    return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def strip_module(text: str, remove: dict[str, str], module: str) -> str:
    """``text`` without the top-level definitions ``remove`` (``name -> assignment``).

    Also drops private module-level helpers (``_name``) that only removed code used, rewrites
    ``__all__`` and appends ``_WITHHELD`` and a ``__getattr__`` naming the assignment. Raises
    :class:`StudentCopyError` when kept code uses a removed name or the module has its own
    ``__getattr__``."""
    tree = ast.parse(text)
    top = _top_level(tree)
    missing = sorted(set(remove) - set(top))
    if missing:
        raise StudentCopyError(f"{module}: no top-level definition {missing}")
    if "__getattr__" in top:
        raise StudentCopyError(f"{module} defines __getattr__: the copy cannot add its own")
    gone = {id(top[name]) for name in remove}
    while True:  # private helpers (`_name`) that only removed code used go too
        kept = [n for n in tree.body if id(n) not in gone]
        used_by_gone = _loads(n for n in tree.body if id(n) in gone)
        orphans = []
        for n in kept:
            names = _bound_names(n)
            if names and all(x.startswith("_") and not x.startswith("__") for x in names) \
                    and not set(names) & _loads(k for k in kept if k is not n) and set(names) & used_by_gone:
                orphans.append(n)
        if not orphans:
            break
        gone |= {id(n) for n in orphans}
    kept = [n for n in tree.body if id(n) not in gone]
    removed_names = {name for n in tree.body if id(n) in gone for name in _bound_names(n)}
    users = sorted({f"{_bound_names(n)[0] if _bound_names(n) else 'line ' + str(n.lineno)} uses {name}"
                    for n in kept for name in _loads([n]) & removed_names})
    if users:
        raise StudentCopyError(
            f"{module}: kept code uses a definition that answers an open assignment ({'; '.join(users)}): "
            f"declare the user in autograder/classroom.py for that assignment too, or stop using it")

    lines = text.split("\n")
    edits: list[tuple[int, int, list[str]]] = []  # (first, last) 1-based, replacement lines
    for n in tree.body:
        if id(n) in gone:
            first, last = _span(n)
            note = [f"{WITHHELD_NOTE} {name} ({remove[name]})" for name in _bound_names(n) if name in remove]
            edits.append((first, last, note))
        elif "__all__" in _bound_names(n) and isinstance(getattr(n, "value", None), (ast.List, ast.Tuple)):
            names = [e.value for e in n.value.elts if isinstance(e, ast.Constant) and e.value not in removed_names]
            body = "".join(f'    "{name}",\n' for name in names)
            edits.append((*_span(n), f"__all__ = [\n{body}]".split("\n")))
    for first, last, new in sorted(edits, reverse=True):
        lines[first - 1:last] = new
    out = "\n".join(lines)
    # one note for a run of withheld definitions, no blank lines between them
    run = re.compile(rf"(^{re.escape(WITHHELD_NOTE)} .*)\n\s*\n(?={re.escape(WITHHELD_NOTE)} )", re.M)
    while run.search(out):
        out = run.sub(r"\1\n", out)
    out = re.sub(r"\n{4,}", "\n\n\n", out).rstrip("\n")
    entries = "".join(f'    "{name}": "{aid}",\n' for name, aid in sorted(remove.items()))
    out += "\n\n\n" + WITHHELD_TRAILER.replace("ENTRIES", entries)
    ast.parse(out)  # a bug here must not ship
    return out


# -- the package a grading kernel imports ---------------------------------------------------------------------

def kernel_withheld(aid: str | None) -> dict[str, dict[str, str]]:
    """``module -> {name: assignment}``: what the ``course`` of a kernel grading ``aid`` leaves out, the
    class's copy (references of open assignments) and, closed or not, the references that answer ``aid``."""
    out: dict[str, dict[str, str]] = {}
    for ref in classroom.REFERENCES:
        if ref.answers is not None and (ref.answers not in classroom.CLOSED or ref.answers == aid):
            out.setdefault(ref.module, {})[ref.name] = ref.answers
    return out


def kernel_package(dest: Path, aid: str | None, package: Path | None = None) -> Path:
    """Write into the empty folder ``dest`` the ``course`` package that a kernel grading ``aid`` imports
    (:func:`kernel_withheld` cut out of ``package``, default: the one imported here); return its folder.

    The student's code runs in that kernel before any hidden check: what it can read there, it can print into
    its feedback. The checks' references reach the kernel later, once every cell has run, compiled
    (:mod:`autograder.checkrunner`). Everything is world-readable (the kernel runs as another uid) and
    byte-compiled (a kernel writes no ``.pyc``)."""
    import compileall

    import course

    package = Path(package or Path(course.__file__).resolve().parent)
    target = Path(dest) / "course"
    _copy_tree(package, target)
    for module, names in kernel_withheld(aid).items():
        path = target.joinpath(*module.split(".")[1:]).with_suffix(".py")
        path.write_text(strip_module(path.read_text(), names, module))
    compileall.compile_dir(str(target), quiet=1, workers=1)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


# -- the leak check -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Definition:
    """A function or class (any depth) of a file, with its normalised body."""

    qualname: str  # "MultiHeadAttention.forward"
    where: str  # "course/nn.py line 42", "assignments/02_x/02_x.ipynb cell 'mha' line 3"
    shape: str  # the body, normalised (_shape): docstrings, annotations, decorators dropped, locals renamed
    structure: str  # the same with the attribute names of self/cls renamed too (self.norm1 ~ self.ln1)
    size: int  # AST nodes of the normalised body
    path: str = ""  # file relative to the folder searched
    cell: str | None = None  # grade_id of the notebook cell, if any


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SELF = ("self", "cls")


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _locals(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names bound inside ``fn`` (parameters included), nested scopes too, minus global/nonlocal ones."""
    names, declared = set(), set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, _DEFS) and node is not fn:
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared |= set(node.names)
    return names - declared


class _Normalise(ast.NodeTransformer):
    """Rename the local names of a function to _v0, _v1, ... in order of first appearance (with
    ``attrs``, also the attributes of self/cls to _a0, _a1, ...); drop docstrings, annotations and
    decorators. A class keeps its attribute and method names; each method is normalised alone."""

    def __init__(self, local: set[str], attrs: bool):
        self.local, self.attrs, self.names, self.attr_names = local, attrs, {}, {}

    def _name(self, name: str) -> str:
        return self.names.setdefault(name, f"_v{len(self.names)}") if name in self.local else name

    def visit_Attribute(self, node):
        if self.attrs and isinstance(node.value, ast.Name) and node.value.id in _SELF:
            node.attr = self.attr_names.setdefault(node.attr, f"_a{len(self.attr_names)}")
        return self.generic_visit(node)

    def visit_Name(self, node):
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node):
        node.arg, node.annotation, node.type_comment = self._name(node.arg), None, None
        return node

    def visit_ExceptHandler(self, node):
        if node.name:
            node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_alias(self, node):
        if node.asname:
            node.asname = self._name(node.asname)
        return node

    def visit_AnnAssign(self, node):
        node.annotation = ast.Constant(None)
        return self.generic_visit(node)

    def _def(self, node):
        node.name = self._name(node.name)
        node.decorator_list = []
        node.body = _strip_docstring(node.body) or [ast.Pass()]
        if isinstance(node, ast.ClassDef):
            node.bases = [self.visit(b) for b in node.bases]
            node.body = [_normalised(n, self.attrs) if isinstance(n, _DEFS) else self.visit(n) for n in node.body]
            return node
        node.returns = None
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _def


def _normalised(node: ast.stmt, attrs: bool = False) -> ast.stmt:
    """A normalised copy of a def/class (see :class:`_Normalise`); its own name is kept."""
    node = copy.deepcopy(node)
    name = node.name
    local = set() if isinstance(node, ast.ClassDef) else _locals(node) - {name}
    node = _Normalise(local, attrs)._def(node)
    node.name = name
    return node


def _body(node: ast.stmt, attrs: bool = False) -> ast.Module:
    """The body of a def (a class: its bases and body), normalised: equal dumps are the same code up to
    local names, docstrings, annotations and decorators (``attrs``: and the attribute names of self)."""
    n = _normalised(node, attrs)
    body = ([ast.Expr(ast.Tuple(elts=n.bases, ctx=ast.Load()))] if isinstance(n, ast.ClassDef) else []) + n.body
    return ast.Module(body=body, type_ignores=[])


def _definition(qualname: str, node: ast.stmt, where: str, path: str, cell: str | None = None) -> Definition:
    body = _body(node)
    return Definition(qualname, where, ast.dump(body), ast.dump(_body(node, attrs=True)),
                      sum(1 for _ in ast.walk(body)) - 1, path, cell)


def _iter_defs(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, ast.stmt]]:
    for node in body:
        if isinstance(node, _DEFS):
            q = f"{prefix}{node.name}"
            yield q, node
            yield from _iter_defs(node.body, q + ".")
        else:  # defs inside if/with/try/for blocks at this level
            for field_name in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field_name, None)
                if isinstance(inner, list):
                    yield from _iter_defs([n for n in inner if isinstance(n, ast.stmt)]
                                          + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body],
                                          prefix)


def _python(cell_source: str) -> str:
    """Cell source as plain Python (IPython magics and shell escapes turned into calls, line numbers kept)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell_source)


def _cell_name(cell: nbformat.NotebookNode, index: int) -> str:
    gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {gid!r}" if gid else f"cell {index + 1}"


def definitions(folder: Path) -> tuple[list[Definition], list[str]]:
    """Every function and class of every .py file and every notebook's code cells under ``folder``,
    and the files or cells that could not be parsed (the check must see everything)."""
    folder = Path(folder)
    defs, unparsed = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or ".ipynb_checkpoints" in path.parts:
            continue
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".py":
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError) as e:
                unparsed.append(f"{rel}: {e}")
                continue
            defs += [_definition(q, n, f"{rel} line {n.lineno}", rel) for q, n in _iter_defs(tree.body)]
        elif path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                try:
                    tree = ast.parse(_python(cell.source))
                except SyntaxError as e:
                    unparsed.append(f"{rel} {_cell_name(cell, i)}: {e}")
                    continue
                gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                defs += [_definition(q, n, f"{rel} {_cell_name(cell, i)} line {n.lineno}", rel, gid)
                         for q, n in _iter_defs(tree.body)]
    return defs, unparsed


def _solution_regions(source: str) -> list[tuple[int, int]]:
    regions, start = [], None
    for lineno, line in enumerate(source.split("\n"), 1):
        if "BEGIN SOLUTION" in line:
            start = lineno
        elif "END SOLUTION" in line and start is not None:
            regions.append((start, lineno))
            start = None
    return regions


def solution_definitions(course_dir: Path, aids: Iterable[str]) -> list[Definition]:
    """The functions and classes (methods included) of the solution cells of ``source/<aid>/*.ipynb``
    whose lines overlap a ``BEGIN SOLUTION``/``END SOLUTION`` region: what answers the assignment.
    ``path`` is the notebook's path in the release (``assignments/<aid>/<name>.ipynb``)."""
    out = []
    for aid in aids:
        for src in sorted((Path(course_dir) / cfg.SOURCE / aid).glob("*.ipynb")):
            nb = nbformat.read(src, as_version=4)
            rel = f"{cfg.RELEASE}/{aid}/{src.name}"
            for i, cell in enumerate(nb.cells):
                md = cell.get("metadata", {}).get("nbgrader", {})
                if cell.cell_type != "code" or not md.get("solution"):
                    continue
                regions = _solution_regions(cell.source)
                tree = ast.parse(_python(cell.source))
                for q, n in _iter_defs(tree.body):
                    first, last = _span(n)
                    if any(b <= last and e >= first for b, e in regions):
                        where = f"{cfg.SOURCE}/{aid}/{src.name} {_cell_name(cell, i)} line {n.lineno}"
                        out.append(_definition(q, n, where, rel, md.get("grade_id")))
    return out


def find_leaks(folder: Path, course_dir: Path, open_aids: Iterable[str]) -> list[str]:
    """Definitions under ``folder`` that repeat one of the open assignments' solution definitions:
    the same qualified name (except the release's own stub: same notebook, same cell), or the same
    normalised body under any name, also with the attributes of ``self`` renamed (bodies of at
    least :data:`MIN_BODY_NODES` nodes). Files or cells that do not parse are reported too (what
    cannot be read cannot be cleared)."""
    answers = solution_definitions(course_dir, open_aids)
    found, unparsed = definitions(folder)
    by_body: dict[str, list[Definition]] = {}
    by_name: dict[str, list[Definition]] = {}
    for a in answers:
        if a.size >= MIN_BODY_NODES:
            by_body.setdefault(a.shape, []).append(a)
            by_body.setdefault(a.structure, []).append(a)
        by_name.setdefault(a.qualname, []).append(a)
    leaks = [f"{u}: cannot be parsed, so it cannot be checked" for u in unparsed]
    # a release's stub of its own exercise (same notebook, cell and name as one of its solution definitions)
    # shares its name with another assignment's exercise (greedy_decode in 01 and 02) without answering it
    stubs = {(a.path, a.cell, a.qualname) for a in solution_definitions(course_dir, assignments(course_dir))}
    for d in found:
        same_body = {id(a): a for key in (d.shape, d.structure) for a in by_body.get(key, [])}
        for a in same_body.values():
            leaks.append(f"{d.where}: {d.qualname} has the body of {a.qualname} ({a.where})")
        for a in by_name.get(d.qualname, []):
            if not (d.path == a.path and d.cell == a.cell) and id(a) not in same_body \
                    and (d.path, d.cell, d.qualname) not in stubs:
                leaks.append(f"{d.where}: {d.qualname} has the name of a solution definition ({a.where})")
    natural = lambda text: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]  # noqa: E731
    return sorted(set(leaks), key=natural)


# -- the files of the copy ----------------------------------------------------------------------------------

def _requirements(course_dir: Path) -> tuple[str, list[str], list[str]]:
    """(version, runtime requirements, lab requirements) from the instructor's pyproject.toml."""
    project = tomllib.loads((course_dir / "pyproject.toml").read_text())["project"]

    def pick(names: tuple[str, ...]) -> list[str]:
        by_name = {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower(): r for r in project["dependencies"]}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise StudentCopyError(f"pyproject.toml: no requirement for {missing} (the student copy needs them)")
        return [by_name[n] for n in names]

    return project["version"], pick(RUNTIME), pick(LAB)


def _pyproject(version: str, runtime: list[str], lab: list[str], requires_python: str) -> str:
    deps = "".join(f'    "{r}",\n' for r in runtime)
    extra = "".join(f'    "{r}",\n' for r in lab)
    return f'''# The course package of the class repository: `pip install -e ".[lab]"` (make setup) locally,
# `pip install "git+<this repository's URL>"` on Colab (each notebook's first cell does it).
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "attention-course"
version = "{version}"
description = "The assignments of the attention & transformers course and the course package they import"
readme = "README.md"
requires-python = "{requires_python}"
license = {{ text = "MIT" }}
dependencies = [
{deps}]

[project.optional-dependencies]
# JupyterLab with nbgrader's Validate button (make setup); Colab needs none of it
lab = [
{extra}]

[tool.setuptools.packages.find]
include = ["course*"]
'''


def _environment(runtime: list[str], lab: list[str], python: str) -> str:
    pip = "".join(f"      - {r}\n" for r in runtime + lab)
    return f"""# conda env create -f environment.yml && conda activate attention-course
name: attention-course
channels:
  - conda-forge
dependencies:
  - python={python}
  - pip
  - pip:
{pip}      - -e .
"""


def _makefile(torch: str) -> str:
    return f"""# The class repository: `make setup` once (creates .venv), then `make lab`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The torch build to install; override for your platform, e.g. make setup TORCH="torch torchvision".
TORCH  ?= {torch}
# Jupyter settings copied from jupyter-config/ into the venv: no news prompt, no nbgrader exchange panels.
JUPYTER_CONFIG := $(patsubst jupyter-config/%,$(VENV)/%,$(shell find jupyter-config -type f))
# extra arguments of `make lab`, e.g. LAB_ARGS="--no-browser --port=8890"
LAB_ARGS ?=

.PHONY: setup lab

setup: $(STAMP) $(JUPYTER_CONFIG)

$(STAMP): pyproject.toml
\ttest -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
\t$(BIN)/python -m pip install -q $(TORCH)
\t$(BIN)/python -m pip install -q -e '.[lab]'
\t$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
\ttouch $(STAMP)

$(VENV)/%: jupyter-config/% | $(STAMP)
\tmkdir -p $(@D)
\tcp $< $@

## JupyterLab on assignments/ (nbgrader's Validate button reads nbgrader_config.py here)
lab: setup
\t$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=. \\
\t\t--LabApp.default_url=/lab/tree/assignments $(LAB_ARGS)
"""


def _nbgrader_config() -> str:
    return f'''# nbgrader settings of the class repository: JupyterLab's Validate button and `nbgrader validate`
# run a notebook as the graders do (kernel, seconds per cell).
c = get_config()  # noqa: F821
c.Execute.kernel_name = "{cfg.KERNEL_NAME}"
c.Execute.timeout = {cfg.CELL_TIMEOUT_S}
c.Execute.interrupt_on_timeout = True
'''


GITIGNORE = """.venv/
__pycache__/
*.egg-info/
.ipynb_checkpoints/
build/
"""


def student_readme(course_dir: Path) -> str:
    """The copy's README: the title of README.md and its student part (between the student markers,
    else its "## For students" section)."""
    text = (Path(course_dir) / "README.md").read_text()
    title = next((line for line in text.splitlines() if line.startswith("# ")), "# Attention & Transformers")
    if README_BEGIN in text and README_END in text:
        part = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]
    else:
        m = re.search(r"^## For students\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        if not m:
            raise StudentCopyError(f"README.md has no student part ({README_BEGIN} ... {README_END}, "
                                   "or a '## For students' section)")
        part = m.group(1)
    return f"{title}\n\n{part.strip()}\n"


def _check_install_cell(nb: nbformat.NotebookNode, url: str | None, name: str) -> None:
    """The notebook has one install cell, locked, naming the class's package URL (the release writes it)."""
    hits = [c for c in nb.cells if c.cell_type == "code" and INSTALL_LINE.search(c.source)]
    if len(hits) != 1 or not hits[0].get("metadata", {}).get("nbgrader", {}).get("locked"):
        raise StudentCopyError(
            f"{name}: needs exactly one locked cell with a `COURSE_PACKAGE_URL = ...` line (the first code cell, "
            f"which installs `course` on Colab; see source/02_transformer_blocks), found {len(hits)}")
    if INSTALL_LINE.search(hits[0].source).group(0) != install_line(url):
        raise StudentCopyError(f"{name} was released with another package URL than PACKAGE_URL of "
                               f"autograder/classroom.py ({url!r}): run `make release`")


def _copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", release.HISTORY))


@dataclass
class Report:
    out: Path
    withheld: dict[str, dict[str, str]]  # module -> {name: assignment}
    open_assignments: list[str]
    closed: list[str]
    package_url: str | None
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        cut = [f"{m}.{n} ({a})" for m, names in self.withheld.items() for n, a in sorted(names.items())]
        lines = [f"wrote {self.out} ({len(self.files)} files)",
                 f"  open assignments: {', '.join(self.open_assignments) or 'none'}; "
                 f"closed: {', '.join(self.closed) or 'none'}",
                 f"  withheld from course: {', '.join(cut) or 'nothing'}",
                 "  no function or class of an open assignment's solution in any .py file or notebook (AST check)"]
        if not self.package_url:
            lines.append("  note: PACKAGE_URL of autograder/classroom.py is not set: on Colab the notebooks cannot "
                         "install the course package (set it, then `make release`)")
        return "\n".join(lines)


def write(stage: Path, course_dir: Path, remove: dict[str, dict[str, str]]) -> None:
    """Write the copy's files into the empty folder ``stage``."""
    course_dir = Path(course_dir)
    # course/, with the withheld definitions cut out
    _copy_tree(course_dir / "course", stage / "course")
    for module, names in remove.items():
        path = stage / _module_path(course_dir, module).relative_to(course_dir)
        path.write_text(strip_module(path.read_text(), names, module))
    # the release, each notebook pointing at the class repository
    aids = assignments(course_dir)
    for aid in aids:
        src, dest = course_dir / cfg.RELEASE / aid, stage / cfg.RELEASE / aid
        expected = sorted(p.name for p in (course_dir / cfg.SOURCE / aid).glob("*.ipynb"))
        if not src.is_dir() or sorted(p.name for p in src.glob("*.ipynb")) != expected:
            raise StudentCopyError(f"{cfg.RELEASE}/{aid} does not hold the release of source/{aid}: run `make release`")
        for nb_path in sorted(src.glob("*.ipynb")):
            _check_install_cell(nbformat.read(nb_path, as_version=4), classroom.PACKAGE_URL,
                                f"{cfg.RELEASE}/{aid}/{nb_path.name}")
        _copy_tree(src, dest)
    # environment and documentation
    version, runtime, lab = _requirements(course_dir)
    project = tomllib.loads((course_dir / "pyproject.toml").read_text())["project"]
    env = (course_dir / "environment.yml").read_text()
    python = re.search(r"^\s*-\s*python\s*=\s*([0-9.]+)", env, re.M)
    torch = re.search(r"^TORCH\s*\?=\s*(.+)$", (course_dir / "Makefile").read_text(), re.M)
    (stage / "pyproject.toml").write_text(_pyproject(version, runtime, lab, project.get("requires-python", ">=3.10")))
    (stage / "environment.yml").write_text(_environment(runtime, lab, python.group(1) if python else "3.11"))
    (stage / "Makefile").write_text(_makefile(torch.group(1).strip() if torch else "torch torchvision"))
    (stage / "nbgrader_config.py").write_text(_nbgrader_config())
    (stage / ".gitignore").write_text(GITIGNORE)
    (stage / "README.md").write_text(student_readme(course_dir))
    if (course_dir / "jupyter-config").is_dir():
        _copy_tree(course_dir / "jupyter-config", stage / "jupyter-config")


def check_copy(stage: Path, course_dir: Path, open_aids: Iterable[str]) -> list[str]:
    """Everything that must not reach the class, found in ``stage``: solution definitions of open
    assignments (:func:`find_leaks`), nbgrader markers, imports of ``autograder``, instructor folders."""
    problems = find_leaks(stage, course_dir, open_aids)
    for name in (cfg.SOURCE, cfg.SOLUTIONS, "autograder", "tests", "benchmarks"):
        if (stage / name).exists():
            problems.append(f"{name}/ is in the copy")
    for path in sorted(stage.rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".ipynb", ".md", ".toml", ".yml", ".cfg", ".txt", ""):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".ipynb":  # the code and text of the cells, not their JSON
            text = "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
        rel = path.relative_to(stage).as_posix()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            if marker in text:
                problems.append(f"{rel}: contains {marker!r}")
        if re.search(r"^\s*(from|import)\s+autograder\b", text, re.M):
            problems.append(f"{rel}: imports autograder, which students do not have")
    return problems


def _zip(folder: Path, zip_path: Path, top: str) -> None:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(f"{top}/{path.relative_to(folder).as_posix()}", ZIP_DATE)
                info.external_attr = (stat.S_IFREG | (0o755 if os.access(path, os.X_OK) else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, path.read_bytes())


def _check_out(out: Path, course_dir: Path, force: bool) -> None:
    out, repo = out.resolve(), course_dir.resolve()
    if out == repo or repo.is_relative_to(out):
        raise StudentCopyError(f"{out} holds the course repository: choose another output")
    for name in PROTECTED:
        if out.is_relative_to(repo / name):
            raise StudentCopyError(f"{out} is inside {name}/ of the course repository: choose another output")
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not force:
            raise StudentCopyError(f"{out} exists and is not empty (--force replaces it)")
        earlier_copy = (out.suffix == ".zip" and out.is_file() and zipfile.is_zipfile(out)) or (
            out.is_dir() and all((out / n).exists() for n in ("pyproject.toml", "course", cfg.RELEASE))
            and not (out / cfg.SOURCE).exists())
        if not earlier_copy:
            raise StudentCopyError(f"{out} does not look like an earlier student copy: --force replaces only "
                                   "those; remove it yourself or choose another output")


def build(out: Path, *, closed: Iterable[str] = (), make_zip: bool = False, force: bool = False,
          check_release: bool = True, course_dir: Path | None = None) -> Report:
    """Build the student copy into the folder ``out`` (``make_zip``: the zip file ``out``, ``.zip`` added
    if missing, holding one folder named after it). Nothing is written unless every check passes.

    ``check_release``: first rebuild the release in a temporary folder and refuse a stale ``assignments/``
    (as ``python -m autograder release --check``; a few seconds of nbgrader per assignment)."""
    course_dir = Path(course_dir or cfg.repo_root()).resolve()
    out = Path(out)
    if make_zip and out.suffix != ".zip":
        out = out.with_name(out.name + ".zip")
    _check_out(out, course_dir, force)
    closed = sorted(set(classroom.CLOSED) | set(closed))
    remove = withheld(course_dir, closed)
    open_aids = [a for a in assignments(course_dir) if a not in closed]
    if check_release:
        stale = release.check(course_dir)
        if stale:
            raise StudentCopyError("assignments/ is out of date with source/; run `make release`:\n"
                               + "\n".join("  " + p for p in stale))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".student-copy-", dir=out.parent) as tmp:
        stage = Path(tmp) / (out.stem if make_zip else out.name)
        stage.mkdir()
        write(stage, course_dir, remove)
        problems = check_copy(stage, course_dir, open_aids)
        if problems:
            raise StudentCopyError("the student copy would give away answers or instructor files; nothing "
                                   "written:\n" + "\n".join("  " + p for p in problems))
        files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        if make_zip:
            _zip(stage, Path(tmp) / "copy.zip", stage.name)
            shutil.move(Path(tmp) / "copy.zip", out)
        else:
            shutil.move(stage, out)
    return Report(out, remove, open_aids, closed, classroom.PACKAGE_URL, files)
