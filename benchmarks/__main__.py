"""`python -m benchmarks`: every figure, one after another in one process, each rewriting its own
section of benchmarks/RESULTS.md; then a section with the suite's own wall time.

To add a figure: write benchmarks/<module>.py with a `FIGURE = Figure(name, heading, run)` and add
its module name to FIGURES.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback

from benchmarks.results import Figure, arguments, cores, order_sections, run_figure, table, write_section

FIGURES = (
    "distillation_pays",
    "quantization_vs_optimum",
    "export_vs_eager",
    "prediction_error",
    "default_run",
    "scaling",
    "chain_vs_direct",
    "threads",
    "data_free",
    "condense",
    "qat",
    "mixed_precision",
    "every_task",
    "runtimes",
    "ptq_tasks",
    "transformer_int8",
)
SUITE_HEADING = "## Suite run"


def figures() -> list[Figure]:
    return [importlib.import_module(f"benchmarks.{name}").FIGURE for name in FIGURES]


def main() -> int:
    everything = figures()
    names = [f.name for f in everything]
    args = arguments(
        "run edgedistill's benchmark figures and rewrite their sections of RESULTS.md",
        extra=lambda p: p.add_argument("--only", action="append", choices=names, metavar="NAME",
                                       help=f"run only this figure (repeatable): {', '.join(names)}"),
    )
    chosen = [f for f in everything if not args.only or f.name in args.only]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    rows, failed = [], []
    for figure in chosen:
        print(f"== {figure.name}: {figure.heading.removeprefix('## ')}", file=sys.stderr, flush=True)
        try:
            seconds = run_figure(figure, args.quick, args.results)
            rows.append([figure.heading.removeprefix("## "), f"{seconds:.0f}", "done"])
        except Exception:  # one broken figure must not cost the others their figures
            traceback.print_exc()
            failed.append(figure.name)
            rows.append([figure.heading.removeprefix("## "), "-", "failed (traceback on stderr)"])
        print(f"   {rows[-1][2]} in {rows[-1][1]} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    if not args.only:
        write_section(SUITE_HEADING, "\n".join([
            f"`python -m benchmarks{' --quick' if args.quick else ''}`: every figure above in one process, in this order.",
            "",
            table(["figure", "seconds", "status"], rows, right=[False, True, False]),
            "",
            f"Total: **{total / 60:.1f} min**; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
            f"on {cores()} cores (above {cores()} means other work shared the CPU and every figure ran slower).",
        ]), args.results)
    order_sections([f.heading for f in everything] + [SUITE_HEADING], args.results)
    print(f"total {total:.0f} s; results in {args.results}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
