"""The class report of an assignment: ``python -m autograder report ASSIGNMENT``.

One self-contained HTML page (``reports/<assignment>/index.html``, the figures embedded) and
the same figures as PNG files next to it, for the instructor:

- the score histogram (autograded points) and the counts by status;
- the pass rate of each grade cell (full points) and of each hidden check;
- the most frequent failure messages of the hidden checks (numbers masked, so that the same
  mistake made with different values counts once): which mistakes the class made (exercises
  left as released are counted apart, per grade cell);
- the submissions flagged ``REVIEW``, and those not graded (failed, timeout, invalid,
  missing), with the reason;
- the grading time per student.

Built from the gradebook (scores) and the records ``grade`` keeps there
(:mod:`autograder.ledger`: status, review flag, message, seconds, the trusted verdicts).
Every text that comes from a student (ids, messages derived from their code) is escaped,
the page is passed through the course's HTML sanitiser (:func:`autograder.sanitize.sanitize_html`)
and carries a Content-Security-Policy that allows no script and no request.
"""
from __future__ import annotations

import base64
import html
import io
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry

from autograder import config as cfg
from autograder import ledger

#: Failure messages listed (most frequent first).
TOP_MESSAGES = 15
#: Characters of a message shown.
MESSAGE_CHARS = 300
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; "
       "object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass
class Row:
    student: str
    status: str = "graded"
    auto: float = 0.0
    auto_max: float = 0.0
    cells: dict[str, tuple[float, float]] = field(default_factory=dict)  # grade id -> (score, max)
    review: str = ""
    message: str = ""
    seconds: float = 0.0
    host: str = ""
    verdicts: dict = field(default_factory=dict)


def gather(assignment: str, db_url: str) -> list[Row]:
    """One row per student with a submission in the gradebook or a record of ``grade``."""
    recs = ledger.records(db_url, assignment)
    rows: dict[str, Row] = {}
    with Gradebook(db_url, ledger.COURSE_ID) as gb:
        try:
            subs = gb.find_assignment(assignment).submissions
        except MissingEntry:
            subs = []
        for sub in subs:
            r = Row(sub.student.id, auto=float(sub.code_score), auto_max=float(sub.max_code_score))
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.cell_type == "code" or g.auto_score is not None:
                        r.cells[g.name] = (float(g.score), float(g.max_score))
            rows[r.student] = r
    for sid, rec in recs.items():
        r = rows.get(sid)
        if r is None:
            if rec.status == "graded":  # graded once, removed from the gradebook since
                continue
            r = rows[sid] = Row(sid, status=rec.status)
        elif rec.status != "graded":
            continue  # the gradebook's submission is newer than this record (graded by other means)
        r.review, r.message, r.seconds, r.host = rec.review, rec.message, rec.seconds, rec.host
        r.verdicts = rec.verdicts or {}
    return sorted(rows.values(), key=lambda r: r.student)


def mask_numbers(text: str) -> str:
    return _NUMBER.sub("#", text)


def check_stats(rows: list[Row]) -> list[tuple[str, str, int, int]]:
    """(grade id, check name, passed, ran) of every hidden check, in the order first seen."""
    seen: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        for gid, v in r.verdicts.items():
            if not isinstance(v, dict):
                continue
            for c in v.get("checks") or []:
                if not isinstance(c, dict):
                    continue
                k = seen.setdefault((str(gid), str(c.get("name", ""))), [0, 0])
                k[0] += bool(c.get("passed"))
                k[1] += 1
    return [(g, n, p, t) for (g, n), (p, t) in seen.items()]


def _not_attempted(message: str) -> bool:
    """The exercise was left as released (its stub raises NotImplementedError): not a mistake."""
    return "NotImplementedError" in message


def not_attempted(rows: list[Row]) -> Counter:
    """Per grade cell, the students whose hidden checks failed only because the exercise was
    left as released."""
    out: Counter = Counter()
    for r in rows:
        for gid, v in r.verdicts.items():
            fails = [c for c in (v.get("checks") or []) if isinstance(c, dict) and not c.get("passed")] \
                if isinstance(v, dict) else []
            if fails and all(_not_attempted(str(c.get("message") or "")) for c in fails):
                out[str(gid)] += 1
    return out


