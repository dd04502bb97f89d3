"""The students' feedback page as the course renders it (autograder/sanitize.py,
autograder/templates/feedback): maths as MathML with no script and no CDN, an outline
that names exercises, no path of the grading machine.

A small graded notebook (exercise headings in locked cells, grade cells with scores, a
written answer with formulas, a failing test with a torch-style traceback, hostile MathML
in an answer) goes through nbgrader's GenerateFeedback exporter built from the course's
own configuration (``autograder.config.apply``), with the feedback preprocessors that
configuration lists (GetGrades aside: the scores it would read from the gradebook are in
the cells' metadata), then through :func:`harden_feedback_html`. The page is read with
html5lib, which parses the way browsers do.
"""
from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from nbgrader.converters import GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import GetGrades
from traitlets.config import Config

from autograder import config as course_config
from autograder import sanitize
from autograder.sanitize import (
    NeutralisePaths, SanitizeNotebook, feedback_csp, feedback_outline, harden_feedback_html, neutral_paths,
    tex_to_mathml,
)

try:
    import html5lib
except ImportError:  # bleach (a dependency of nbconvert) ships a copy
    from bleach._vendor import html5lib

ROOT = Path(__file__).resolve().parent.parent
MATHML = "{http://www.w3.org/1998/Math/MathML}"
RESOURCES = {"nbgrader": {"notebook": "02_transformer_blocks", "score": 19.5, "max_score": 30.0, "late_penalty": 0.0}}

# --------------------------------------------------------------------------------------
# the notebook
# --------------------------------------------------------------------------------------

