"""Make what a student controls inert before anyone renders it.

A submission controls a lot of what the feedback HTML and nbgrader's formgrader show: the
markdown of its written answers, every output its code produced (``display(HTML(...))``,
``display(Javascript(...))``, images and their metadata, even the execution counts), cell
and notebook metadata. nbconvert renders all of that with ``sanitize_html=False`` by
default, and the formgrader page runs in the instructor's Jupyter origin, so one
``<img onerror>`` in an answer is code running with the grader's token.

Three layers:

1. :class:`SanitizeNotebook` (a preprocessor) rewrites the notebook itself: only inert
   MIME types are kept, HTML is cleaned with an allow-list (:func:`sanitize_html`), raw
   HTML in markdown is cleaned in place while markdown and LaTeX stay as written,
   attachments, metadata and execution counts are reduced to what cannot carry markup.
   Run in the autograde pipeline, the autograded notebook that both the formgrader and
   the feedback read is already clean; on its own it makes the notebook inert through
   nbconvert's stock templates.
2. :func:`configure` makes nbconvert's ``HTMLExporter`` (the feedback converter's and the
   formgrader's alike: both build it from the nbgrader config) run that preprocessor
   again, pick only inert MIME types, and clean every rendered markdown cell and HTML
   output at render time (these filters alone already stop every payload carried in
   content; payloads in output metadata need the preprocessor).
3. :func:`harden_feedback_html` puts a Content-Security-Policy in each feedback page: no
   script runs there but the template's own (by hash, learnt from an empty notebook:
   the course's feedback template has none, so none runs at all); images only as
   ``data:`` URIs; no eval; nothing fetched from anywhere.

The feedback page itself (:func:`configure_feedback`, for nbgrader's GenerateFeedback
only) is the course's template ``autograder/templates/feedback``, extending nbgrader's:

- maths is rendered at export time: LaTeX in markdown (``$...$``, ``$$...$$``,
  ``\\\\(...\\\\)``, ``\\\\[...\\\\]``, ``\\begin{env}...\\end{env}``) and ``text/latex`` outputs
  becomes MathML (:func:`tex_to_mathml`, with latex2mathml), which browsers render
  natively: no MathJax, no script, no CDN. A formula the converter cannot handle is shown
  as its TeX source in ``<code>``. Converted MathML and any MathML a student wrote are
  cleaned with a strict allow-list of presentation elements and attributes
  (:data:`MATHML_TAGS`, :data:`MATHML_ATTRS`): no links, no actions, no annotations.
- the outline names exercises (:func:`feedback_outline`): each grade cell by the nearest
  heading above it in a *locked* markdown cell (instructions restored from the release;
  never a cell the student wrote), with its score, else by its grade_id.
- :class:`NeutralisePaths` (also in the autograde pipeline) replaces the grader's paths in
  tracebacks and printed output with neutral ones (``<site-packages>/torch/...``,
  ``<python>/...``, ``<cell>``, ``<course>/...``, ``<home>/...``).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import html as htmllib
import os
import re
import threading
from pathlib import Path
from typing import Any

import bleach
from bleach.css_sanitizer import CSSSanitizer

try:  # the same parser bleach uses; bleach (a dependency of nbconvert) ships a copy
    import html5lib
except ImportError:  # pragma: no cover - depends on the environment
    from bleach._vendor import html5lib
from jinja2 import pass_context
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode
from traitlets.config import Config, LoggingConfigurable

__all__ = [
    "SanitizeNotebook", "SafeMarkdown2HTML", "FeedbackMarkdown2HTML", "NeutralisePaths", "clean_html_filter",
    "configure", "configure_feedback", "harden_feedback_html", "harden_feedback_dir", "sanitize_html",
    "render_markdown", "markdown_findings", "neutralise_markdown", "feedback_csp", "CSP_MARKER", "tex_to_mathml",
    "latex_output_html", "neutral_paths", "feedback_outline", "FEEDBACK_TEMPLATES",
]

# --------------------------------------------------------------------------------------
# The allow-list
# --------------------------------------------------------------------------------------

#: MIME types of outputs that are kept (HTML, markdown and LaTeX only after cleaning).
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif")
KEPT_MIMES = ("text/plain", *IMAGE_MIMES, "text/html", "text/markdown", "text/latex")
#: What nbconvert may pick to render an output, best first: nothing that can run.
DISPLAY_PRIORITY = ["text/html", "text/markdown", "text/latex", "image/png", "image/jpeg", "text/plain"]

ALLOWED_TAGS = frozenset("""
    a abbr acronym b bdi bdo blockquote br caption cite code col colgroup dd del details dfn div dl dt em
    figcaption figure h1 h2 h3 h4 h5 h6 hr i img input ins kbd li mark ol p pre q rp rt ruby s samp small
    span strike strong sub summary sup table tbody td tfoot th thead tr tt u ul var wbr
""".split())

#: Removed together with everything inside them.
DROP_WITH_CONTENT = frozenset("""
    script style template noscript iframe frame frameset object embed applet svg math xmp noembed
    noframes plaintext textarea title select audio video canvas head portal fencedframe
""".split())

#: Tags whose presence is worth telling the instructor about (they can run, load or phish).
ACTIVE_TAGS = frozenset("""
    script iframe frame frameset object embed applet svg math noscript template link meta base form
    input button select textarea option portal audio video source track fencedframe isindex keygen
""".split())

GLOBAL_ATTRS = frozenset({"class", "id", "title", "lang", "dir", "style"})
TAG_ATTRS = {
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "align", "valign", "headers"},
    "th": {"colspan", "rowspan", "align", "valign", "scope", "headers"},
    "table": {"border", "cellpadding", "cellspacing", "align"},
    "tr": {"align", "valign"}, "thead": {"align", "valign"}, "tbody": {"align", "valign"},
    "tfoot": {"align", "valign"},
    "col": {"span", "width", "align"}, "colgroup": {"span", "width", "align"},
    "ol": {"start", "type", "reversed"}, "ul": {"type"}, "li": {"value"},
    "p": {"align"}, "div": {"align"}, "h1": {"align"}, "h2": {"align"}, "h3": {"align"},
    "h4": {"align"}, "h5": {"align"}, "h6": {"align"},
    "details": {"open"}, "abbr": {"title"},
    # task lists in markdown (``- [x] done``): a checkbox, no other kind of input
    "input": {"type", "checked", "disabled"},
}
#: Attributes whose value is a URL that a browser may fetch or navigate to.
URL_ATTRS = frozenset({
    "href", "src", "action", "formaction", "background", "poster", "data", "codebase", "lowsrc", "dynsrc",
    "ping", "manifest", "icon", "srcset", "imagesrcset", "xlink:href", "archive", "classid",
})
#: CSS properties kept in style attributes: none of them takes a URL or moves things on top.
SAFE_CSS = frozenset("""
    color background-color text-align vertical-align font-weight font-style font-size font-family font-variant
    text-decoration text-transform white-space word-break overflow-wrap line-height letter-spacing
    width min-width max-width height min-height max-height padding padding-top padding-right padding-bottom
    padding-left margin margin-top margin-right margin-bottom margin-left border border-top border-right
    border-bottom border-left border-color border-style border-width border-collapse border-spacing
    border-radius list-style-type display text-indent
""".split())
#: Classes the formgrader's scripts or bootstrap act on: student content must not carry them.
RESERVED_CLASSES = frozenset("""
    tabbable score extra-credit comment nbgrader_cell mark-graded full-credit no-credit save-icon score-saved
    comment-saved name-shown name-hidden live-notebook help previous next navbar-fixed-top navbar-fixed-bottom
    modal modal-backdrop affix
