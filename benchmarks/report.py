"""Shared plumbing of the benchmark commands: what machine ran them, and writing one
``## section`` of BENCHMARKS.md without touching the others."""

from __future__ import annotations

import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"

__all__ = ["REPO", "BENCHMARKS", "command_line", "cpu_name", "load_average", "write_section"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def command_line(script: str, argv: list[str] | None = None) -> str:
    """How a benchmark was run, from the repository root, for its BENCHMARKS.md section."""
    import shlex
    import sys

    args = argv if argv is not None else sys.argv[1:]
    return " ".join(["python", f"benchmarks/{Path(script).name}", *(shlex.quote(a) for a in args)])


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def write_section(heading: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the section titled ``heading`` (``## ...``) with ``body``, or append it."""
    text = f"{heading}\n\n{body.strip()}\n"
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    start = content.find(heading + "\n")
    if start < 0:
        content = content.rstrip("\n") + "\n\n" + text
    else:
        end = content.find("\n## ", start + len(heading))
        content = content[:start] + text + (content[end:] if end >= 0 else "")
    path.write_text(content.rstrip("\n") + "\n")