VENV = f"{ROOT}/.venv/lib/python3.11/site-packages"
TRACEBACK = [  # as IPython colours it
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mRuntimeError\x1b[0m                              Traceback (most recent call last)",
    "File \x1b[0;32m/tmp/ipykernel_12/3712.py:3\x1b[0m\n\x1b[1;32m      1\x1b[0m q \x1b[38;5;241m=\x1b[39m "
    "torch\x1b[38;5;241m.\x1b[39mrandn(\x1b[38;5;241m2\x1b[39m)\n",
    f"File \x1b[0;32m{VENV}/torch/nn/modules/module.py:1736\x1b[0m, in "
    "\x1b[0;36mModule._wrapped_call_impl\x1b[0;34m(self, *args, **kwargs)\x1b[0m",
    "File \x1b[0;32m/usr/lib/python3.11/json/decoder.py:337\x1b[0m, in \x1b[0;36mJSONDecoder.decode"
    "\x1b[0;34m(self, s)\x1b[0m",
    "File \x1b[0;32m~/.local/lib/python3.11/site-packages/numpy/core/fromnumeric.py:59\x1b[0m",
    "\x1b[0;31mRuntimeError\x1b[0m: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5); weights in "
    "/root/.cache/w.pt",
]
STDERR = (f"{VENV}/torch/nn/modules/transformer.py:385: UserWarning: enable_nested_tensor is True\n"
          f"/tmp/ipykernel_12/3712.py:7: UserWarning: my own warning about {ROOT}/course/nn.py\n")
HOSTILE_MATHML = (
    'Hostile: <math><maction actiontype="statusline"><mtext>x</mtext><mtext>javascript:alert(1)</mtext></maction>'
    '</math> <math href="javascript:alert(2)"><mi xlink:href="javascript:alert(3)" onclick="alert(4)">y</mi></math>'
    ' <math><mtext><script>alert(5)</script><img src=x onerror=alert(6)></mtext>'
    '<semantics><annotation-xml encoding="text/html"><img src=x onerror=alert(7)></annotation-xml></semantics>'
    '<mstyle style="background:url(https://evil.example/p.png)"><mi>z</mi></mstyle></math>'
)
UNCONVERTIBLE = r"\begin{tikzpicture}\draw (0,0) -- (1,1);\end{tikzpicture}"


def _nbg(grade_id: str, **flags) -> dict:
    meta = {"grade_id": grade_id, "grade": False, "solution": False, "locked": False, "task": False,
            "schema_version": 3}
    meta.update(flags)
    return {"nbgrader": meta}


def graded_notebook() -> nbformat.NotebookNode:
    """An autograded submission as GetGrades leaves it (scores in the metadata)."""
    nb = new_notebook()
    failing = new_code_cell("assert sdpa(q, k, v).shape == (2, 3)", execution_count=4,
                            metadata=_nbg("grade_mha", grade=True, locked=True, points=14, score=0.0))
    error = new_output("error", ename="RuntimeError", evalue="mat1 and mat2 shapes cannot be multiplied "
                       "(2x3 and 4x5); weights in /root/.cache/w.pt", traceback=TRACEBACK)
    failing.outputs = [copy.deepcopy(error)]  # (the feedback keeps only its last line: HideHiddenTests)
    answer = new_code_cell("class MultiHeadAttention: ...\nMultiHeadAttention()(q)", execution_count=3,
                           metadata=_nbg("mha", solution=True))
    answer.outputs = [new_output("stream", name="stderr", text=STDERR), error]
    latex_out = new_code_cell("Math(r'\\frac{1}{\\sqrt{d_k}}')", execution_count=5)
    latex_out.outputs = [new_output("display_data", data={"text/latex": r"$\displaystyle \frac{1}{\sqrt{d_k}}$",
                                                          "text/plain": "<IPython.core.display.Math object>"})]
    nb.cells = [
        new_markdown_cell("# Assignment 2 — Transformer blocks\n\nScores are divided by $\\sqrt{d_k}$."),
        new_markdown_cell("## 1. Scaled dot-product attention (14 points)\n\n"
                          "$$\\mathrm{softmax}\\left(\\frac{QK^\\top}{\\sqrt{d_k}}\\right)V$$",
                          metadata=_nbg("head_sdpa", locked=True)),
        new_code_cell("def sdpa(q, k, v): ...", execution_count=1, metadata=_nbg("sdpa", solution=True)),
        new_code_cell("assert sdpa(1, 2, 3) == 4", execution_count=2,
                      metadata=_nbg("grade_sdpa", grade=True, locked=True, points=14, score=14.0)),
        new_markdown_cell("**Question 1 (3 points).** Why $\\sqrt{d_k}$? Use $W \\in \\mathbb{R}^{d\\times d}$, "
                          "$\\operatorname{Var}(q\\cdot k) = d_k$ and $x \\odot y$.",
                          metadata=_nbg("q1_question", locked=True)),
        new_markdown_cell("## 9. My own heading, nearer than the question\n\nThe variance is $d_k$, "
                          "$\\begin{pmatrix}1 & 0\\\\0 & 1\\end{pmatrix}$, $\\text{if } x_{l+1} = x_l$, "
                          f"and this one does not convert: ${UNCONVERTIBLE}$.\n\n" + HOSTILE_MATHML,
                          metadata=_nbg("q1", grade=True, solution=True, points=3, score=2.5)),
        new_markdown_cell("## 2. Multi-head attention (14 points)", metadata=_nbg("head_mha", locked=True)),
        answer,
        failing,
        new_markdown_cell("## <img src=x onerror=alert(8)> 3. Escaped &amp; `code` (2 points)",
                          metadata=_nbg("head_evil", locked=True)),
        new_code_cell("assert True", execution_count=6,
                      metadata=_nbg("grade_evil", grade=True, locked=True, points=2, score=2.0)),
        latex_out,
    ]
    return nb


# --------------------------------------------------------------------------------------
# the render, the way the course configures nbgrader
# --------------------------------------------------------------------------------------

def course_config_for(tmp: Path) -> Config:
    c = Config()
    course_config.apply(c, tmp, db_url=f"sqlite:///{tmp / 'gradebook.db'}")
    return c


def feedback_exporter(c: Config, *, preprocessors: bool = True):
    """GenerateFeedback's exporter with the course's feedback preprocessors (GetGrades,
    which reads the gradebook, left out: the notebook carries its scores)."""
    gf = GenerateFeedback(coursedir=CourseDirectory(config=c), config=c)
    exporter = gf.exporter_class(parent=gf, config=gf.config)
    for pp in gf.preprocessors if preprocessors else [CSSHTMLHeaderPreprocessor]:
        if pp is not GetGrades:
            exporter.register_preprocessor(pp)
    return exporter


def render(exporter, nb) -> str:
    page, _ = exporter.from_notebook_node(copy.deepcopy(nb), resources=copy.deepcopy(RESOURCES))
    return page


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("course")


@pytest.fixture(scope="module")
def page_path(course) -> Path:
    """The hardened feedback page of :func:`graded_notebook`."""
    path = course / "feedback.html"
    path.write_text(render(feedback_exporter(course_config_for(course)), graded_notebook()), encoding="utf-8")
    harden_feedback_html(path)
    return path


@pytest.fixture(scope="module")
def page(page_path) -> str:
    return page_path.read_text(encoding="utf-8")


def parse(page: str):
    return html5lib.parse(page, treebuilder="etree", namespaceHTMLElements=False)


def visible_text(page: str) -> str:
    return " ".join(" ".join(el.itertext()) for el in parse(page).iter("body"))


def maths(page: str) -> list:
    return list(parse(page).iter(MATHML + "math"))


def outline(page: str) -> list[str]:
    toc = next(el for el in parse(page).iter("nav") if el.get("id") == "toc")
    items = [li for li in next(toc.iter("ol")) if li.tag == "li" and li.get("class") != "late-penalty"]
    return [re.sub(r"\s+", " ", "".join(li.itertext())).strip() for li in items]


# --------------------------------------------------------------------------------------
# maths
# --------------------------------------------------------------------------------------

def test_no_mathjax_no_cdn_no_script(page):
    assert not re.search(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", page, re.I)
    assert not re.search(r"cdnjs|mathjax", page, re.I)
    assert not list(parse(page).iter("script")), "the feedback page needs no script at all"
    policy = feedback_csp()
    assert "script-src 'none'" in policy and "http" not in policy


def test_formulas_are_mathml(page):
    found = maths(page)
    assert len(found) >= 8
    sqrt_dk = [m for m in found if m.get("display") == "inline" and any(
        "".join(s.itertext()) == "dk" for s in m.iter(MATHML + "msqrt"))]
    assert sqrt_dk, "$\\sqrt{d_k}$ is not MathML"
    assert any(list(s.iter(MATHML + "msub")) for m in sqrt_dk for s in m.iter(MATHML + "msqrt"))
    block = [m for m in found if m.get("display") == "block"]
    assert any(list(m.iter(MATHML + "mfrac")) and "softmax" in "".join(m.itertext()) for m in block)
    text = " ".join("".join(m.itertext()) for m in found)
    for symbol in ("\u211d", "\u2299", "\u22a4", "Var"):  # \mathbb{R}, \odot, \top, \operatorname{Var}
        assert symbol in text, symbol
    assert any(list(m.iter(MATHML + "mtable")) for m in found), "pmatrix lost"
    # the text/latex output (IPython's Math) too
    latex = [d for d in parse(page).iter("div") if "output_latex" in (d.get("class") or "")]
    assert latex and list(latex[0].iter(MATHML + "mfrac")), "text/latex output is not MathML"
    # no TeX left where a formula converted (in the rendered markdown and outputs, not the code)
    rendered = " ".join("".join(d.itertext()) for d in parse(page).iter("div")
                        if {"text_cell_render", "output_latex"} & set((d.get("class") or "").split()))
    assert "\\sqrt" not in rendered and "\\mathrm" not in rendered and "$" not in rendered.replace(
        f"${UNCONVERTIBLE}$", "")


def test_unconvertible_formula_is_shown_as_its_tex(page):
    codes = [c for c in parse(page).iter("code") if "tex-source" in (c.get("class") or "")]
    assert ["".join(c.itertext()) for c in codes] == [f"${UNCONVERTIBLE}$"]
    assert "&lt;" not in "".join(codes[0].itertext())


def test_hostile_mathml_is_inert(page, course):
    """Raw MathML in a student's answer: the preprocessor takes it out of the markdown; the
    render-time allow-list alone (preprocessors off) keeps only inert presentation MathML."""
    c = course_config_for(course)
    c.HTMLExporter.preprocessors = []
    unprocessed = render(feedback_exporter(c, preprocessors=False), graded_notebook())
    assert not any(isinstance(p, SanitizeNotebook) for p in feedback_exporter(c, preprocessors=False)._preprocessors)
    for html in (page, unprocessed):
        doc = parse(html)
        assert not list(doc.iter("script")) and not list(doc.iter(MATHML + "script"))
        for el in doc.iter():
            if not isinstance(el.tag, str):
                continue
            local = el.tag.rsplit("}", 1)[-1]
            assert local not in ("maction", "semantics", "annotation", "annotation-xml", "mglyph"), local
            if el.tag.startswith(MATHML):
                assert local in sanitize.MATHML_TAGS, local
                assert not {"href", "style", "class", "id", "actiontype", "encoding"} & set(el.attrib), el.attrib
                assert not any(k.startswith("{") or k.startswith("on") for k in el.attrib), el.attrib
            assert not any(k.lower().startswith("on") for k in el.attrib), (local, el.attrib)
            assert not any("javascript:" in v.lower() or "url(" in v.lower() for v in el.attrib.values()), el.attrib
            if local == "img":
                assert (el.get("src") or "").startswith("data:image/"), el.attrib
        assert "alert(5)" not in html and "evil.example" not in html
    # what the allow-list kept of it: the inert rest of the student's MathML
    assert any("".join(m.itertext()) == "y" for m in maths(unprocessed))


def test_tex_to_mathml_converts_the_courses_formulas():
    """Every formula in the markdown of the course's source notebooks converts, and comes out
    with allow-listed elements only."""
    found = 0
    for path in sorted((ROOT / "source").glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            for display, inline in re.findall(r"\$\$(.+?)\$\$|(?<![$\\])\$(.+?)(?<![$\\])\$", cell.source, re.S):
                tex = display or inline
                mathml = tex_to_mathml(tex, bool(display))
                assert mathml is not None, tex
                tags = set(re.findall(r"<([a-z]+)", mathml))
                assert tags <= sanitize.MATHML_TAGS, (tex, tags - sanitize.MATHML_TAGS)
                found += 1
    assert found >= 20


SAMPLE_TEX = [r"\mathbf{1} \boldsymbol{\mu}", r"\left\lVert x \right\rVert_2", r"a\quad b\;c\!d",
              r"\tfrac{1}{2}\dfrac{1}{2}\binom{n}{k}", r"\underbrace{a+b}_{n} \overline{x} \hat{y} \vec v",
              r"\begin{align}a&=b\\c&=d\end{align}", r"\begin{array}{cc}1&2\end{array}",
              r"\begin{cases}a & b\\c & d\end{cases}", r"\displaystyle\sum_{i=1}^n x_i \int_0^1",
              r"\color{red}{x} \colorbox{red}{x} \boxed{x} \cancel{x}", r"\xrightarrow{a} \not= \rule{1cm}{2mm}",
              r"\sqrt[3]{x} \big( \Big( \lim_{x\to 0} \operatorname*{arg\,max}_x"]


@pytest.mark.parametrize("tex", SAMPLE_TEX)
def test_allow_list_keeps_everything_latex2mathml_writes(tex):
    """The allow-list is latex2mathml's own vocabulary: no element or attribute it writes
    is lost (but href, style and class, which only \\href, \\style and \\class write)."""
    from latex2mathml.converter import convert_to_element

    for display in (False, True):
        raw = convert_to_element(tex, display="block" if display else "inline")
        want = {(e.tag, k) for e in raw.iter() for k in e.attrib} - {("math", "xmlns")}
        mathml = tex_to_mathml(tex, display)
        assert mathml is not None, tex
        got = {(e.tag[len(MATHML):], k) for e in parse(f"<body>{mathml}</body>").iter()
               if isinstance(e.tag, str) and e.tag.startswith(MATHML) for k in e.attrib}
        assert want <= got, want - got
        assert {e.tag for e in raw.iter()} <= sanitize.MATHML_TAGS


@pytest.mark.parametrize("tex", [r"\frac{1}{", r"x^", r"\unknowncommand{x}", r"\begin{tikzcd}a\end{tikzcd}",
                                 r"\newcommand{\a}{\a\a}\a", "x" * (sanitize.MAX_TEX_CHARS + 1), r"\left(", ""])
def test_tex_to_mathml_refuses_what_it_would_misrender(tex):
    assert tex_to_mathml(tex) is None
    html = sanitize.math_html(tex, False, f"${tex}$")
    assert html.startswith('<code class="tex-source">') and "<math" not in html


def test_text_in_formulas_is_escaped():
    html = tex_to_mathml(r"\text{<script>alert(1)</script> & <b>}")
    assert html is not None and "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "&amp;" in html
    # \href, \style, \class: what latex2mathml makes of them (href=, style=, class=) is dropped;
    # the TeX stays as text in alttext
    for tex in (r"\href{javascript:alert(1)}{x}", r"\style{background:url(x)}{x}", r"\class{score}{x}"):
        html = tex_to_mathml(tex) or ""
        assert not re.search(r"\s(?:href|style|class)=", html), html
        assert html.startswith('<math display="inline" alttext="\\')


# --------------------------------------------------------------------------------------
# outline
# --------------------------------------------------------------------------------------

def test_outline_names_exercises(page):
    assert "Test cell" not in page
    assert outline(page) == [
        "1. Scaled dot-product attention — 14/14",
        "Question 1 — 2.5/3",  # the student's own heading in the answer names nothing
        "2. Multi-head attention — 0/14",
        "3. Escaped & code — 2/2",
    ]
    toc = next(el for el in parse(page).iter("nav") if el.get("id") == "toc")
    assert [a.get("href") for a in toc.iter("a")] == ["#grade_sdpa", "#q1", "#grade_mha", "#grade_evil"]
    assert not list(toc.iter("img"))
    # each link has its target in the page
    names = {a.get("name") for a in parse(page).iter("a") if a.get("name")}
    assert {"grade_sdpa", "q1", "grade_mha", "grade_evil"} <= names


def test_outline_uses_locked_cells_only():
    nb = graded_notebook()
    for cell in nb.cells:  # the exercise headings as a student could have written them
        if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("locked"):
            cell.metadata["nbgrader"]["locked"] = False
    entries = feedback_outline(nb)
    assert [e["label"] for e in entries] == ["grade_sdpa", "q1", "grade_mha", "grade_evil"]
    assert not any(e["named"] for e in entries)


def test_outline_groups_and_sums():
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("Intro\n\n## 6. Encoder and decoder blocks (20 points)\n\n```\n# not a heading\n```",
                          metadata=_nbg("h6", locked=True)),
        new_code_cell("", metadata=_nbg("encoder", solution=True, comment="Nice *work*")),
        new_code_cell("", metadata=_nbg("grade_encoder", grade=True, locked=True, points=10, score=10)),
        new_code_cell("", metadata=_nbg("grade_decoder", grade=True, locked=True, points=10, score=2.5)),
        new_markdown_cell("Task\n===", metadata=_nbg("task_h", locked=True)),
        new_markdown_cell("Describe", metadata=_nbg("task1", task=True, locked=True, points=2, score=None)),
    ]
    entries = feedback_outline(nb)
    assert [(e["label"], e["score_text"], e["points_text"]) for e in entries] == [
        ("6. Encoder and decoder blocks", "12.5", "20"), ("Task", "–", "2")]
    assert [p["grade_id"] for p in entries[0]["parts"]] == ["grade_encoder", "grade_decoder"]
    assert [p["kind"] for p in entries[0]["parts"]] == ["tests", "tests"]
    assert entries[0]["comments"] == ["encoder"] and entries[1]["parts"][0]["kind"] == "task"


# --------------------------------------------------------------------------------------
# paths of the grading machine
# --------------------------------------------------------------------------------------

def test_no_grader_paths_in_the_page(page):
    for needle in ("/work/", "/root/", "site-packages/", "/tmp/ipykernel", str(ROOT), "/usr/lib/python3", "~/"):
        assert needle not in page, needle
    text = visible_text(page)
    assert "<site-packages>/torch/nn/modules/module.py:1736" in text
    assert "<python>/json/decoder.py:337" in text
    assert "<site-packages>/numpy/core/fromnumeric.py:59" in text
    assert "<cell>:3" in text and "<cell>:7: UserWarning: my own warning about <course>/course/nn.py" in text
    # the student's exception text is otherwise as it was
    assert ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5); weights in <home>/.cache/w.pt"
            in text)