""".split())
#: Prefix for ids in student content, so they never collide with the page's (grade ids, #statusmessage).
ID_PREFIX = "user-content-"

_DATA_IMAGE = re.compile(r"^data:image/(?:png|jpeg|gif);base64,[A-Za-z0-9+/=\s]*$", re.I)
_B64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")
_CSS_ACTIVE = re.compile(r"url\s*\(|expression|@import|behavior|-moz-binding|javascript:|\\", re.I)
_URL_JUNK = re.compile(r"[`\x00-\x20\x7f-\xa0\s]+")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_NUMBER = re.compile(r"^\s*\d{1,5}(?:\.\d+)?\s*%?\s*$")


def _url(value: str) -> tuple[str, str]:
    """(scheme, normalised value) the way a browser reads it: entities decoded, control
    characters and spaces dropped, lower case."""
    v = _URL_JUNK.sub("", htmllib.unescape(value or ""))
    v = re.sub(r"[^\x00-\x7f]", "", v).lower()
    m = _SCHEME.match(v)
    return (m.group(1) if m else ""), v


def _attr_verdict(tag: str, name: str, value: str) -> str:
    """'keep', 'drop' (inert, removed silently) or an active finding (removed and reported)."""
    name = name.lower()
    if name.startswith("on"):
        return f"{name} attribute"
    if name in ("srcset", "imagesrcset"):
        return f"{name} attribute"
    if name == "style":
        return "style with url()" if _CSS_ACTIVE.search(value or "") else "keep"
    if name not in GLOBAL_ATTRS and name not in TAG_ATTRS.get(tag, ()):
        if name in URL_ATTRS:
            scheme, _ = _url(value)
            if scheme in ("javascript", "vbscript", "data", "livescript", "mocha"):
                return f"{scheme}: URL"
            if tag != "a" and value:
                return f"{name}= on <{tag}>"  # something that may fetch a URL
        return "drop"
    if tag == "img" and name == "src":
        if _DATA_IMAGE.match(htmllib.unescape(value or "")):
            return "keep"
        scheme, _ = _url(value)
        if scheme == "data":
            return "non-image data: URL"
        if scheme in ("javascript", "vbscript"):
            return f"{scheme}: URL"
        return "remote image"
    if tag == "a" and name == "href":
        scheme, v = _url(value)
        if v.startswith("#") or scheme in ("http", "https", "mailto"):
            return "keep"
        if scheme:
            return f"{scheme}: URL" if scheme in ("javascript", "vbscript", "data") else "drop"
        return "drop"  # relative: would point into the Jupyter server that shows the page
    if tag == "input":
        if name == "type":
            return "keep" if (value or "").strip().lower() == "checkbox" else "form control"
        return "keep"
    if name in ("width", "height", "colspan", "rowspan", "span", "start", "value", "border",
                "cellpadding", "cellspacing"):
        return "keep" if _NUMBER.match(value or "") else "drop"
    return "keep"


def _clean_class(value: str) -> str:
    return " ".join(c for c in (value or "").split() if c not in RESERVED_CLASSES)


def _clean_id(value: str, prefix: str) -> str:
    value = re.sub(r"\s", "-", value or "")
    if not value or not prefix or value.startswith(prefix):
        return value
    return prefix + value


def _fragment(href: str, prefix: str) -> str:
    if prefix and href.startswith("#") and len(href) > 1 and not href[1:].startswith(prefix):
        return "#" + prefix + href[1:]
    return href


# --------------------------------------------------------------------------------------
# HTML cleaning: an html5lib pass that drops whole dangerous subtrees and records what it
# removes, then bleach with the same allow-list as the enforcing pass.
# --------------------------------------------------------------------------------------

_ETREE = html5lib.getTreeBuilder("etree")
_WALKER = html5lib.getTreeWalker("etree")
_local = threading.local()


def _parser() -> html5lib.HTMLParser:
    p = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = html5lib.HTMLParser(tree=_ETREE, namespaceHTMLElements=False)
    return p


def _bleach_attr(tag: str, name: str, value: str) -> bool:
    return _attr_verdict(tag, name, value) == "keep"


def _bleach_attr_mathml(tag: str, name: str, value: str) -> bool:
    if tag in MATHML_TAGS:
        return _mathml_attr_ok(tag, name, value)
    return _bleach_attr(tag, name, value)


def _cleaner(mathml: bool = False) -> bleach.Cleaner:
    key = "cleaner_mathml" if mathml else "cleaner"
    c = getattr(_local, key, None)
    if c is None:
        c = bleach.Cleaner(
            tags=ALLOWED_TAGS | MATHML_TAGS if mathml else ALLOWED_TAGS,
            attributes=_bleach_attr_mathml if mathml else _bleach_attr,
            protocols={"http", "https", "mailto", "data"}, strip=True, strip_comments=True,
            css_sanitizer=CSSSanitizer(allowed_css_properties=SAFE_CSS, allowed_svg_properties=()))
        setattr(_local, key, c)
    return c


def _first_pass(root, findings: list[str], id_prefix: str, strict_style: bool, mathml: bool = False) -> None:
    """Clean the html5lib tree in place: drop dangerous subtrees, unwrap unknown tags, strip
    attributes; append a short description of each active thing removed to ``findings``.
    With ``mathml``, ``<math>`` elements are kept, cleaned by :func:`_clean_math`."""
    def note(what: str) -> None:
        if what not in findings:
            findings.append(what)

    def walk(parent) -> None:
        i = 0
        while i < len(parent):
            el = parent[i]
            tag = el.tag if isinstance(el.tag, str) else None
            if tag is None:  # a comment or processing instruction
                _remove(parent, i, keep_children=False)
                continue
            if tag.startswith("{"):  # svg, math and anything namespaced
                if mathml and tag == _MATH:
                    _clean_math(el, note)
                    i += 1
                    continue
                note("<" + tag.split("}", 1)[1] + ">")
                _remove(parent, i, keep_children=False)
                continue
            tag = tag.lower()
            if tag in DROP_WITH_CONTENT:
                if tag == "style":
                    if strict_style or _CSS_ACTIVE.search("".join(el.itertext())):
                        note("<style>")
                elif tag not in ("title", "head"):
                    note(f"<{tag}>")
                _remove(parent, i, keep_children=False)
                continue
            if tag not in ALLOWED_TAGS:
                if tag in ACTIVE_TAGS:
                    note(f"<{tag}>")
                for name, value in el.attrib.items():
                    verdict = _attr_verdict(tag, name, value)
                    if verdict.endswith((" attribute", " URL")):
                        note(verdict)
                _remove(parent, i, keep_children=True)
                continue  # the children now sit at index i: look at them next
            for name in list(el.attrib):
                value = el.attrib[name]
                verdict = _attr_verdict(tag, name, value)
                if verdict != "keep":
                    del el.attrib[name]
                    if verdict != "drop":
                        note(verdict)
                elif name == "class":
                    el.attrib[name] = _clean_class(value)
                elif name == "id":
                    el.attrib[name] = _clean_id(value, id_prefix)
                elif name == "href":
                    el.attrib[name] = _fragment(value, id_prefix)
            if tag == "img" and "src" not in el.attrib:
                _remove(parent, i, keep_children=False)
                continue
            if tag == "input" and el.attrib.get("type", "").lower() != "checkbox":
                note("form control")
                _remove(parent, i, keep_children=False)
                continue
            walk(el)
            i += 1

    walk(root)


def _remove(parent, index: int, keep_children: bool) -> None:
    """Remove ``parent[index]``; keep its tail text, and its text and children if asked."""
    el = parent[index]
    pieces_text = (el.text or "") if keep_children else ""
    children = list(el) if keep_children else []
    tail = el.tail or ""
    parent.remove(el)
    # text that goes where the element was: its own text (if kept) then, after its
    # children, its tail
    if children:
        children[-1].tail = (children[-1].tail or "") + tail
        for offset, child in enumerate(children):
            parent.insert(index + offset, child)
        _append_text(parent, index, pieces_text)
    else:
        _append_text(parent, index, pieces_text + tail)


def _append_text(parent, index: int, text: str) -> None:
    if not text:
        return
    if index == 0:
        parent.text = (parent.text or "") + text
    else:
        prev = parent[index - 1]
        prev.tail = (prev.tail or "") + text


def _serialize(root) -> str:
    s = html5lib.serializer.HTMLSerializer(
        quote_attr_values="always", escape_lt_in_attrs=True, minimize_boolean_attributes=False,
        omit_optional_tags=False, resolve_entities=False, alphabetical_attributes=False,
        use_trailing_solidus=False, strip_whitespace=False, sanitize=False)
    return s.render(_WALKER(root))


def sanitize_html(fragment: str, id_prefix: str = ID_PREFIX, strict_style: bool = False,
                  mathml: bool = False) -> tuple[str, list[str]]:
    """Clean an HTML fragment. Returns the clean HTML and the list of active things removed
    (``"<script>"``, ``"onerror attribute"``, ``"remote image"``, ...); inert removals
    (comments, unknown tags, relative links) are not listed, nor is a ``<style>`` element
    (pandas puts one before every table) unless it loads something or ``strict_style``.
    ``mathml``: keep ``<math>`` (the feedback page's rendered formulas), limited to the
    presentation elements and attributes of :data:`MATHML_TAGS`/:data:`MATHML_ATTRS`;
    otherwise MathML is removed like SVG."""
    fragment = fragment if isinstance(fragment, str) else str(fragment)
    if not fragment:
        return "", []
    findings: list[str] = []
    root = _parser().parseFragment(fragment)
    _first_pass(root, findings, id_prefix, strict_style, mathml)
    return _cleaner(mathml).clean(_serialize(root)), findings


def clean_html_filter(element: Any) -> str:
    """Drop-in for nbconvert's ``clean_html`` template filter (used when ``sanitize_html``)."""
    if isinstance(element, bytes):
        element = element.decode("utf-8", "replace")
    return sanitize_html(str(element))[0]


# --------------------------------------------------------------------------------------
# Maths: LaTeX rendered to MathML when the page is made (no script, no CDN)
# --------------------------------------------------------------------------------------

MATHML_NS = "http://www.w3.org/1998/Math/MathML"
_MATH = "{%s}math" % MATHML_NS
#: The MathML elements kept: the presentation elements latex2mathml writes, nothing else
#: (no ``maction``, ``semantics``, ``annotation``/``annotation-xml``, ``mglyph``, ``ms``).
MATHML_TAGS = frozenset("""
    math mrow mi mn mo mtext mspace msqrt mroot mfrac msub msup msubsup munder mover munderover
    mtable mtr mtd mstyle mpadded mphantom menclose
""".split())
#: Attributes per element: those latex2mathml writes, nothing else. Not ``href``,
#: ``style`` or ``class`` (which its ``\\href``, ``\\style`` and ``\\class`` write, dropped),
#: ``xlink:*``, ``src``, ``id``, event handlers, ``actiontype`` or ``encoding``.
MATHML_ATTRS = {
    "math": {"display", "alttext"},  # alttext: the formula's TeX, as text (copying, screen readers)
    "mi": {"mathvariant"}, "mn": {"mathvariant"}, "mtext": {"mathvariant"},
    "mo": {"mathvariant", "stretchy", "fence", "form", "separator", "lspace", "rspace", "minsize", "maxsize",
           "movablelimits", "largeop", "accent"},
    "mover": {"accent"},
    "mfrac": {"linethickness"},
    "mspace": {"width", "height", "depth", "linebreak", "mathbackground"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset", "mathbackground"},
    "mstyle": {"mathcolor", "mathsize", "displaystyle", "scriptlevel"},
    "mtable": {"columnspacing", "rowspacing", "rowlines", "columnlines", "displaystyle"},
    "mtd": {"columnalign"},
    "menclose": {"notation"},
}
#: Attribute values: words, numbers, lengths and #colours only (no ``:``, ``(``, quotes).
_MATHML_VALUE = re.compile(r"^[A-Za-z0-9 #.+\-%]{0,80}$")
_MATHML_MAX_DEPTH = 100
#: The longest formula converted; a longer one is shown as TeX.
MAX_TEX_CHARS = 4000
#: Environments latex2mathml renders faithfully; any other is shown as TeX.
TEX_ENVIRONMENTS = frozenset("""
    matrix matrix* pmatrix pmatrix* bmatrix bmatrix* Bmatrix Bmatrix* vmatrix vmatrix* Vmatrix Vmatrix*
    smallmatrix array cases split align align* equation equation*
""".split())
#: Rewrites to what latex2mathml knows (``aligned`` inside ``$$``, ``\\arg``, labels).
_TEX_REWRITES = [
    (re.compile(r"\\(begin|end)\{aligned\}"), r"\\\1{align*}"),
    (re.compile(r"\\operatorname\*"), r"\\operatorname"),
    (re.compile(r"\\arg(?![A-Za-z])"), r"\\operatorname{arg}"),
    (re.compile(r"\\(?:nonumber|notag)(?![A-Za-z])|\\label\{[^{}]*\}"), ""),
]
#: Macro definitions (latex2mathml expands them: a recursive one would never end).
_TEX_REFUSED = re.compile(r"\\(?:newcommand|renewcommand|providecommand|def|gdef|edef|xdef|let|newenvironment|"
                          r"renewenvironment|DeclareMathOperator)(?![A-Za-z])")
_TEX_ENV = re.compile(r"\\(?:begin|end)\s*\{([^{}]*)\}")
#: A command latex2mathml did not know comes out as its name in a token element.
_LEAKED_COMMAND = re.compile(r"\\[A-Za-z]")


class _Unconvertible(Exception):
    pass


def _mathml_attr_ok(tag: str, name: str, value: str) -> bool:
    name = name.lower()
    if name not in MATHML_ATTRS.get(tag, ()):
        return False
    if name == "display":
        return value in ("block", "inline")
    if name == "alttext":
        return len(value or "") <= MAX_TEX_CHARS and not _CONTROL.search((value or "").replace("\n", " "))
    return bool(_MATHML_VALUE.match(value or ""))


def _clean_math(el, note, depth: int = 0) -> None:
    """Clean a ``<math>`` subtree of the html5lib tree in place: MathML elements of the
    allow-list with their allowed attributes and text; anything else (HTML inside token
    elements, ``annotation-xml``, ``maction``, SVG, comments) goes with its content."""
    tag = el.tag.split("}", 1)[1]
    for name in list(el.attrib):
        value = el.attrib[name]
        local = name.split("}", 1)[-1] if isinstance(name, str) else str(name)
        if not isinstance(name, str) or name.startswith("{") or not _mathml_attr_ok(tag, name, value):
            del el.attrib[name]
            verdict = _attr_verdict(tag, local, value)
            if verdict.endswith((" attribute", " URL")):
                note(verdict)
            elif local.lower() in URL_ATTRS:
                note(f"{local.lower()}= on <{tag}>")
            elif local.lower() in ("actiontype", "encoding"):
                note(f"{local.lower()}= on <{tag}>")
    i = 0
    while i < len(el):
        child = el[i]
        ctag = child.tag if isinstance(child.tag, str) else None
        local = ctag.split("}", 1)[1] if ctag and ctag.startswith("{") else ctag
        if (ctag is not None and ctag.startswith("{%s}" % MATHML_NS) and local in MATHML_TAGS
                and local != "math" and depth < _MATHML_MAX_DEPTH):
            _clean_math(child, note, depth + 1)
            i += 1
            continue
        if ctag is not None:
            note(f"<{local}> in MathML")
        _remove(el, i, keep_children=False)


def _tex_ready(tex: str) -> str:
    """``tex`` rewritten for latex2mathml, or :class:`_Unconvertible`."""
    if len(tex) > MAX_TEX_CHARS or _TEX_REFUSED.search(tex):
        raise _Unconvertible("too long or defines macros")
    for pattern, repl in _TEX_REWRITES:
        tex = pattern.sub(repl, tex)
    for env in _TEX_ENV.findall(tex):
        if env.strip() not in TEX_ENVIRONMENTS:
            raise _Unconvertible(f"environment {env}")
    if not tex.strip():
        raise _Unconvertible("empty")
    return tex


def _serialize_mathml(el, out: list[str], depth: int = 0) -> None:
    """latex2mathml's ElementTree as HTML: allow-listed elements and attributes, text
    escaped (latex2mathml writes character references as text, and ``\\text{<b>}`` raw)."""
    tag = el.tag
    if tag not in MATHML_TAGS or depth > _MATHML_MAX_DEPTH or (tag == "math" and depth):
        raise _Unconvertible(f"<{tag}>")
    attrs = "".join(f' {k}="{htmllib.escape(v, quote=True)}"' for k, v in el.attrib.items()
                    if _mathml_attr_ok(tag, k, v))
    text = htmllib.unescape(el.text or "")
    if tag in ("mi", "mo", "mn", "mtext") and (_LEAKED_COMMAND.search(text) or text.strip() == "&"):
        raise _Unconvertible(f"unknown command {text[:40]!r}")
    out.append(f"<{tag}{attrs}>{htmllib.escape(text, quote=False)}")
    for child in el:
        _serialize_mathml(child, out, depth + 1)
        if child.tail:
            out.append(htmllib.escape(htmllib.unescape(child.tail), quote=False))
    out.append(f"</{tag}>")


@functools.lru_cache(maxsize=2048)
def tex_to_mathml(tex: str, display: bool = False) -> str | None:
    """MathML (an HTML fragment, ``<math display=... alttext=TeX>``) for a LaTeX formula
    without its delimiters, or None where latex2mathml is missing, fails, or would misrender it (an
    unknown command or environment, a macro definition, a formula over
    :data:`MAX_TEX_CHARS`). Only allow-listed elements and attributes are written."""
    try:
        from latex2mathml.converter import convert_to_element
    except ImportError:  # pragma: no cover - a dependency of the course
        return None
    try:
        element = convert_to_element(_tex_ready(tex), display="block" if display else "inline")
        element.attrib.pop("xmlns", None)
        element.set("alttext", re.sub(r"\s+", " ", tex).strip())
        out: list[str] = []
        _serialize_mathml(element, out)
    except (Exception, RecursionError):
        return None
    return "".join(out)


def math_html(tex: str, display: bool, source: str) -> str:
    """The MathML of ``tex``, or its ``source`` (with delimiters) as escaped text in
    ``<code class="tex-source">`` when it cannot be converted."""
    mathml = tex_to_mathml(tex, display)
    if mathml is not None:
        return mathml
    return f'<code class="tex-source">{htmllib.escape(source, quote=False)}</code>'


_LATEX_MATH = re.compile(r"""
    (?<!\\)\$\$(?P<dd>.+?)(?<!\\)\$\$
  | (?<!\\)\\\[(?P<br>.+?)(?<!\\)\\\]
  | (?<!\\)\\\((?P<pa>.+?)(?<!\\)\\\)
  | (?P<env>\\begin\{(?P<name>[A-Za-z]+\*?)\}.*?\\end\{(?P=name)\})
  | (?<![\\$])\$(?P<d>.+?)(?<![\\$])\$
""", re.S | re.X)


def latex_output_html(text: Any) -> str:
    """Jinja filter ``tex2mathml`` for ``text/latex`` outputs (``$\\displaystyle ...$``
    from sympy, ``Latex(...)``, ``Math(...)``): each formula as MathML (or its TeX), the
    text around them escaped; the result cleaned with the MathML allow-list."""
    text = _text(text)
    out, pos = [], 0
    for m in _LATEX_MATH.finditer(text):
        out.append(htmllib.escape(text[pos:m.start()], quote=False))
        if m.group("env") is not None:
            out.append(math_html(m.group("env"), True, m.group(0)))
        else:
            tex = m.group("dd") or m.group("br") or m.group("pa") or m.group("d")
            out.append(math_html(tex, m.group("pa") is None and m.group("d") is None, m.group(0)))
        pos = m.end()
    out.append(htmllib.escape(text[pos:], quote=False))
    return sanitize_html("".join(out), mathml=True)[0]


_MATHML_RENDERER = None


def _mathml_renderer_class():
    """nbconvert's markdown renderer, with formulas written as MathML instead of being
    left as TeX for MathJax."""
    global _MATHML_RENDERER
    if _MATHML_RENDERER is None:
        from nbconvert.filters.markdown_mistune import IPythonRenderer

        class MathMLRenderer(IPythonRenderer):
            def block_math(self, body: str) -> str:
                return math_html(body, True, f"$${body}$$")

            def inline_math(self, body: str) -> str:
                return math_html(body, False, f"${body}$")

            def latex_environment(self, name: str, body: str) -> str:
                source = f"\\begin{{{name}}}{body}\\end{{{name}}}"
                return math_html(source, True, source)

            def multiline_math(self, text: str) -> str:  # mistune < 3
                return latex_output_html(text)

        _MATHML_RENDERER = MathMLRenderer
    return _MATHML_RENDERER


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------

def render_markdown(source: str, attachments: dict | None = None, mathml: bool = False) -> str:
    """Render markdown the way nbconvert's HTMLExporter does (``markdown2html`` with images
    not embedded, then ``strip_files_prefix``), raw HTML and all; formulas left as TeX,
    or with ``mathml`` as the feedback page writes them."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from nbconvert.filters.strings import strip_files_prefix

    cls = _mathml_renderer_class() if mathml else IPythonRenderer
    renderer = cls(escape=False, attachments=attachments or {}, embed_images=False, path="",
                   anchor_link_text="¶", exclude_anchor_links=False)
    return strip_files_prefix(MarkdownWithMath(renderer=renderer).render(source))


def markdown_findings(source: str, attachments: dict | None = None) -> list[str]:
    """Active things the rendered markdown contains (empty: safe to render as it is)."""
    try:
        return sanitize_html(render_markdown(source, attachments), strict_style=True)[1]
    except Exception as e:  # a missing attachment, or anything mistune chokes on
        from nbconvert.filters.markdown_mistune import InvalidNotebook

        if isinstance(e, InvalidNotebook):
            return ["an image of a removed attachment"]
        return [f"markdown that does not render ({type(e).__name__})"]


_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TAG_NAME = r"[A-Za-z][A-Za-z0-9\-]*"
_ATTR = r"""\s+[A-Za-z_:][A-Za-z0-9_.:\-]*(?:\s*=\s*(?:[^\s"'=<>`]+|'[^']*'|"[^"]*"))?"""
_OPEN_TAG = re.compile(rf"<({_TAG_NAME})((?:{_ATTR})*)\s*(/?)>", re.S)
_CLOSE_TAG = re.compile(rf"</({_TAG_NAME})\s*>")
_ATTR_ONE = re.compile(r"""\s+([A-Za-z_:][A-Za-z0-9_.:\-]*)(?:\s*=\s*([^\s"'=<>`]+|'[^']*'|"[^"]*"))?""", re.S)
_INLINE = re.compile(r"""
    (?P<code>(?<!`)(?P<ticks>`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)(?P=ticks)(?!`))
  | (?P<math>(?<!\\)\$\$.+?(?<!\\)\$\$
           | (?<!\\)\\\\\[.+?(?<!\\)\\\\\]
           | (?<!\\)\\\\\(.+?(?<!\\)\\\\\)
           | \\begin\{(?P<env>[a-z]*\*?)\}.*?\\end\{(?P=env)\}
           | (?<![$\\])\$.+?(?<![$\\])\$)
  | (?P<lt><(?=[A-Za-z/!?]))
  | (?P<image>!\[)
  | (?P<dest>\]\()
  | (?P<refdef>^[ ]{0,3}\[[^\]\n]+\]:[ \t]*(?=\S))
""", re.S | re.X | re.M)
_IMAGE = re.compile(r"!\[(?:[^\[\]\n]|\[[^\[\]\n]*\])*\]\(\s*(<[^<>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)")


def _split_fenced(source: str) -> list[tuple[bool, str]]:
    """Split markdown into (is_fenced_code, text) pieces; fenced code is left as written."""
    pieces: list[tuple[bool, str]] = []
    buf: list[str] = []
    fence = None
    for line in source.splitlines(keepends=True):
        if fence is None:
            m = _FENCE_OPEN.match(line)
            if m:
                if buf:
                    pieces.append((False, "".join(buf)))
                buf, fence = [line], m.group(1)
            else:
                buf.append(line)
        else:
            buf.append(line)
            if re.match(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$", line):
                pieces.append((True, "".join(buf)))
                buf, fence = [], None
    if buf:
        pieces.append((fence is not None, "".join(buf)))
    return pieces


def _destination(text: str, start: int) -> tuple[int, int]:
    """Span of a link destination that starts at or after ``start`` (after ``](``)."""
    i = start
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i < len(text) and text[i] == "<":
        j = text.find(">", i)
        nl = text.find("\n", i)
        if j == -1 or (nl != -1 and nl < j):
            return i, i
        return i, j + 1
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text):
            j += 2
            continue
        if ch.isspace():
            break
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        j += 1
    return i, j


def _dest_ok(dest: str, image: bool) -> bool:
    dest = dest.strip()
    if dest.startswith("<") and dest.endswith(">"):
        dest = dest[1:-1]
    dest = re.sub(r"\\(.)", r"\1", dest)
    if image:
        return bool(_DATA_IMAGE.match(dest)) or dest.startswith("attachment:")
    scheme, v = _url(dest)
    return not scheme or scheme in ("http", "https", "mailto")


def _clean_raw_tag(m: re.Match) -> str:
    tag = m.group(1).lower()
    if tag not in ALLOWED_TAGS:
        return ""
    kept = []
    for am in _ATTR_ONE.finditer(m.group(2) or ""):
        name, raw = am.group(1), am.group(2)
        value = raw[1:-1] if raw and raw[0] in "'\"" else (raw or "")
        value = htmllib.unescape(value)
        if _attr_verdict(tag, name, value) == "keep":
            kept.append(f' {name.lower()}="{htmllib.escape(value, quote=True)}"')
    if tag == "input" and ' type="checkbox"' not in "".join(kept).lower():
        return ""
    if tag == "img" and not any(k.startswith(" src=") for k in kept):
        return ""
    return f"<{tag}{''.join(kept)}{' /' if m.group(3) else ''}>"


def _rewrite(text: str, escape_all: bool) -> str:
    """Rewrite raw HTML and dangerous link destinations in a piece of markdown (no fenced
    code in it), leaving code spans and math as written."""
    out: list[str] = []
    pos = 0
    while True:
        m = _INLINE.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:m.start()])
        kind = m.lastgroup if m.lastgroup not in ("ticks", "env") else None
        if m.group("code") is not None:
            kind = "code"
        elif m.group("math") is not None:
            kind = "math"
        end = m.end()
        if kind in ("code", "math"):
            out.append(m.group(0))
        elif kind == "lt":
            start = m.start()
            if escape_all:
                out.append("&lt;")
            elif text.startswith("<!--", start):
                close = text.find("-->", start + 4)
                end = len(text) if close == -1 else close + 3
            elif text[start + 1] in "!?":
                close = text.find(">", start)
                end = len(text) if close == -1 else close + 1
            elif (cm := _CLOSE_TAG.match(text, start)) is not None:
                end = cm.end()
                if cm.group(1).lower() in ALLOWED_TAGS:
                    out.append(f"</{cm.group(1).lower()}>")
            elif (om := _OPEN_TAG.match(text, start)) is not None:
                end = om.end()
                tag = om.group(1).lower()
                if tag in DROP_WITH_CONTENT:
                    close = re.compile(rf"</{re.escape(tag)}\s*>", re.I).search(text, end)
                    end = len(text) if close is None else close.end()
                else:
                    out.append(_clean_raw_tag(om))
            else:
                out.append("&lt;")
        elif kind == "image":
            im = _IMAGE.match(text, m.start())
            if im is None or not _dest_ok(im.group(1), image=True):
                out.append("\\!")  # an image of a URL becomes a link to it
                end = m.start() + 1
            else:  # an embedded image (data: or attachment): keep it as written
                out.append(im.group(0))
                end = im.end()
        else:  # a link destination: "](" or a reference definition
            out.append(m.group(0))
            d0, d1 = _destination(text, end)
            if not _dest_ok(text[d0:d1], image=False):
                out.append(text[end:d0] + "#")
                end = d1
        pos = end


def _fenced(source: str, note: str) -> str:
    longest = max((len(r) for r in re.findall(r"`+", source)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{note}\n\n{fence}\n{source}\n{fence}\n"


def neutralise_markdown(source: str, attachments: dict | None = None) -> tuple[str, list[str]]:
    """Return ``source`` unchanged if it renders to nothing active; otherwise a rewritten
    source (raw HTML cleaned in place, bad link targets emptied, markdown and LaTeX kept)
    that is verified to render inert, and what was found. Fallbacks, each verified: every
    ``<`` outside code and math escaped; then the answer shown as a code block."""
    findings = markdown_findings(source, attachments)
    if not findings:
        return source, []
    pieces = _split_fenced(source)
    for escape_all in (False, True):
        candidate = "".join(text if code else _rewrite(text, escape_all) for code, text in pieces)
        if not markdown_findings(candidate, attachments):
            return candidate, findings
    candidate = _fenced(source, "*[autograder] this answer contained active HTML; it is shown as text:*")
    if not markdown_findings(candidate, {}):
        return candidate, findings
    return "*[autograder] this answer contained active HTML and was removed.*", findings


class SafeMarkdown2HTML(LoggingConfigurable):
    """Jinja filter ``markdown2html`` for an HTMLExporter: the exporter's own rendering
    (attachments, anchors), then :func:`sanitize_html`. nbgrader's feedback and formgrade
    templates render markdown cells without ``clean_html``; this covers them. Formulas
    stay TeX (the formgrader's MathJax typesets them)."""

    jinja_pass_arg = pass_context(lambda context, source: source).jinja_pass_arg  # jinja passes the context
    #: write formulas as MathML (and keep MathML through the allow-list)
    mathml = False

    def __call__(self, context, source):
        exporter = self.parent
        cell = context.get("cell") or {}
        if self.mathml:
            rendered = self._render_mathml(exporter, context, source)
        elif exporter is not None and hasattr(exporter, "markdown2html"):
            rendered = exporter.markdown2html(context, source)
        else:
            rendered = render_markdown(source, cell.get("attachments"))
        return sanitize_html(rendered, mathml=self.mathml)[0]

    @staticmethod
    def _render_mathml(exporter, context, source) -> str:
        """``HTMLExporter.markdown2html`` with :func:`_mathml_renderer_class`."""
        from nbconvert.filters.markdown_mistune import MarkdownWithMath

        cell = context.get("cell") or {}
        if exporter is None or not hasattr(exporter, "anchor_link_text"):
            return render_markdown(source, cell.get("attachments"), mathml=True)
        renderer = _mathml_renderer_class()(
            escape=False, attachments=cell.get("attachments", {}) or {}, embed_images=exporter.embed_images,
            path=(context.get("resources") or {}).get("metadata", {}).get("path", ""),
            anchor_link_text=exporter.anchor_link_text, exclude_anchor_links=exporter.exclude_anchor_links,
            **exporter.lexer_options)
        return MarkdownWithMath(renderer=renderer).render(source)


class FeedbackMarkdown2HTML(SafeMarkdown2HTML):
    """``markdown2html`` of the feedback page: formulas as MathML, no MathJax needed."""

    mathml = True


# --------------------------------------------------------------------------------------
# The preprocessor
# --------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


_GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


class SanitizeNotebook(NbGraderPreprocessor):
    """Make an executed notebook inert wherever it is rendered (nbconvert, the formgrader,
    JupyterLab): see the module docstring. Grades do not change: error outputs and
    stdout/stderr streams keep their type and name, only markup inside them is touched.
    What was removed goes to ``resources['sanitized']`` (short strings such as
    ``"cell 5 [q1]: removed <script> from output"``), to the log, and to the notebook
    metadata under :attr:`metadata_key`."""

    metadata_key = Unicode(
        "autograder_sanitized",
        help="Notebook metadata key that keeps the list of what was removed ('' for none).",
    ).tag(config=True)
    max_notes = 200

    def preprocess(self, nb: NotebookNode, resources: dict | None = None):
        resources = resources if resources is not None else {}
        notes: list[str] = []
        meta = nb.setdefault("metadata", NotebookNode())
        for key in ("widgets", "application/vnd.jupyter.widget-state+json"):
            if key in meta:
                del meta[key]
                notes.append("notebook: removed widget state")
        for index, cell in enumerate(nb.get("cells", [])):
            self._cell(cell, index, notes)
        seen = resources.setdefault("sanitized", [])
        for n in notes:
            if n not in seen:
                seen.append(n)
                self.log.warning("sanitized: %s", n)
        if self.metadata_key:
            old = meta.get(self.metadata_key)
            old = [x for x in old if isinstance(x, str)] if isinstance(old, list) else []
            merged = list(dict.fromkeys(old + notes))[: self.max_notes]
            if merged:
                meta[self.metadata_key] = merged
            elif self.metadata_key in meta:
                del meta[self.metadata_key]
        return nb, resources

    def preprocess_cell(self, cell, resources, cell_index):  # used by nothing but kept for the API
        notes: list[str] = []
        self._cell(cell, cell_index, notes)
        resources.setdefault("sanitized", []).extend(n for n in notes if n not in resources["sanitized"])
        return cell, resources

    # -- cells --------------------------------------------------------------------------
    def _cell(self, cell: NotebookNode, index: int, notes: list[str]) -> None:
        meta = cell.setdefault("metadata", NotebookNode())
        nbg = meta.get("nbgrader") if isinstance(meta.get("nbgrader"), dict) else None
        where = f"cell {index + 1}"
        if nbg is not None and isinstance(nbg.get("grade_id"), str) and nbg["grade_id"]:
            if not _GRADE_ID.match(nbg["grade_id"]):
                nbg["grade_id"] = re.sub(r"[^A-Za-z0-9_\-]", "_", nbg["grade_id"])
                notes.append(f"{where}: rewrote a grade_id that was not a plain name")
            where += f" [{nbg['grade_id']}]"
        if "widgets" in meta:
            del meta["widgets"]
            notes.append(f"{where}: removed widget state")
        if nbg is not None and isinstance(nbg.get("comment"), str) and nbg["comment"]:
            nbg["comment"], found = neutralise_markdown(nbg["comment"])
            if found:
                notes.append(f"{where}: removed {', '.join(found)} from the grader's comment")

        kind = cell.get("cell_type")
        if kind == "markdown":
            self._attachments(cell, where, notes)
            source = _text(cell.get("source", ""))
            new, found = neutralise_markdown(source, cell.get("attachments"))
            if found:
                cell["source"] = new
                notes.append(f"{where}: removed {', '.join(found)} from markdown")
        elif kind == "raw":
            if (meta.get("raw_mimetype") or "").lower() in ("", "text/html"):
                clean, found = sanitize_html(_text(cell.get("source", "")))
                if found:
                    cell["source"] = clean
                    notes.append(f"{where}: removed {', '.join(found)} from a raw cell")
            if "attachments" in cell:
                self._attachments(cell, where, notes)
        elif kind == "code":
            if "execution_count" in cell and cell["execution_count"] is not None \
                    and _int_or_none(cell["execution_count"]) is None:
                cell["execution_count"] = None
                notes.append(f"{where}: removed a non-numeric execution count")
            outs = []
            for out in cell.get("outputs", []) or []:
                clean = self._output(out, where, notes)
                if clean is not None:
                    outs.append(clean)
            cell["outputs"] = outs
        else:
            notes.append(f"{where}: unknown cell type {str(kind)[:40]!r} emptied")
            cell["source"] = ""

    @staticmethod
    def _attachments(cell: NotebookNode, where: str, notes: list[str]) -> None:
        att = cell.get("attachments")
        if att is None:
            return
        if not isinstance(att, dict):
            del cell["attachments"]
            notes.append(f"{where}: removed malformed attachments")
            return
        for name in list(att):
            bundle = att[name] if isinstance(att[name], dict) else {}
            kept = NotebookNode()
            for mime, data in bundle.items():
                data = _text(data)
                if mime in IMAGE_MIMES and _B64.match(data):
                    kept[mime] = data
                else:
                    notes.append(f"{where}: removed {mime} attachment {str(name)[:60]!r}")
            if kept:
                att[name] = kept
            else:
                del att[name]

    # -- outputs ------------------------------------------------------------------------
    def _output(self, out: dict, where: str, notes: list[str]) -> NotebookNode | None:
        kind = out.get("output_type") if isinstance(out, dict) else None
        if kind == "stream":
            return NotebookNode(output_type="stream", name=str(out.get("name") or "stdout"),
                                text=_text(out.get("text")))
        if kind == "error":
            tb = out.get("traceback") or []
            return NotebookNode(output_type="error", ename=_text(out.get("ename")), evalue=_text(out.get("evalue")),
                                traceback=[_text(x) for x in (tb if isinstance(tb, list) else [tb])])
        if kind not in ("display_data", "execute_result"):
            notes.append(f"{where}: removed an output of unknown type {str(kind)[:40]!r}")
            return None
        data = out.get("data") if isinstance(out.get("data"), dict) else {}
        meta = out.get("metadata") if isinstance(out.get("metadata"), dict) else {}
        new, removed = NotebookNode(), []
        for mime, value in data.items():
            if mime not in KEPT_MIMES:
                removed.append(mime)
            elif mime == "text/plain" or mime == "text/latex":
                new[mime] = _text(value)
            elif mime in IMAGE_MIMES:
                value = _text(value)
                if _B64.match(value):
                    new[mime] = value
                else:
                    removed.append(f"malformed {mime}")
            elif mime == "text/html":
                clean, found = sanitize_html(_text(value))
                if clean.strip():  # else let the text/plain version show
                    new[mime] = clean
                removed.extend(found)
            elif mime == "text/markdown":
                value = _text(value)
                found = markdown_findings(value)
                if found:
                    removed.extend(found)
                else:
                    new[mime] = value
        if removed:
            notes.append(f"{where}: removed {', '.join(dict.fromkeys(removed))} from output")
        if not new:
            new["text/plain"] = "[autograder] output removed: it could run code in a browser"
        clean_meta = NotebookNode()
        for mime in IMAGE_MIMES:
            m = meta.get(mime)
            if mime in new and isinstance(m, dict):
                kept = NotebookNode()
                for key in ("width", "height"):
                    v = m.get(key)
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 100_000:
                        kept[key] = int(v)
                if isinstance(m.get("unconfined"), bool):
                    kept["unconfined"] = m["unconfined"]
                if isinstance(m.get("alt"), str):
                    kept["alt"] = m["alt"][:1000]
                if kept:
                    clean_meta[mime] = kept
        if any(k not in IMAGE_MIMES for k in meta) or len(clean_meta) != sum(1 for k in meta if k in IMAGE_MIMES):
            dropped = sorted(k for k in meta if k not in clean_meta)
            if any(k in ("filenames", "text/html") for k in dropped):
                notes.append(f"{where}: removed output metadata {', '.join(dropped)[:80]}")
        result = NotebookNode(output_type=kind, data=new, metadata=clean_meta)
        if kind == "execute_result":
            count = _int_or_none(out.get("execution_count"))
            if count is None and out.get("execution_count") is not None:
                notes.append(f"{where}: removed a non-numeric execution count")
            result["execution_count"] = count
        return result


# --------------------------------------------------------------------------------------
# The grader's paths in tracebacks and printed output
# --------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
#: An absolute (or ``~/``) path: not inside a word, a URL, another path or after one of
#: the neutral forms below (``<course>/data/...`` stays as it is).
_ABS_PATH = re.compile(r"(?<![\w.\-~/@%+>])~?/[^\s'\"`<>:|,;()\[\]{}\\*?]+")
_IPYKERNEL_CELL = re.compile(r"/(?:ipykernel|xpython)_\d+/[\w\-]+\.py$")
_PACKAGES = re.compile(r"/(?:site|dist)-packages(?=/|$)")
_STDLIB = re.compile(r"/lib(?:64)?/(?:pypy|python)\d+(?:\.\d+)?t?(?=/|$)")
_HOME = re.compile(r"^(?:~|/root|/home/[^/]+|/Users/[^/]+|/tmp/home)(?=/|$)")
#: First folders of absolute paths that say where and how grading runs; a path under one
#: that no rule above names keeps only its file name (``<path>/x.csv``).
GRADER_ROOTS = frozenset("""
    root home work workspace workspaces tmp var srv mnt opt scratch data builds content app Users private media
""".split())


def _course_roots() -> list[str]:
    roots = {str(Path(__file__).resolve().parent.parent)}
    try:
        roots.add(os.getcwd())  # nbgrader converts with the course directory as working directory
    except OSError:  # pragma: no cover
        pass
    return sorted((r.rstrip("/") for r in roots if r.count("/") >= 2), key=len, reverse=True)


def _neutral_path(path: str, roots: list[str]) -> str | None:
    if _IPYKERNEL_CELL.search(path):
        return "<cell>"
    found = list(_PACKAGES.finditer(path))
    if found:
        return "<site-packages>" + path[found[-1].end():]
    found = list(_STDLIB.finditer(path))
    if found:
        return "<python>" + path[found[-1].end():]
    for root in roots:
        if path == root or path.startswith(root + "/"):
            return "<course>" + path[len(root):]
    m = _HOME.match(path)
    if m:
        return "<home>" + path[m.end():]
    parts = path.split("/")
    if len(parts) > 2 and parts[1] in GRADER_ROOTS:
        return "<path>/" + parts[-1] if parts[-1] else "<path>"
    return None


def neutral_paths(text: str, roots: list[str] | None = None) -> str:
    """``text`` with the grader's paths replaced: ``<site-packages>/torch/nn/...``,
    ``<python>/json/...`` (the standard library), ``<cell>`` (ipykernel's file of a
    cell), ``<course>/...`` (the course folder), ``<home>/...``, and ``<path>/name`` for
    other paths under a folder such as ``/tmp`` or ``/work``. ANSI colours, line numbers
    and everything else stay; idempotent."""
    if not isinstance(text, str) or "/" not in text:
        return text
    roots = _course_roots() if roots is None else roots

    def plain(piece: str) -> str:
        return _ABS_PATH.sub(lambda m: _neutral_path(m.group(0), roots) or m.group(0), piece)

    out, pos = [], 0
    for m in _ANSI.finditer(text):
        out.append(plain(text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(plain(text[pos:]))
    return "".join(out)


class NeutralisePaths(NbGraderPreprocessor):
    """Replace the grader's paths (its virtual environment, Python, home, course folder,
    ipykernel's cell files) with neutral forms in error outputs (``traceback`` and
    ``evalue``) and stream outputs: :func:`neutral_paths`. A student learns nothing of the
    grading machine from a traceback, and the rest of the text stays as it was."""

    def preprocess(self, nb: NotebookNode, resources: dict | None = None):
        roots = _course_roots()
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            for out in cell.get("outputs", []) or []:
                if not isinstance(out, dict):
                    continue
                kind = out.get("output_type")
                if kind == "stream" and isinstance(out.get("text"), (str, list)):
                    out["text"] = neutral_paths(_text(out["text"]), roots)
                elif kind == "error":
                    if isinstance(out.get("evalue"), str):
                        out["evalue"] = neutral_paths(out["evalue"], roots)
                    if isinstance(out.get("traceback"), list):
                        out["traceback"] = [neutral_paths(x, roots) if isinstance(x, str) else x
                                            for x in out["traceback"]]
        return nb, resources if resources is not None else {}


# --------------------------------------------------------------------------------------
# Configuration of nbconvert for the feedback export and the formgrader
# --------------------------------------------------------------------------------------

def configure(c: Config) -> None:
    """Make every ``HTMLExporter`` built from ``c`` render inertly, as a second layer behind
    :class:`SanitizeNotebook` in the autograde pipeline. nbgrader builds the feedback
    exporter (``GenerateFeedback``) and the formgrader's (``HTMLExporter(config=...)``)
    from the nbgrader config, so calling this from ``nbgrader_config.py``'s settings
    reaches both."""
    # run the preprocessor on every notebook an HTMLExporter renders (formgrader included)
    pre = list(c.HTMLExporter.preprocessors) if "preprocessors" in c.HTMLExporter else []
    if not any(p is SanitizeNotebook or p == "autograder.sanitize.SanitizeNotebook" for p in pre):
        pre.append(SanitizeNotebook)
    c.HTMLExporter.preprocessors = pre
    # outputs' HTML and markdown through clean_html; no <script> for JS and widget outputs
    c.HTMLExporter.sanitize_html = True
    filters = dict(c.HTMLExporter.filters) if "filters" in c.HTMLExporter else {}
    filters.update({"clean_html": clean_html_filter, "markdown2html": SafeMarkdown2HTML})
    c.HTMLExporter.filters = filters
    # never pick an active MIME type to render, whatever an output offers (set on the
    # template filters that pick it: on NbConvertBase, every nbgrader preprocessor would
    # log that it does not know the option)
    c.WidgetsDataTypeFilter.display_data_priority = list(DISPLAY_PRIORITY)
    c.DataTypeFilter.display_data_priority = list(DISPLAY_PRIORITY)
    # markdown images are not read from the grader's disk into the page
    c.HTMLExporter.embed_images = False
    c.HTMLExporter.skip_svg_encoding = False


# --------------------------------------------------------------------------------------
# The feedback page: the course's template, its filters and its outline
# --------------------------------------------------------------------------------------

#: The course's nbconvert templates: ``feedback`` extends nbgrader's template of that name.
FEEDBACK_TEMPLATES = Path(__file__).resolve().parent / "templates"


def _nbgrader_template_dirs() -> tuple[str, str]:
    """nbgrader's template folder and the bootstrap CSS its feedback template inlines."""
    import nbgrader

    formgrader = Path(nbgrader.__file__).resolve().parent / "server_extensions" / "formgrader"
    return str(formgrader / "templates"), str(formgrader / "static" / "node_modules" / "bootstrap" / "dist" / "css")


def feedback_filters() -> dict[str, Any]:
    """Jinja filters of the feedback exporter: :func:`configure`'s cleaning ones, markdown
    with MathML, ``text/latex`` outputs as MathML, and the outline."""
    return {"clean_html": clean_html_filter, "markdown2html": FeedbackMarkdown2HTML,
            "tex2mathml": latex_output_html, "feedback_outline": feedback_outline}


def configure_feedback(c: Config) -> None:
    """Make nbgrader's GenerateFeedback (and only it: the settings are nested under
    ``GenerateFeedback``, so the formgrader's exporter keeps nbgrader's templates) render
    with the course's ``feedback`` template (:data:`FEEDBACK_TEMPLATES`), which extends
    nbgrader's: maths as MathML and no MathJax, an outline by exercise. The template keeps
    its name, ``feedback``, which nbgrader's API sets explicitly; our folder comes first
    among the template folders, nbgrader's (on the loader's path) is what it extends."""
    nbgrader_templates, bootstrap_css = _nbgrader_template_dirs()
    exporter = c.GenerateFeedback.HTMLExporter
    exporter.extra_template_basedirs = [str(FEEDBACK_TEMPLATES), nbgrader_templates]
    # bootstrap_css: what nbgrader's GenerateFeedback puts there itself (include_css)
    exporter.extra_template_paths = [bootstrap_css, nbgrader_templates]
    # (a nested dict replaces the HTMLExporter's: keep any filter configured there)
    filters = dict(c.HTMLExporter.filters) if "filters" in c.HTMLExporter else {}
    filters.update(feedback_filters())
    exporter.filters = filters


_POINTS_MARK = re.compile(r"\s*[(\[]\s*\d+(?:\.\d+)?\s*(?:points?|pts?\.?|marks?)\s*[)\]]", re.I)
_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_BOLD_LEAD = re.compile(r"^ {0,3}(\*\*|__)(.+?)\1")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _outline_label(text: str) -> str:
    t = _POINTS_MARK.sub("", text)
    t = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", t)
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
    t = re.sub(r"<[^>]*>", "", t)
    t = t.replace("**", "").replace("__", "").replace("`", "")
    t = re.sub(r"(?<![\w*])\*(?=\S)([^*]*?)(?<=\S)\*(?![\w*])", r"\1", t)
    t = _CONTROL.sub(" ", htmllib.unescape(t))
    t = re.sub(r"\s+", " ", t).strip().rstrip(".:").strip()
    return t if len(t) <= 120 else t[:119].rstrip() + "…"


def _markdown_titles(source: str) -> list[tuple[str, str]]:
    """('heading' | 'lead', label) in the order they appear: ATX and setext headings, and
    bold leads with a points mark (``**Question 1 (3 points).** ...``) that start a
    paragraph. Fenced code is skipped."""
    found: list[tuple[str, str]] = []
    for fenced, text in _split_fenced(source):
        if fenced:
            continue
        prev = ""
        for line in text.splitlines():
            m = _ATX.match(line)
            if m:
                found.append(("heading", m.group(1)))
            elif _SETEXT.match(line) and prev.strip() and not _ATX.match(prev) and not prev.lstrip().startswith(
                    ("-", "*", "+", ">", "|")):
                found.append(("heading", prev.strip()))
            elif not prev.strip():
                lead = _BOLD_LEAD.match(line)
                if lead and _POINTS_MARK.search(lead.group(2)):
                    found.append(("lead", lead.group(2)))
            prev = line
    return [(kind, label) for kind, label in ((k, _outline_label(t)) for k, t in found) if label]


def _number(x: Any) -> str:
    if x is None or isinstance(x, bool):
        return "–"
    try:
        return f"{float(x):.2f}".rstrip("0").rstrip(".")
    except (TypeError, ValueError):
        return "–"


def _float_or_none(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def feedback_outline(nb: Any) -> list[dict[str, Any]]:
    """The feedback page's outline: one entry per exercise, in notebook order.

    A grade (or task) cell is named by the nearest title above it in a *locked* markdown
    cell (nbgrader metadata ``locked: true``: instructions restored from the release
    before grading; a markdown cell the student added or edited never names anything):
    a heading (``## 1. Scaled dot-product attention (14 points)`` gives
    ``1. Scaled dot-product attention``), or a bold lead with a points mark
    (``**Question 1 (3 points).** ...`` gives ``Question 1``), which names the cells after
    it up to the first written answer. Consecutive grade cells under the same title make
    one entry with their scores summed; a cell without a title is an entry named by its
    grade_id. Each entry is a dict: ``label``, ``named`` (False: the label is a grade_id),
    ``anchor`` (grade_id of its first cell), ``score``/``points`` and their texts
    (``score_text``, ``points_text``; a missing score is ``–``), ``parts`` (one per cell:
    ``grade_id``, ``kind`` ``tests``/``code answer``/``written answer``/``task``, texts)
    and ``comments`` (grade_ids with a grader's comment, anchored ``comment-<id>``: a
    solution cell's goes with the next grade cell). Labels are plain text: the template
    escapes them."""
    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    entries: list[dict[str, Any]] = []
    heading: tuple[Any, str] | None = None
    lead: tuple[Any, str] | None = None
    pending: list[str] = []  # grade_ids of commented solution cells not yet followed by a grade cell
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            continue
        meta = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        nbg = meta.get("nbgrader") if isinstance(meta.get("nbgrader"), dict) else {}
        kind = cell.get("cell_type")
        title = lead or heading
        key = title[0] if title else None
        grade_id = nbg.get("grade_id") if isinstance(nbg.get("grade_id"), str) else ""
        graded = bool(nbg.get("grade") is True or (nbg.get("task") is True and kind == "markdown")) and grade_id
        if graded:
            part_kind = ("task" if nbg.get("task") is True else "written answer" if kind == "markdown"
                         else "code answer" if nbg.get("solution") is True else "tests")
            score, points = _float_or_none(nbg.get("score")), _float_or_none(nbg.get("points")) or 0.0
            part = {"grade_id": grade_id, "kind": part_kind, "score": score, "points": points,
                    "score_text": _number(score), "points_text": _number(points)}
            last = entries[-1] if entries else None
            if key is not None and last is not None and last["_key"] == key:
                last["parts"].append(part)
                scores = [p["score"] for p in last["parts"]]
                last["score"] = None if all(s is None for s in scores) else sum(s or 0.0 for s in scores)
                last["points"] += points
                last["score_text"], last["points_text"] = _number(last["score"]), _number(last["points"])
            else:
                entries.append({"label": title[1] if title else grade_id, "named": title is not None,
                                "anchor": grade_id, "score": score, "points": points, "score_text": _number(score),
                                "points_text": _number(points), "parts": [part], "comments": pending, "_key": key})
                pending = []
            if kind == "markdown":
                lead = None  # a written answer ends its question
        comment = nbg.get("comment")
        if grade_id and isinstance(comment, str) and comment.strip() and (
                nbg.get("solution") is True or nbg.get("task") is True):
            if graded:
                entries[-1]["comments"].append(grade_id)
            else:  # a solution cell's comment goes with the grade cell that follows it
                pending.append(grade_id)
        if kind == "markdown" and nbg.get("locked") is True:
            for position, (what, label) in enumerate(_markdown_titles(_text(cell.get("source", "")))):
                if what == "heading":
                    heading, lead = ((index, position), label), None
                else:
                    lead = ((index, position), label)
    if pending and entries:
        entries[-1]["comments"].extend(pending)
    elif pending:
        entries.append({"_key": None, "label": "Comments", "named": True, "anchor": "comment-" + pending[0],
                        "score": None, "points": 0.0, "score_text": "", "points_text": "", "parts": [],
                        "comments": pending})
    for e in entries:
        del e["_key"]
    return entries


# --------------------------------------------------------------------------------------
# Content-Security-Policy for feedback pages
# --------------------------------------------------------------------------------------

#: Marks a page this module has hardened.
CSP_MARKER = 'http-equiv="Content-Security-Policy"'
_HEAD = re.compile(r"<head\b[^>]*>", re.I)


def _empty_notebook() -> NotebookNode:
    import nbformat

    return nbformat.v4.new_notebook()


def _feedback_exporter(template_name: str = "feedback"):
    """The HTMLExporter of nbgrader's GenerateFeedback converter, built by it with the
    course's settings (:func:`configure`, :func:`configure_feedback`)."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    c = Config()
    configure(c)
    configure_feedback(c)
    c.HTMLExporter.template_name = template_name
    converter = GenerateFeedback(coursedir=CourseDirectory(config=c), config=c)
    exporter = converter.exporter_class(parent=converter, config=converter.config)
    exporter.register_preprocessor(CSSHTMLHeaderPreprocessor)
    return exporter


def _dummy_resources() -> dict:
    return {"nbgrader": {"notebook": "notebook", "score": 0.0, "max_score": 0.0, "late_penalty": 0.0}}


class _Reference:
    """What the template itself puts in a page: learnt from rendering an empty notebook.
    The course's feedback template has no script at all (maths is MathML, rendered by the
    browser), so its policy allows none; a template that had some would get exactly its
    own inline scripts (by hash) and script URLs."""

    def __init__(self, template_name: str):
        exporter = _feedback_exporter(template_name)
        self.page, _ = exporter.from_notebook_node(_empty_notebook(), resources=_dummy_resources())
        doc = html5lib.parse(self.page, treebuilder="etree", namespaceHTMLElements=False)
        self.hashes: list[str] = []
        self.sources: list[str] = []
        for s in doc.iter("script"):
            src = s.get("src")
            typ = (s.get("type") or "").strip().lower()
            if src:
                base = src.split("?", 1)[0].split("#", 1)[0]
                if base not in self.sources:
                    self.sources.append(base)
            elif typ in ("", "text/javascript", "application/javascript", "module"):
                digest = base64.b64encode(hashlib.sha256((s.text or "").encode("utf-8")).digest()).decode()
                if digest not in self.hashes:
                    self.hashes.append(digest)

    def policy(self) -> str:
        scripts = [f"'sha256-{h}'" for h in self.hashes] + self.sources
        return "; ".join([
            "default-src 'none'",
            "script-src " + (" ".join(scripts) if scripts else "'none'"),
            "style-src 'unsafe-inline'",
            "img-src data:",
            "font-src data:",
            "connect-src 'none'",
            "media-src 'none'",
            "object-src 'none'",
            "frame-src 'none'",
            "worker-src 'none'",
            "manifest-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ])


@functools.lru_cache(maxsize=4)
def _reference(template_name: str) -> _Reference:
    return _Reference(template_name)


def feedback_csp(template_name: str = "feedback") -> str:
    """The Content-Security-Policy that :func:`harden_feedback_html` writes."""
    return _reference(template_name).policy()


def harden_feedback_html(path: Path | str, template_name: str = "feedback") -> None:
    """Put a Content-Security-Policy ``<meta>`` first in the ``<head>`` of a feedback page
    (and a no-referrer policy). Scripts allowed: those of the template itself, by the
    sha256 of each, learnt from an empty notebook rendered through the same exporter and
    template (the course's template has none: no script runs). A script that sanitising
    should ever miss has no hash, so it does not run. Idempotent."""
    path = Path(path)
    page = path.read_text(encoding="utf-8")
    head = _HEAD.search(page)
    if head is None:
        raise ValueError(f"{path}: no <head> element; not a feedback page")
    if CSP_MARKER in page[head.end(): page.find("</head>") if "</head>" in page else len(page)]:
        return
    ref = _reference(template_name)
    meta = (f'\n<meta {CSP_MARKER} content="{htmllib.escape(ref.policy(), quote=True)}">'
            '\n<meta name="referrer" content="no-referrer">')
    page = page[: head.end()] + meta + page[head.end():]
    path.write_text(page, encoding="utf-8")


def harden_feedback_dir(folder: Path | str, template_name: str = "feedback") -> list[Path]:
    """:func:`harden_feedback_html` on every ``*.html`` below ``folder``; returns them."""
    done = []
    for p in sorted(Path(folder).rglob("*.html")):
        harden_feedback_html(p, template_name)
        done.append(p)
    return done
