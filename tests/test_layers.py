"""lfi's packages import downwards only (no import cycle between them), and the light commands stay light."""

from __future__ import annotations

import ast
import re
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
    ("metrics",),
    ("train",),
    ("evaluate",),
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
    assert packages <= set(FLOOR), (
        f"packages without a floor in tests/test_layers.py: {packages - set(FLOOR)}"
    )


def test_readme_layout_table_follows_the_floors():
    """README's layout table names every package once, lowest floor first."""
    text = (LFI.parent / "README.md").read_text()
    table = text.split("\n## Layout")[1].split("\n## ")[0]
    named = [
        name
        for row in table.splitlines()
        if row.startswith("| `lfi/")
        for name in re.findall(r"`lfi/(\w+)(?:\.py|/)`", row.split(" | ")[0])
    ]
    assert sorted(named) == sorted(FLOOR), f"README's layout table names {named}, the floors are {FLOORS}"
    assert [FLOOR[n] for n in named] == sorted(FLOOR[n] for n in named), (
        f"README's layout table order: {named}"
    )


def upward_imports(root: Path = LFI) -> list[str]:
    """Every import in the package at `root` that goes up a floor (or imports the whole lfi package)."""
    upward = []
    for path in sorted(root.rglob("*.py")):
        here = package_of("lfi." + ".".join(path.relative_to(root).with_suffix("").parts))
        for line, module in imports(path):
            there = package_of(module)
            if module == "lfi" and here is not None:
                upward.append(f"{path.relative_to(root.parent)}:{line} imports the whole lfi package")
            elif here is not None and there is not None and FLOOR[there] > FLOOR[here]:
                upward.append(f"{path.relative_to(root.parent)}:{line} ({here}) imports {module} ({there})")
    return upward


def test_packages_import_downwards_only():
    upward = upward_imports()
    assert not upward, "imports that go up a floor:\n" + "\n".join(upward)


def test_an_upward_import_is_found(tmp_path: Path):
    """The check itself: metrics (below train) importing the engine, and evaluate importing show, are caught."""
    for package, module in (("metrics", "lfi.train.engine"), ("evaluate", "lfi.show.viz")):
        (tmp_path / "lfi" / package).mkdir(parents=True)
        (tmp_path / "lfi" / package / "x.py").write_text(f"def f():\n    from {module} import g\n")
    assert upward_imports(tmp_path / "lfi") == [
        "lfi/evaluate/x.py:2 (evaluate) imports lfi.show.viz (show)",
        "lfi/metrics/x.py:2 (metrics) imports lfi.train.engine (train)",
    ]


def test_figures_run_no_teacher():
    """Figures and tables read stores and runs: no module of lfi.show imports a teacher (lfi.extract); a
    figure that needs C_VLM made now gets it from the evaluate stage (`lfi.evaluate.maps.run_maps`)."""
    found = [
        f"{path.relative_to(LFI.parent)}:{line} imports {module}"
        for path in sorted((LFI / "show").rglob("*.py"))
        for line, module in imports(path)
        if package_of(module) == "extract"
    ]
    assert not found, "figures that run a teacher:\n" + "\n".join(found)


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