def test_neutral_paths():
    roots = ["/srv/course"]
    cases = {
        "/opt/conda/lib/python3.12/site-packages/torch/functional.py:402": "<site-packages>/torch/functional.py:402",
        "/usr/local/lib/python3.11/dist-packages/numpy/a.py": "<site-packages>/numpy/a.py",
        "/usr/lib64/python3.11/json/__init__.py": "<python>/json/__init__.py",
        "/tmp/ipykernel_4242/1234567.py:3": "<cell>:3",
        "'/srv/course/data/x.csv'": "'<course>/data/x.csv'",
        "/home/grader/.cache/torch": "<home>/.cache/torch",
        "/tmp/home/.mpl/fontlist.json": "<home>/.mpl/fontlist.json",
        "/tmp/work/data/train.csv": "<path>/train.csv",
        "\x1b[0;32m/work/x/y.py\x1b[0m": "\x1b[0;32m<path>/y.py\x1b[0m",
        "https://pytorch.org/root/docs/a.html": "https://pytorch.org/root/docs/a.html",
        "x = a/b, 1/2 and /dev/null and /usr/share/x": "x = a/b, 1/2 and /dev/null and /usr/share/x",
        "no paths here": "no paths here",
    }
    for text, want in cases.items():
        assert neutral_paths(text, roots) == want, text
        assert neutral_paths(want, roots) == want  # idempotent


