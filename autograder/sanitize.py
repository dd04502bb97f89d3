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
   script runs there but the template's own (by hash, learnt from an empty notebook)
   and MathJax from its CDN folder; images only as ``data:`` URIs; no eval.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import html as htmllib
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
    "SanitizeNotebook", "SafeMarkdown2HTML", "clean_html_filter", "configure", "harden_feedback_html",
    "harden_feedback_dir", "sanitize_html", "render_markdown", "markdown_findings", "neutralise_markdown",
    "feedback_csp", "CSP_MARKER",
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


def _cleaner() -> bleach.Cleaner:
    c = getattr(_local, "cleaner", None)
    if c is None:
        c = _local.cleaner = bleach.Cleaner(
            tags=ALLOWED_TAGS, attributes=_bleach_attr, protocols={"http", "https", "mailto", "data"},
            strip=True, strip_comments=True,
            css_sanitizer=CSSSanitizer(allowed_css_properties=SAFE_CSS, allowed_svg_properties=()))
    return c


def _first_pass(root, findings: list[str], id_prefix: str, strict_style: bool) -> None:
    """Clean the html5lib tree in place: drop dangerous subtrees, unwrap unknown tags, strip
    attributes; append a short description of each active thing removed to ``findings``."""
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


def sanitize_html(fragment: str, id_prefix: str = ID_PREFIX, strict_style: bool = False) -> tuple[str, list[str]]:
    """Clean an HTML fragment. Returns the clean HTML and the list of active things removed
    (``"<script>"``, ``"onerror attribute"``, ``"remote image"``, ...); inert removals
    (comments, unknown tags, relative links) are not listed, nor is a ``<style>`` element
    (pandas puts one before every table) unless it loads something or ``strict_style``."""
    fragment = fragment if isinstance(fragment, str) else str(fragment)
    if not fragment:
        return "", []
    findings: list[str] = []
    root = _parser().parseFragment(fragment)
    _first_pass(root, findings, id_prefix, strict_style)
    return _cleaner().clean(_serialize(root)), findings


def clean_html_filter(element: Any) -> str:
    """Drop-in for nbconvert's ``clean_html`` template filter (used when ``sanitize_html``)."""
    if isinstance(element, bytes):
        element = element.decode("utf-8", "replace")
    return sanitize_html(str(element))[0]


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------

def render_markdown(source: str, attachments: dict | None = None) -> str:
    """Render markdown the way nbconvert's HTMLExporter does (``markdown2html`` with images
    not embedded, then ``strip_files_prefix``), raw HTML and all."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from nbconvert.filters.strings import strip_files_prefix

    renderer = IPythonRenderer(escape=False, attachments=attachments or {}, embed_images=False, path="",
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
    templates render markdown cells without ``clean_html``; this covers them."""

    jinja_pass_arg = pass_context(lambda context, source: source).jinja_pass_arg  # jinja passes the context

    def __call__(self, context, source):
        exporter = self.parent
        if exporter is not None and hasattr(exporter, "markdown2html"):
            rendered = exporter.markdown2html(context, source)
        else:
            rendered = render_markdown(source, (context.get("cell") or {}).get("attachments"))
        return sanitize_html(rendered)[0]


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
# Content-Security-Policy for feedback pages
# --------------------------------------------------------------------------------------

#: Marks a page this module has hardened.
CSP_MARKER = 'http-equiv="Content-Security-Policy"'
_MATHJAX_CONFIG = re.compile(r'<script type="text/x-mathjax-config">(.*?)</script>', re.S)
_SCRIPT_SRC = re.compile(r'<script\b[^>]*\bsrc="([^"]+)"[^>]*>', re.I)
_HEAD = re.compile(r"<head\b[^>]*>", re.I)


def _empty_notebook() -> NotebookNode:
    import nbformat

    return nbformat.v4.new_notebook()


