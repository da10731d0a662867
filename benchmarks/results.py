"""benchmarks/RESULTS.md: a header (machine, versions, method) and one `## heading` section per figure.

Each figure returns its section's body; `run_figure` times it, stamps it with the date and the
machine's load, and replaces only that figure's section, so figures can be rerun one at a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from edgedistill.targets.runners.local import cpu_name
from edgedistill.threads import cores

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLE = "# Benchmark results"
# Distributions whose versions decide the figures; a missing one is reported as such.
VERSIONED = (
    "edgedistill", "torch", "onnxruntime", "onnx", "optimum", "optimum-onnx", "transformers",
    "sentence-transformers", "numpy", "scikit-learn", "torch-pruning",
)
# CPU features that decide which int8 kernels onnxruntime and optimum's configs use.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Figure:
    """One figure of the suite: `run(quick)` measures and returns the body of its section."""

    name: str
    heading: str
    run: Callable[[bool], str]


def cpu_flags() -> tuple[str, ...]:
    """The CPU_FLAGS this machine has, from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    return tuple(f for f in CPU_FLAGS if f in flags)


def versions() -> str:
    found = []
    for dist in VERSIONED:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} (not installed)")
    return ", ".join([f"Python {platform.python_version()}", *found])


def header() -> str:
    """The top of RESULTS.md: what every section shares."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return "\n".join([
        TITLE,
        "",
        "Written by `python -m benchmarks` (all figures) or `python -m benchmarks.<figure>` (one); each run "
        "replaces only its own section.",
        "",
        f"Machine of the latest run (each section's stamp names the CPU it was measured on): {cpu_name()}, {cores()} cores ({platform.machine()}), {memory:.0f} GiB, CPU flags "
        f"{', '.join(cpu_flags()) or 'none of ' + ', '.join(CPU_FLAGS)}; {platform.system()} {platform.release()}.",
        "",
        f"Versions: {versions()}.",
        "",
        "Method, everywhere: every comparison runs both sides in one process on this machine, timed with "
        "`edgedistill.timing.time_calls` in interleaved rounds (each round times every contender once, "
        "in rotating order) and reports the median over rounds; ratios are medians of per-round ratios, "
        "so slow drifts of a shared, noisy machine hit both sides alike. Absolute times are for scale only. "
        "onnxruntime sessions are opened with `edgedistill.ortsession.open_session` (all graph "
        "optimizations, default threads) and torch uses its default threads, unless a section says otherwise. "
        "Each section ends with when it was measured, how long it took and the 1-minute load average "
        "before and after.",
        "",
    ])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] | None = None) -> str:
    """A markdown table; `right` says which columns are right-aligned (numbers)."""
    right = right or [i > 0 for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace `heading`'s section of `path` (or add it at the end) and refresh the header; keep the rest."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    sections = text[text.index("\n## ") + 1 :] if "\n## " in text else ""
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(sections):
        sections = pattern.sub(lambda _: section + "\n", sections)
    else:
        sections = (sections.rstrip("\n") + "\n\n" if sections.strip() else "") + section
    path.write_text(header() + "\n" + sections.rstrip("\n") + "\n", encoding="utf-8")


def run_figure(figure: Figure, quick: bool, path: Path) -> float:
    """Measure one figure and write its section, stamped; returns its wall time in seconds."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    body = figure.run(quick)
    elapsed = time.perf_counter() - started
    stamp = (
        f"_Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC{' in quick mode (smoke run: not representative)' if quick else ''}; "
        f"{elapsed:.0f} s; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {cores()} cores "
        f"({cpu_name()})._"
    )
    write_section(figure.heading, f"{body.strip()}\n\n{stamp}", path)
    return elapsed


def arguments(description: str, argv: Sequence[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every entry point shares: --quick and --results."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer seeds, epochs and repeats")
    parser.add_argument(
        "--results", type=Path, default=None,
        help="file to write (default benchmarks/RESULTS.md; with --quick, a file in the temp folder, "
        "so a smoke run never overwrites the real figures)",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = Path(tempfile.gettempdir()) / "edgedistill-RESULTS.quick.md" if args.quick else RESULTS
    return args


def main(figure: Figure) -> None:
    """`python -m benchmarks.<figure>`: run one figure and write its section."""
    args = arguments(f"benchmark figure: {figure.heading.removeprefix('## ')}")
    elapsed = run_figure(figure, args.quick, args.results)
    print(f"{figure.name}: {elapsed:.0f} s; section written to {args.results}", file=sys.stderr)


def order_sections(headings: Sequence[str], path: Path = RESULTS) -> None:
    """Put the sections of `headings` first, in that order; any other section keeps its place after them."""
    text = path.read_text(encoding="utf-8")
    if "\n## " not in text:
        return
    head, rest = text[: text.index("\n## ") + 1], text[text.index("\n## ") + 1 :]
    sections = re.findall(r"^## .*?(?=^## |\Z)", rest, re.S | re.M)
    rank = {h: i for i, h in enumerate(headings)}
    sections.sort(key=lambda s: rank.get(s.splitlines()[0], len(rank)))  # stable: unknown ones keep their order
    path.write_text(head + "".join(s.rstrip("\n") + "\n\n" for s in sections).rstrip("\n") + "\n", encoding="utf-8")
