"""lfi's packages import downwards only (no import cycle between them), and the light commands stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LFI = Path(__file__).resolve().parents[1] / "lfi"

#: The floors, lowest first: a package may import its own floor and the ones below it, never one above.
FLOORS = (
    ("catalog", "config", "maps", "files"),
    ("store",),
    ("data",),
    ("models",),
    ("extract",),
    ("evaluate",),
    ("train",),
    ("show",),
    ("demo",),
    ("cli",),
)
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def package_of(module: str) -> str | None:
    """'lfi.train.engine' -> 'train'; 'lfi' itself (the lazy public API) -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lfi" and len(parts) > 1 else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every lfi import in a file, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, m) for line, m in found if m == "lfi" or m.startswith("lfi.")]


def test_every_package_has_a_floor():
    packages = {p.stem if p.is_file() else p.name for p in LFI.iterdir() if not p.name.startswith("_")}
    packages -= {"__pycache__"}
    assert packages <= set(FLOOR), f"packages without a floor in tests/test_layers.py: {packages - set(FLOOR)}"


def test_packages_import_downwards_only():
    upward = []
    for path in sorted(LFI.rglob("*.py")):
        here = package_of("lfi." + ".".join(path.relative_to(LFI).with_suffix("").parts))
        for line, module in imports(path):
            there = package_of(module)
            if module == "lfi" and here is not None:
                upward.append(f"{path.relative_to(LFI.parent)}:{line} imports the whole lfi package")
            elif here is not None and there is not None and FLOOR[there] > FLOOR[here]:
                upward.append(f"{path.relative_to(LFI.parent)}:{line} ({here}) imports {module} ({there})")
    assert not upward, "imports that go up a floor:\n" + "\n".join(upward)


def test_extraction_and_store_load_no_model_code():
    """The store and the extraction loop import neither lfi.models nor timm (teachers load what they need)."""
    code = "import sys, lfi.store.shards, lfi.extract.run; print(sorted(m for m in ('lfi.models', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_imports_no_heavy_library():
    """`lfi --help` builds every sub-command's parser without importing torch, timm, lightning or transformers."""
    code = (
        "import sys\nfrom lfi.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
