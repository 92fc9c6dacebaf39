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

from superpose.evaluation.evaluate import GROUPS, model_group

__all__ = ["ReportSection", "write_report", "table_from_eval", "detail_tables_from_eval"]

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
tr.group th { background: #e8eef6; text-align: left; font-weight: 600; }
td { white-space: nowrap; }
div.wide { overflow-x: auto; max-width: 100%; }
details { margin: .6rem 0; }
summary { cursor: pointer; font-weight: 600; }
"""


@dataclass
class ReportSection:
    """One section of the report: a heading, a one-line caption (what to look for), and an image or a table.

    `highlight` holds (row, column) indices into `rows` whose cells are shown in bold; `row_groups`, one label per
    row, starts a labelled band wherever the label changes; a `collapsed` section shows only its heading until
    it is opened (`<details>`).
    """

    heading: str
    caption: str
    image: str | Path | None = None
    headers: list[str] | None = None
    rows: list[list[str]] | None = None
    highlight: set[tuple[int, int]] = field(default_factory=set)
    row_groups: list[str] | None = None
    collapsed: bool = False

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
            if self.row_groups is not None and len(self.row_groups) != len(self.rows):
                raise ValueError(f"section {self.heading!r}: {len(self.row_groups)} row groups for "
                                 f"{len(self.rows)} rows")


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
    """HTML table with every cell escaped, highlighted cells in bold and a band row before each group."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in section.headers or [])
    body, group = [], None
    for r, row in enumerate(section.rows or []):
        if section.row_groups is not None and section.row_groups[r] != group:
            group = section.row_groups[r]
            body.append(f'<tr class="group"><th colspan="{len(row)}">{html.escape(group)}</th></tr>')
        cells = []
        for c, value in enumerate(row):
            text = html.escape(str(value))
            cells.append(f"<td><strong>{text}</strong></td>" if (r, c) in section.highlight else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wide">\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table>\n</div>")


def _section_html(section: ReportSection) -> str:
    content = _image_html(section.image, section.heading) if section.image is not None else _table_html(section)
    heading, caption = html.escape(section.heading), html.escape(section.caption)
    if section.collapsed:
        return (f'<details>\n<summary>{heading}</summary>\n<p class="caption">{caption}</p>\n{content}\n'
                f"</details>")
    return f'<section>\n<h2>{heading}</h2>\n<p class="caption">{caption}</p>\n{content}\n</section>'


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
# evaluation tables
# ---------------------------------------------------------------------------

_HIDDEN_KEYS = {"ppl", "accuracy", "tokens", "nll"}


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
    if key == "ppl" or key.startswith("ppl_"):
        return f"{number:.2f}"
    if key == "accuracy" or key.endswith("_share"):
        return f"{100 * number:.1f}%"
    if key == "tokens" or key.startswith("tokens_"):
        return f"{number:.0f}"
    return f"{number:.4g}"


def _ppl(results: dict[str, Any], model: str, domain: str) -> float | None:
    return _number((results[model].get(domain) or {}).get("ppl"))


def _geomean_ppl(results: dict[str, Any], model: str, domains: list[str]) -> float:
    """The model's geometric-mean perplexity over the sets (inf when one is missing): the sorting key."""
    values = [_ppl(results, model, d) for d in domains]
    if any(v is None or v <= 0 for v in values):
        return math.inf
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _ordered(eval_json: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Models grouped (superposed, stacks, mixtures, merges, bounds), best first within each group, and each
    model's group."""
    results, domains = eval_json["models"], eval_json["domains"]
    bounds = set(eval_json.get("reads_answer") or [])
    known = eval_json.get("groups") or {}
    group_of = {m: known.get(m) or model_group(m, m in bounds) for m in results}
    rank = {g: i for i, g in enumerate(GROUPS)}
    models = sorted(results, key=lambda m: (rank.get(group_of[m], len(rank)), _geomean_ppl(results, m, domains)))
    return models, [group_of[m] for m in models]


def _label(model: str, eval_json: dict[str, Any]) -> str:
    chosen = set((eval_json.get("best") or {}).values())
    return f"{model} {STAR}" if model in chosen else model


def table_from_eval(eval_json: dict[str, Any]) -> ReportSection:
    """The compact table: per set, perplexity and its ratio to the `oracle` (when it was scored), and the stacks
    each model runs per token; models grouped and sorted best-first inside each group.

    Expects `{"domains": [...], "models": {model: {domain: {"ppl", ...}}}}`; the optional `best` (each sweep's
    chosen point) gets a ★, `reads_answer`, `groups` and `stacks_per_token` are used when present. The best
    perplexity of each set among the models that do not read the answer is bold.
    """
    domains = eval_json.get("domains")
    results = eval_json.get("models")
    if not isinstance(domains, list) or not domains or not isinstance(results, dict) or not results:
        raise ValueError("eval_json needs a non-empty 'domains' list and a non-empty 'models' mapping")
    models, groups = _ordered(eval_json)
    oracle = "oracle" if "oracle" in results else None
    stacks = eval_json.get("stacks_per_token") or {}
    headers = ["model", *[f"{d} ppl" + (" (× oracle)" if oracle else "") for d in domains]]
    headers += ["stacks"] if stacks else []
    rows = []
    for model in models:
        cells = []
        for domain in domains:
            ppl, reference = _ppl(results, model, domain), _ppl(results, oracle, domain) if oracle else None
            ratio = f" ({ppl / reference:.3f}×)" if ppl is not None and reference else ""
            cells.append(_fmt("ppl", ppl) + ratio)
        rows.append([_label(model, eval_json), *cells, *([f"{stacks[model]:g}" if model in stacks else "–"]
                                                          if stacks else [])])
    bounds = {i for i, g in enumerate(groups) if g == GROUPS[-1]}
    highlight: set[tuple[int, int]] = set()
    for c, domain in enumerate(domains, start=1):
        scores = {i: v for i, m in enumerate(models) if i not in bounds and (v := _ppl(results, m, domain)) is not None}
        if scores:
            highlight |= {(i, c) for i, v in scores.items() if v == min(scores.values())}
    notes = " Ratios are to the oracle: on a labelled set its own model, on another the best model per sequence." \
        if oracle else ""
    return ReportSection(
        heading="Evaluation: perplexity and accuracy per set",
        caption=f"Lower perplexity is better; bold marks the best per set among the models that do not read the "
                f"answer, {STAR} the point a sweep chose; stacks = model stacks run per token.{notes} Accuracy and "
                f"the other metrics are in the tables below.",
        headers=headers, rows=rows, highlight=highlight, row_groups=groups,
    )


def detail_tables_from_eval(eval_json: dict[str, Any]) -> list[ReportSection]:
    """Per set, a collapsed table of every metric the evaluation holds (accuracy, code-switched subsets,
    agreement), models in the main table's order; and throughput."""
    results, domains = eval_json["models"], eval_json["domains"]
    models, groups = _ordered(eval_json)
    sections = []
    for domain in domains:
        keys = ["ppl", "accuracy", "tokens"]
        for model in models:
            keys += [k for k, v in (results[model].get(domain) or {}).items()
                     if k not in _HIDDEN_KEYS and k not in keys and _number(v) is not None]
        rows = [[_label(m, eval_json), *[_fmt(k, (results[m].get(domain) or {}).get(k)) for k in keys]]
                for m in models]
        sections.append(ReportSection(
            heading=f"All metrics on {domain}", caption="Token-weighted perplexity and next-token accuracy; "
            "js_/cos_: mean Jensen-Shannon divergence and cosine to a stack's (or their average's) distribution.",
            headers=["model", *keys], rows=rows, row_groups=groups, collapsed=True))
    speed = eval_json.get("throughput_tokens_per_s") or {}
    if speed:
        sections.append(ReportSection(
            heading="Evaluation throughput", caption="Tokens per second while evaluating, each model's own compute.",
            headers=["model", "tokens/s"], row_groups=groups, collapsed=True,
            rows=[[_label(m, eval_json), f"{speed[m]:.0f}" if m in speed else "–"] for m in models]))
    return sections
