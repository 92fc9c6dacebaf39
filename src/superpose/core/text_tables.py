"""Plain-text tables for command summaries (no terminal features needed, so logs stay readable)."""
from __future__ import annotations


def format_table(headers: list[str], rows: list[list[object]], title: str | None = None) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title] if title else []
    out.append(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    out.append(line)
    out.extend(" | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in cells)
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip("*★ "))
        return True
    except ValueError:
        return False
