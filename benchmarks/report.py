"""Shared plumbing of the benchmark commands: what machine ran them, writing one
``## section`` of BENCHMARKS.md without touching the others, and the curves of a study."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"

__all__ = [
    "REPO",
    "BENCHMARKS",
    "command_line",
    "cpu_name",
    "curve_figure",
    "load_average",
    "markdown_table",
    "provenance",
    "publish",
    "published_figure",
    "write_section",
]


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
    module = f"benchmarks.{Path(script).stem}"
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def provenance(command: str, wall_s: float, how: str) -> list[str]:
    """The markdown lines that say how a study's table was made (``how``, e.g. "trained and
    evaluated"): date, machine, command, wall time."""
    return [
        f"Measured {date.today().isoformat()} on {cpu_name()} ({os.cpu_count()} cores; load {load_average()}); "
        f"{how} in {wall_s:.0f} s of wall time. Command (from the repository root):",
        "",
        f"    {command}",
        "",
    ]


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def publish(root: Path, name: str, heading: str, body: str, result: dict, write: bool) -> None:
    """A study's outputs: ``<root>/<name>.md`` and ``.json``, with ``write`` its section of
    BENCHMARKS.md too, and the table on stdout."""
    (root / f"{name}.json").write_text(json.dumps(result, indent=2))
    (root / f"{name}.md").write_text(f"{heading}\n\n{body}")
    if write:
        write_section(heading, body)
    print(body)


def published_figure(figure: Path, docs_name: str, write: bool) -> str:
    """How a study's markdown names its figure: with ``write``, a copy in ``docs/figures/``
    that BENCHMARKS.md links (the output root is scratch); without, the output root's file."""
    if not write:
        return f"`{figure}`"
    import shutil

    target = REPO / "docs" / "figures" / docs_name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(figure, target)
    return f"[`docs/figures/{docs_name}`](docs/figures/{docs_name}) (a copy of `<output_root>/{figure.name}`)"


BEGIN, END = "<!-- generated: begin -->", "<!-- generated: end -->"


def write_section(heading: str, body: str, path: Path = BENCHMARKS) -> None:
    """Write ``body`` as the section titled ``heading`` (``## ...``), or append it.

    The body goes between two HTML comments, so that a re-run replaces only what the
    script generated: the provenance and reading a person wrote around the markers stay.
    A section without markers (first written by hand or by an older version) is replaced
    whole."""
    generated = f"{BEGIN}\n\n{body.strip()}\n\n{END}"
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    start = content.find(heading + "\n")
    if start < 0:
        content = content.rstrip("\n") + f"\n\n{heading}\n\n{generated}\n"
    else:
        end = content.find("\n## ", start + len(heading))
        end = len(content) if end < 0 else end
        section = content[start:end]
        if BEGIN in section and END in section:
            section = (
                section[: section.index(BEGIN)]
                + generated
                + section[section.index(END) + len(END) :]
            )
        else:
            section = f"{heading}\n\n{generated}\n"
        content = content[:start] + section.rstrip("\n") + "\n" + content[end:]
    path.write_text(content.rstrip("\n") + "\n")


def curve_figure(panels: list[dict], path: Path, ylabel: str = "AUC (%)") -> Path:
    """One panel per dict (``title``, ``xlabel``, ``x``: the values, drawn evenly spaced as
    categories; ``series``: label -> (means, stds), None where missing), mean +- std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        xs = list(range(len(panel["x"])))
        for label, (means, stds) in panel["series"].items():
            nan = float("nan")
            ax.errorbar(
                xs,
                [nan if m is None else m for m in means],
                yerr=[0 if s is None else s for s in stds],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set_xticks(xs, [str(v) for v in panel["x"]])
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