def failure_messages(rows: list[Row]) -> list[tuple[int, str, str, str]]:
    """(students, grade id, check, message) of the most frequent failures: each message's first
    line with its numbers masked; one example (unmasked) per group. Exercises left as released
    (NotImplementedError) are not mistakes: they are counted apart (:func:`not_attempted`)."""
    groups: Counter = Counter()
    example: dict[tuple[str, str, str], str] = {}
    for r in rows:
        mine = set()
        for gid, v in r.verdicts.items():
            if not isinstance(v, dict):
                continue
            for c in v.get("checks") or []:
                if not isinstance(c, dict) or c.get("passed"):
                    continue
                first = (str(c.get("message") or "").strip().splitlines() or [""])[0]
                if _not_attempted(first):
                    continue
                key = (str(gid), str(c.get("name", "")), mask_numbers(first)[:MESSAGE_CHARS])
                mine.add(key)
                example.setdefault(key, first[:MESSAGE_CHARS])
        groups.update(mine)
    return [(n, g, c, example[(g, c, m)]) for (g, c, m), n in groups.most_common(TOP_MESSAGES)]


# -- figures ------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def figures(rows: list[Row], checks: list[tuple[str, str, int, int]]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    graded = [r for r in rows if r.status == "graded"]
    top = max((r.auto_max for r in graded), default=0.0)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    if graded:
        bins = min(20, max(5, int(top) or 5))
        ax.hist([r.auto for r in graded], bins=bins, range=(0, top or 1), color="#4c72b0", edgecolor="white")
    ax.set(xlabel=f"autograded points (of {top:g})", ylabel="students",
           title=f"Score histogram ({len(graded)} graded)")
    out["scores.png"] = _png(fig)

    cells = sorted({c for r in graded for c in r.cells}, key=lambda c: _first_index(graded, c))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(cells) + 1.2))
    rates = [100 * sum(r.cells[c][0] >= r.cells[c][1] > 0 for r in graded if c in r.cells)
             / max(1, sum(c in r.cells for r in graded)) for c in cells]
    _bars(ax, rates)
    ax.set_yticks(range(len(cells)), cells)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="% of graded students with full points", title="Pass rate per grade cell")
    out["grade_cells.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(8, 0.3 * len(checks) + 1.2))
    labels = [f"{g}: {n}"[:70] for g, n, _, _ in checks]
    _bars(ax, [100 * p / max(1, t) for _, _, p, t in checks])
    ax.set_yticks(range(len(checks)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="% of students whose check passed", title="Pass rate per hidden check")
    out["hidden_checks.png"] = _png(fig)

    timed = [r for r in rows if r.seconds > 0]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if timed:
        ax.hist([r.seconds for r in timed], bins=20, color="#8172b2", edgecolor="white")
    ax.set(xlabel="seconds", ylabel="students", title="Grading time per student")
    out["grading_time.png"] = _png(fig)
    return out


def _bars(ax, rates: list[float]) -> None:
    """Horizontal bars of pass rates (%), coloured by how the class did (green >= 80, orange >= 50, red below),
    each labelled with its value: the cells and checks the class struggled with stand out."""
    colours = ["#55a868" if r >= 80 else "#dd8452" if r >= 50 else "#c44e52" for r in rates]
    ax.barh(range(len(rates)), rates, color=colours)
    for i, r in enumerate(rates):
        ax.text(min(r, 88) + 1, i, f"{r:.0f}%", va="center", fontsize=8)


def _first_index(rows: list[Row], cell: str) -> int:
    for r in rows:
        if cell in r.cells:
            return list(r.cells).index(cell)
    return 0


# -- the page -----------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _table(head: list[str], body: list[list]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>"


def _img(name: str, data: bytes, alt: str) -> str:
    return f'<p><img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{_e(alt)}"></p>'


def render(assignment: str, rows: list[Row], figs: dict[str, bytes]) -> str:
    graded = [r for r in rows if r.status == "graded"]
    checks = check_stats(rows)
    status = Counter(r.status for r in rows)
    top = max((r.auto_max for r in graded), default=0.0)
    parts = [f"<h1>Class report: {_e(assignment)}</h1>"]
    summary = [["students", len(rows)], *[[f"status: {k}", v] for k, v in sorted(status.items())],
               ["flagged REVIEW", sum(bool(r.review) for r in rows)]]
    if graded:
        scores = [r.auto for r in graded]
        summary += [["autograded points: mean", f"{statistics.mean(scores):.1f} / {top:g}"],
                    ["autograded points: median", f"{statistics.median(scores):g} / {top:g}"],
                    ["full autograded points", sum(r.auto >= top > 0 for r in graded)]]
    timed = [r.seconds for r in rows if r.seconds > 0]
    if timed:
        summary += [["grading time: median per student", f"{statistics.median(timed):.1f} s"],
                    ["grading time: total", f"{sum(timed) / 60:.1f} min"]]
    parts += ["<h2>Summary</h2>", _table(["", ""], summary), _img("scores.png", figs["scores.png"], "score histogram")]

    cells = sorted({c for r in graded for c in r.cells}, key=lambda c: _first_index(graded, c))
    skipped = not_attempted(rows)
    body = []
    for c in cells:
        have = [r.cells[c] for r in graded if c in r.cells]
        full = sum(s >= m > 0 for s, m in have)
        body.append([c, f"{max(m for _, m in have):g}", f"{full}/{len(have)}", f"{100 * full / len(have):.0f}%",
                     f"{statistics.mean(s for s, _ in have):.2f}", skipped.get(c, 0)])
    parts += ["<h2>Pass rate per grade cell</h2>",
              _table(["grade cell", "points", "full points", "pass rate", "mean points",
                      "not attempted (left as released)"], body),
              _img("grade_cells.png", figs["grade_cells.png"], "pass rate per grade cell")]

    body = [[g, n, f"{p}/{t}", f"{100 * p / max(1, t):.0f}%"] for g, n, p, t in checks]
    parts += ["<h2>Pass rate per hidden check</h2>",
              _table(["grade cell", "hidden check", "passed", "pass rate"], body) if body
              else "<p>No hidden-check verdicts were recorded.</p>",
              _img("hidden_checks.png", figs["hidden_checks.png"], "pass rate per hidden check") if body else ""]

    fails = failure_messages(rows)
    parts += ["<h2>Most frequent failures</h2>",
              "<p>First line of each failing hidden check's message, numbers masked when counting "
              "(one example shown); a student counts once per message. Exercises left as released "
              "(NotImplementedError) are counted per grade cell above, not here.</p>",
              _table(["students", "grade cell", "hidden check", "message (example)"], [list(f) for f in fails])
              if fails else "<p>No hidden check failed.</p>"]

    flagged = [[r.student, r.review] for r in rows if r.review]
    parts += ["<h2>Flagged REVIEW</h2>",
              _table(["student", "why"], flagged) if flagged else "<p>None.</p>"]
    bad = [[r.student, r.status, r.message] for r in rows if r.status != "graded"]
    parts += ["<h2>Not graded (failed, timeout, invalid, missing)</h2>",
              _table(["student", "status", "reason"], bad) if bad else "<p>None.</p>"]

    slow = sorted((r for r in rows if r.seconds > 0), key=lambda r: -r.seconds)
    parts += ["<h2>Grading time per student</h2>",
              _img("grading_time.png", figs["grading_time.png"], "grading time per student"),
              _table(["student", "seconds", "status", "graded on"],
                     [[r.student, f"{r.seconds:.1f}", r.status, r.host] for r in slow])]

    from autograder.sanitize import sanitize_html

    body_html, _ = sanitize_html("\n".join(parts))  # a second layer: every student text is escaped already
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left;vertical-align:top}th{background:#f0f0f0}img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(CSP)}\">\n"
            "<meta name=\"referrer\" content=\"no-referrer\">\n"
            f"<title>Class report: {_e(assignment)}</title>\n<style>{style}</style></head>\n"
            f"<body>\n{body_html}\n</body></html>\n")


def write_report(assignment: str, *, course_dir: Path | None = None, db_url: str | None = None,
                 out: Path | None = None) -> Path:
    """Write ``index.html`` and the PNG figures into ``out`` (default
    ``<course-dir>/reports/<assignment>``); return the page's path."""
    course_dir = Path(course_dir or cfg.repo_root()).resolve()
    db_url = db_url or cfg.default_db_url(course_dir)
    out = Path(out or course_dir / "reports" / assignment)
    rows = gather(assignment, db_url)
    if not rows:
        raise SystemExit(f"nothing graded for {assignment!r} in {db_url}: run `python -m autograder grade` first")
    figs = figures(rows, check_stats(rows))
    out.mkdir(parents=True, exist_ok=True)
    for name, data in figs.items():
        (out / name).write_bytes(data)
    page = out / "index.html"
    page.write_text(render(assignment, rows, figs), encoding="utf-8")
    return page