def test_neutralise_paths_runs_in_autograde_and_feedback(course):
    c = course_config_for(course)
    autograde = list(c.Autograde.autograde_preprocessors)
    feedback = list(c.GenerateFeedback.preprocessors)
    assert NeutralisePaths in autograde and NeutralisePaths in feedback
    # after the executor, before grades are saved; after HideHiddenTests in the feedback
    from nbgrader.preprocessors import SaveAutoGrades

    assert autograde.index(SanitizeNotebook) < autograde.index(NeutralisePaths) < autograde.index(SaveAutoGrades)
    assert feedback.index(SanitizeNotebook) < feedback.index(NeutralisePaths)
    # error and stream outputs only, and the grade does not change
    nb = graded_notebook()
    out, _ = NeutralisePaths().preprocess(copy.deepcopy(nb), {})
    answer = out.cells[7]
    assert [(o.output_type, o.get("name")) for o in answer.outputs] == [("stream", "stderr"), ("error", None)]
    assert answer.outputs[1].ename == "RuntimeError"
    assert "<site-packages>/torch" in "".join(answer.outputs[1].traceback)
    assert answer.outputs[1].evalue.endswith("weights in <home>/.cache/w.pt")
    assert answer.outputs[0].text.startswith("<site-packages>/torch/nn/modules/transformer.py:385: UserWarning")
    assert out.cells[-1].outputs == nb.cells[-1].outputs
    again, _ = NeutralisePaths().preprocess(copy.deepcopy(out), {})
    assert again == out


