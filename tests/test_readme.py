"""The README's Python example runs as written, and its two commands are what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_example_runs():
    blocks = python_blocks()
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_ci_runs_the_readme_commands():
    readme, ci = (REPO / "README.md").read_text(), (REPO / ".ci" / "run").read_text()
    commands = re.findall(r"^(make \w+)", readme.split("```bash", 1)[1].split("```", 1)[0], flags=re.M)
    assert commands == ["make demo", "make test"]
    assert all(c in ci for c in commands)
