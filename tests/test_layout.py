"""The package layout is the architecture: lower packages never import higher ones, and every package's
docstring maps the modules it holds."""
import ast
from pathlib import Path

import pytest

import superpose

SRC = Path(superpose.__file__).parent
# each imports only those before it
LAYERS = ["core", "data", "model", "compare", "evaluation", "training", "report", "demo", "cli"]


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts): p for p in SRC.rglob("*.py")}


def _imported(path: Path) -> set[str]:
    """Every `superpose.*` module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (superpose.<package>.<module>)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("superpose."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("superpose."))
    return found


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if module.startswith("superpose.") else module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def test_every_module_sits_in_a_layered_package():
    loose = [name for name in _modules() if "." not in name and name not in ("__init__", "__main__")]
    assert not loose, f"modules outside the packages {LAYERS}: {loose}"
    stray = {name.split(".")[0] for name in _modules() if "." in name} - set(LAYERS)
    assert not stray, f"packages outside the layering: {stray}"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _layer(m) is not None))
def test_no_package_imports_a_higher_one(module):
    own = _layer(module)
    upward = sorted(target for target in _imported(_modules()[module]) if (_layer(target) or 0) > own)
    assert not upward, f"superpose.{module} ({LAYERS[own]}) imports higher packages: {upward}"


@pytest.mark.parametrize("package", sorted({str(p.parent.relative_to(SRC)) for p in SRC.rglob("__init__.py")}))
def test_each_package_docstring_names_its_modules(package):
    folder = SRC / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""
    children = [p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")]
    children += [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()]
    unnamed = [name for name in children if f"`{name}`" not in doc and f"`{name}/`" not in doc]
    assert not unnamed, f"superpose/{package}/__init__.py does not name {unnamed}"
