"""BENCHMARKS.md's generated sections: each lies between `<!-- NAME: start -->` and `<!-- NAME: end -->`, and a
benchmark rewrites only its own; everything outside the markers is hand-written and stays as it is."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, section: str, top: bool = False) -> None:
    """Replace section NAME of `path` by `section`; a section not there yet goes right under the title (`top`)
    or at the end."""
    start, end = f"<!-- {name}: start -->\n", f"<!-- {name}: end -->\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    block = start + section.strip("\n") + "\n\n" + end
    if start in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    elif top:
        title, _, body = text.partition("\n\n")
        text = title + "\n\n" + block + ("\n" + body if body else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")
    print(f"wrote the {name} section of {path}")
