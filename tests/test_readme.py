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


def test_readme_command_lines_parse():
    """Every `lfi ...` line of the README's command-line section is accepted by the real parser."""
    import shlex

    from lfi.cli import build_parser

    section = (REPO / "README.md").read_text().split("## Command line", 1)[1].split("```bash", 1)[1]
    lines = [line.split("#", 1)[0] for line in section.split("```", 1)[0].splitlines()]
    commands = [shlex.split(line) for line in lines if line.startswith("lfi ")]
    assert len(commands) >= 10
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])
        assert callable(args.func), argv