def _feedback_exporter(template_name: str = "feedback"):
    """The HTMLExporter of nbgrader's GenerateFeedback converter, built by it."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    c = Config()
    configure(c)
    c.HTMLExporter.template_name = template_name
    converter = GenerateFeedback(coursedir=CourseDirectory(config=c), config=c)
    exporter = converter.exporter_class(parent=converter, config=converter.config)
    exporter.register_preprocessor(CSSHTMLHeaderPreprocessor)
    return exporter


def _dummy_resources() -> dict:
    return {"nbgrader": {"notebook": "notebook", "score": 0.0, "max_score": 0.0, "late_penalty": 0.0}}


def _rewrite_mathjax(page: str, ref_block: str | None) -> str:
    """Make MathJax work without ``eval``: its in-page ``text/x-mathjax-config`` block (which
    MathJax 2 evaluates with eval) becomes a plain script that registers the same code as a
    startup hook; ``latest.js`` (which asks a CDN API for a version) becomes ``MathJax.js``."""
    head_end = page.find("</head>")
    if head_end == -1:
        return page
    head, rest = page[:head_end], page[head_end:]
    if ref_block and ref_block in head:
        body = _MATHJAX_CONFIG.match(ref_block).group(1)
        hook = ('<script>window.MathJax = {AuthorInit: function () {\n'
                'MathJax.Hub.Register.StartupHook("Begin", function () {' + body + '});\n}};</script>')
        head = head.replace(ref_block, "", 1)
        first_src = _SCRIPT_SRC.search(head)
        at = first_src.start() if first_src else len(head)
        head = head[:at] + hook + "\n" + head[at:]
    head = re.sub(r'(<script\b[^>]*\bsrc="[^"]*/mathjax/[^"/]*/)latest\.js', r"\1MathJax.js", head)
    return head + rest


class _Reference:
    """What the template itself puts in a page: learnt from rendering an empty notebook."""

    def __init__(self, template_name: str):
        exporter = _feedback_exporter(template_name)
        page, _ = exporter.from_notebook_node(_empty_notebook(), resources=_dummy_resources())
        head = page[: page.find("</head>")]
        m = _MATHJAX_CONFIG.search(head)
        self.mathjax_block = m.group(0) if m else None
        self.page = _rewrite_mathjax(page, self.mathjax_block)
        doc = html5lib.parse(self.page, treebuilder="etree", namespaceHTMLElements=False)
        self.hashes: list[str] = []
        self.sources: list[str] = []
        self.mathjax_dir: str | None = None
        for s in doc.iter("script"):
            src = s.get("src")
            typ = (s.get("type") or "").strip().lower()
            if src:
                base = src.split("?", 1)[0].split("#", 1)[0]
                if re.search(r"/mathjax/[^/]+/(MathJax|latest)\.js$", base, re.I):
                    self.mathjax_dir = base.rsplit("/", 1)[0] + "/"
                    base = self.mathjax_dir
                if base not in self.sources:
                    self.sources.append(base)
            elif typ in ("", "text/javascript", "application/javascript", "module"):
                digest = base64.b64encode(hashlib.sha256((s.text or "").encode("utf-8")).digest()).decode()
                if digest not in self.hashes:
                    self.hashes.append(digest)

    def policy(self) -> str:
        scripts = [f"'sha256-{h}'" for h in self.hashes] + self.sources
        fonts = ([self.mathjax_dir] if self.mathjax_dir else []) + ["data:"]
        return "; ".join([
            "default-src 'none'",
            "script-src " + (" ".join(scripts) if scripts else "'none'"),
            "style-src 'unsafe-inline'",
            "img-src data:",
            "font-src " + " ".join(fonts),
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
    (and a no-referrer policy), and let MathJax run without eval. Scripts allowed: those
    of the template itself, by the sha256 of each, learnt from an empty notebook rendered
    through the same exporter and template, and the MathJax folder on its CDN. A script
    that sanitising should ever miss has no hash, so it does not run. Idempotent."""
    path = Path(path)
    page = path.read_text(encoding="utf-8")
    head = _HEAD.search(page)
    if head is None:
        raise ValueError(f"{path}: no <head> element; not a feedback page")
    if CSP_MARKER in page[head.end(): page.find("</head>") if "</head>" in page else len(page)]:
        return
    ref = _reference(template_name)
    page = _rewrite_mathjax(page, ref.mathjax_block)
    head = _HEAD.search(page)
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