# --------------------------------------------------------------------------------------
# the page in a browser
# --------------------------------------------------------------------------------------

def test_page_renders_offline_in_chromium(page_path):
    """Headless Chromium, every request but the page refused: MathML laid out, no script,
    no policy violation, nothing fetched."""
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                    None)
    if chromium is None:
        pytest.skip("no chromium installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    refused: list[str] = []

    def serve(route):
        if route.request.url.startswith(("file:", "data:")):
            return route.continue_()
        refused.append(route.request.url)
        return route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page()
            tab.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                                "e => window.__csp.push([e.violatedDirective, e.blockedURI]));")
            tab.route("**/*", serve)
            tab.goto(page_path.as_uri())
            tab.wait_for_timeout(300)
            state = tab.evaluate("""() => ({
                csp: window.__csp,
                laid_out: Array.from(document.querySelectorAll('math')).filter(m => {
                    const r = m.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length,
                fractions: Array.from(document.querySelectorAll('mfrac')).filter(f => {
                    const r = f.getBoundingClientRect(); return r.height > 20; }).length,
            })""")
        finally:
            browser.close()
    assert state["laid_out"] >= 8, state
    assert state["fractions"] >= 1, state  # a fraction is two rows high: MathML is laid out, not shown as text
    assert not refused, refused
    assert [v for v in state["csp"] if v[0] != "font-src"] == [], state["csp"]
