"""One self-contained HTML page for the analyses: images inlined as data URIs, inline CSS, no network.

The page can be mailed, archived or opened offline without its sibling files.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportSection", "write_report", "table_from_eval"]

STAR = "★"

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml", ".gif": "image/gif"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #ddd; padding-bottom: .4rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; }
p.caption { color: #555; margin: .2rem 0 .8rem; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
"""


@dataclass
class ReportSection:
    """One section of the report: a heading, a one-line caption (what to look for), and an image or a table.

    `highlight` holds (row, column) indices into `rows` whose cells are shown in bold.
    """

    heading: str
    caption: str
    image: str | Path | None = None
    headers: list[str] | None = None
    rows: list[list[str]] | None = None
    highlight: set[tuple[int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        has_table = self.headers is not None or self.rows is not None
        if (self.image is None) == (not has_table):
            raise ValueError(f"section {self.heading!r} needs exactly one of an image or a table (headers + rows)")
        if has_table:
            if self.headers is None or self.rows is None:
                raise ValueError(f"section {self.heading!r}: a table needs both headers and rows")
            for i, row in enumerate(self.rows):
                if len(row) != len(self.headers):
                    raise ValueError(f"section {self.heading!r}: row {i} has {len(row)} cells, "
                                     f"headers have {len(self.headers)}")


def _image_html(path: str | Path, alt: str) -> str:
    """`<img>` with the file inlined as a base64 data URI."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report image not found: {path}")
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"unsupported image type {path.suffix!r} for {path}; use one of {sorted(_MIME)}")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(alt)}">'


def _table_html(section: ReportSection) -> str:
    """HTML table with every cell escaped and highlighted cells in bold."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in section.headers or [])
    body = []
    for r, row in enumerate(section.rows or []):
        cells = []
        for c, value in enumerate(row):
            text = html.escape(str(value))
            cells.append(f"<td><strong>{text}</strong></td>" if (r, c) in section.highlight else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _section_html(section: ReportSection) -> str:
    content = _image_html(section.image, section.heading) if section.image is not None else _table_html(section)
    return (f"<section>\n<h2>{html.escape(section.heading)}</h2>\n"
            f'<p class="caption">{html.escape(section.caption)}</p>\n{content}\n</section>')


def write_report(out_dir: str | Path, title: str, sections: list[ReportSection]) -> Path:
    """Write `out_dir/index.html` holding all sections and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = "\n".join(_section_html(s) for s in sections)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# evaluation table
# ---------------------------------------------------------------------------

_CORE_KEYS = ("ppl", "accuracy")
_HIDDEN_KEYS = {"ppl", "accuracy", "tokens"}


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None for missing / non-numeric / non-finite entries."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(key: str, value: Any) -> str:
    number = _number(value)
    if number is None:
        return "–" if value is None else str(value)
    if key == "ppl":
        return f"{number:.2f}"
    if key == "accuracy":
        return f"{100 * number:.1f}%"
    return f"{number:.4g}"


def _best_rows(models: list[str], results: dict[str, Any], domain: str, key: str, lower_is_better: bool) -> set[int]:
    """Indices of the models with the best `key` on `domain` (all ties)."""
    scores = {i: _number((results[m].get(domain) or {}).get(key)) for i, m in enumerate(models)}
    scores = {i: v for i, v in scores.items() if v is not None}
    if not scores:
        return set()
    best = min(scores.values()) if lower_is_better else max(scores.values())
    return {i for i, v in scores.items() if v == best}


def table_from_eval(eval_json: dict[str, Any]) -> ReportSection:
    """Models × domains table of perplexity and accuracy from an evaluation JSON.

    Expects `{"domains": [...], "models": {model: {domain: {"ppl", "accuracy", ...}}}, "best": {...}}`.
    Models named in the optional `best` mapping (a sweep's chosen point) get a ★; the best perplexity
    and accuracy of each domain are bold. Extra numeric per-domain keys (e.g. `jsd_base`) become
    extra columns; `tokens` is left out.
    """
    domains = eval_json.get("domains")
    results = eval_json.get("models")
    if not isinstance(domains, list) or not domains or not isinstance(results, dict) or not results:
        raise ValueError("eval_json needs a non-empty 'domains' list and a non-empty 'models' mapping")
    chosen = set((eval_json.get("best") or {}).values())
    models = list(results)

    columns: list[tuple[str, str]] = []  # (domain, key)
    for domain in domains:
        extras: list[str] = []
        for model in models:
            for key, value in (results[model].get(domain) or {}).items():
                if key not in _HIDDEN_KEYS and key not in extras and _number(value) is not None:
                    extras.append(key)
        columns.extend((domain, key) for key in (*_CORE_KEYS, *extras))

    headers = ["model"] + [f"{d} {'acc' if k == 'accuracy' else k}" for d, k in columns]
    rows = [
        [f"{model} {STAR}" if model in chosen else model]
        + [_fmt(key, (results[model].get(domain) or {}).get(key)) for domain, key in columns]
        for model in models
    ]
    highlight: set[tuple[int, int]] = set()
    for c, (domain, key) in enumerate(columns, start=1):
        if key in _CORE_KEYS:
            highlight |= {(r, c) for r in _best_rows(models, results, domain, key, lower_is_better=key == "ppl")}
    return ReportSection(
        heading="Evaluation: perplexity and accuracy per domain",
        caption=f"Lower perplexity and higher next-token accuracy are better; bold marks the best per column, "
                f"{STAR} the point a sweep chose.",
        headers=headers,
        rows=rows,
        highlight=highlight,
    )
