"""The `edgedistill` command: parses, calls the library, prints with rich. No logic of its own."""

from __future__ import annotations

import contextlib
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from edgedistill.errors import EdgeDistillError
from edgedistill.progress import Advance, Progress

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Distil a teacher into budgeted, quantized, exported students, and measure them.",
)
console = Console(stderr=False)
err_console = Console(stderr=True)

EXAMPLES = ("digits", "minilm")


class RichProgress(Progress):
    """Stage lines and transient progress bars on the terminal."""

    def stage(self, text: str) -> None:
        console.print(f"[bold cyan]•[/] {text}")

    @contextlib.contextmanager
    def task(self, text: str, total: int) -> Iterator[Advance]:
        if not console.is_terminal:
            # A bar drawn into a log or a pipe is noise; the stage lines say enough there.
            yield lambda _done, _status: None
            return
        bar = RichBar(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=console, transient=True,
        )
        with bar:
            task_id = bar.add_task(text, total=total, status="")
            yield lambda done, status: bar.update(task_id, completed=done, status=status)


def _version(value: bool) -> None:
    if value:
        from edgedistill import __version__

        console.print(f"edgedistill {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Distil a teacher into budgeted, quantized, exported students, and measure them."""


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Argument(metavar="CONFIG", help="Run config (TOML). Without it, the built-in example runs.", show_default=False)] = None,
    example: Annotated[Optional[str], typer.Option(help=f"Built-in example to run: {', '.join(EXAMPLES)} (default digits when no CONFIG).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher file overriding the config's (.onnx, .pt2 or recorded .npz); the data and tiers stay. The run is named <name>-<file stem>.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/<name>). A rerun there resumes finished stages.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage instead of resuming; files are overwritten.")] = False,
    address: Annotated[list[str], typer.Option("--address", metavar="NAME=ADDRESS", help="Measure target NAME on a device: user@host:port for ssh, a serial for adb (over the config's addresses table). Repeatable.")] = [],
    perf_test: Annotated[Optional[Path], typer.Option(help="adb targets: onnxruntime_perf_test built for Android.", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Make, distil, export, quantize and measure a student for every budget tier, then report."""
    from edgedistill.config import load_config, with_teacher
    from edgedistill.distributed import init_world
    from edgedistill.errors import UserError
    from edgedistill.examples.digits import config_path
    from edgedistill.pipeline import Devices
    from edgedistill.pipeline import run as run_pipeline
    from edgedistill.targets.latency import parse_addresses

    # torch warns about its own internals when a .pt2 teacher is copied; users can do nothing about it.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    with _errors(debug):
        if config is not None and example is not None:
            raise UserError("give a CONFIG file or --example, not both")
        if config is None:
            name = example or "digits"
            if name not in EXAMPLES:
                raise UserError(f"unknown example {name!r}: choose one of {', '.join(EXAMPLES)}")
            config, folder = config_path(name), Path(".")
        else:
            folder = config.parent
        # As `python script.py` would: factories resolve from the config's folder and the current one.
        for place in (Path.cwd(), folder.resolve()):
            if str(place) not in sys.path:
                sys.path.insert(0, str(place))
        cfg = load_config(config)
        if teacher is not None:
            cfg = with_teacher(cfg, teacher)
        out_dir = out or Path("runs") / cfg.name
        devices = Devices(parse_addresses(address), perf_test)
        world = init_world()
        if not world.is_main:
            # Under torchrun the other ranks only train their shards; rank 0 speaks for the run.
            run_pipeline(cfg, out_dir, force, world=world)
            return
        console.print(f"[bold]edgedistill run[/] {cfg.name} → {out_dir}" + (f" ({world.size} processes)" if world.distributed else ""))
        result = run_pipeline(cfg, out_dir, force, RichProgress(), world, devices)
        _print_table(result.report)
        console.print(f"report: {result.report_path} (report.md and report.html beside it)")
        if result.report.failures:
            for failure in result.report.failures:
                err_console.print(f"[red]failed:[/] {failure}")
            raise typer.Exit(1)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A .onnx, a .pt2, or a run's student folder (runs/<name>/students/<tier>).", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="onnx, ort (ONNX Runtime Mobile) or tensorrt.")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8 (int8 from fp32 needs --data to calibrate).")] = "fp32",
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = Path("export"),
    data: Annotated[Optional[Path], typer.Option(help=".npz with x (and y): real inputs for parity checks and int8 calibration.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Export one model to one format and precision, checked against its source and linted for its runtime."""
    from edgedistill.errors import UserError
    from edgedistill.export.convert import ExportRequest, export_model
    from edgedistill.export.formats import format_names

    with _errors(debug):
        if format not in format_names():
            raise UserError(f"--format {format!r} is unknown: use {', '.join(format_names())}")
        if precision not in ("fp32", "fp16", "int8"):
            raise UserError(f"--precision {precision!r} is unknown: use fp32, fp16 or int8")
        result = export_model(ExportRequest(model, format, precision, out, data))
        console.print(f"wrote {result.path} ({result.bytes:,} bytes, {result.format} {result.precision})")
        parity = result.parity
        if parity.checked:
            verdict = "ok" if parity.passed else "[red]FAILED[/]"
            console.print(
                f"parity against its source on {result.inputs}: max abs error {parity.max_abs_err:.2e} "
                f"(tolerance {parity.tolerance:.0e}) {verdict}"
            )
        if result.build is not None:
            console.print(result.build.reason if not result.build.built else f"engine built: {result.build.engine}")
            console.print(f"trtexec command: {result.build.command_path}")
        findings = _print_lint(result.lint)
        if not parity.passed or findings:
            raise typer.Exit(1)


@app.command()
def lint(
    model: Annotated[Path, typer.Argument(help="The .onnx file to check.", show_default=False)],
    runtime: Annotated[str, typer.Option(help="tensorrt or ort-mobile.")] = "tensorrt",
    ops_config: Annotated[Optional[Path], typer.Option(help="ort-mobile: the reduced build's required-operators config (default: ONNX Runtime's mobile package).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the findings as JSON to this file.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Check an ONNX file against what a runtime accepts; exit 1 when any node is not."""
    import json

    from edgedistill.export.lint import lint as run_lint
    from edgedistill.fileio import atomic_path

    with _errors(debug):
        result = run_lint(model, runtime, ops_config)
        if json_out is not None:
            with atomic_path(json_out) as tmp:
                tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if _print_lint((result,)):
            raise typer.Exit(1)


@app.command()
def gate(
    report: Annotated[Path, typer.Argument(metavar="REPORT.json", help="A report.json written by `edgedistill run`.", show_default=False)],
    junit: Annotated[Optional[Path], typer.Option("--junit", metavar="FILE", help="Also write the verdicts as JUnit XML: one testcase per student and budget.")] = None,
    budget: Annotated[Optional[list[str]], typer.Option("--budget", metavar="TIER.NAME=VALUE", help="Override or add a limit, e.g. fifth.params=20000, fifth.bytes=64KB, or '*.params=30%' (of the teacher) for every tier; NAME is params, macs, bytes, peak_memory or latency_ms.TARGET (p50 ms: fifth.latency_ms.raspberry-pi-5=5, judged on the report's figures, measured before predicted). Repeatable.", show_default=False)] = None,
    student: Annotated[Optional[list[str]], typer.Option("--student", metavar="NAME", help="Judge only this student (repeatable; default: every student).", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Judge a report's students against their budgets; exit 1 when any budget is broken."""
    from edgedistill.gate import format_number, gate as judge, load_report, parse_override, summary, write_junit

    with _errors(debug):
        loaded = load_report(report)
        result = judge(loaded, tuple(parse_override(text) for text in budget or ()), tuple(student or ()))
        if junit is not None:
            write_junit(result, f"edgedistill gate {loaded.name}", junit)
        for v in result.broken:
            value = "none" if v.value is None else format_number(v.value)
            console.print(
                f"BROKEN student={v.student} budget={v.budget} limit={format_number(v.limit)} value={value} source={v.source}",
                markup=False, highlight=False, soft_wrap=True,
            )
        console.print(summary(result), markup=False, highlight=False, soft_wrap=True)
        if not result.passed:
            raise typer.Exit(1)


@app.command()
def targets(
    json_out: Annotated[bool, typer.Option("--json", help="Print the profiles, their specs and calibrations as JSON.")] = False,
) -> None:
    """List the built-in device profiles, the artifacts each wants and its calibration."""
    import json

    from edgedistill.report.rows import short_name
    from edgedistill.serialize import to_jsonable
    from edgedistill.targets.calibration import load as load_calibration
    from edgedistill.targets.profile import builtin_names, load_target

    profiles = [load_target(name) for name in builtin_names()]
    calibrations = {t.name: load_calibration(t.name) for t in profiles}
    if json_out:
        print(json.dumps(
            [{**t.model_dump(mode="json"), "calibration": to_jsonable(calibrations[t.name])} for t in profiles], indent=2
        ))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="device profiles (use a name, or a .toml path, in `targets`)")
    for col in ("name", "runtime", "artifacts", "runner", "calibrated"):
        # The artifacts column folds on a narrow terminal; names stay whole.
        table.add_column(col, no_wrap=col != "artifacts")
    for t in profiles:
        arts = ", ".join(short_name(a.format, a.precision) for a in t.artifacts)
        cal = calibrations[t.name]
        table.add_row(t.name, t.runtime, arts, t.runner, cal.created[:10] if cal else "no")
    console.print(table)


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="The .onnx file to benchmark.", show_default=False)],
    target: Annotated[list[str], typer.Option("--target", help="A profile name or .toml path; repeatable.")] = ["host-cpu"],
    mode: Annotated[str, typer.Option(help="auto (measure where a runner reaches the target, predict elsewhere), measure or predict.")] = "auto",
    address: Annotated[list[str], typer.Option("--address", help="NAME=ADDRESS of a device: user@host:port for ssh, a serial for adb.")] = [],
    perf_test: Annotated[Optional[Path], typer.Option(help="adb targets: onnxruntime_perf_test built for Android.")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Size of dynamic axes after the batch (a transformer's sequence length).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON to this file.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Latency of one model on each target: measured where a runner reaches it, predicted elsewhere, each labelled."""
    import json

    from edgedistill.errors import UserError
    from edgedistill.fileio import atomic_path
    from edgedistill.serialize import to_jsonable
    from edgedistill.targets.bench import bench as run_bench
    from edgedistill.targets.latency import parse_addresses
    from edgedistill.targets.profile import load_target

    with _errors(debug):
        if mode not in ("auto", "measure", "predict"):
            raise UserError(f"--mode {mode!r} is unknown: use auto, measure or predict")
        rows = run_bench(
            model, [load_target(t) for t in target], mode, parse_addresses(address), perf_test=perf_test, seq_len=seq_len
        )
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"{model.name}: batch 1")
        for col in ("target", "source", "p50 ms", "p90 | low", "p99 | high", "items/s", "peak act."):
            table.add_column(col, no_wrap=True, justify="left" if col in ("target", "source") else "right")
        for r in rows:
            spread = (f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}") if r.p90_ms is not None else (f"≥{r.low_ms:.3f}", f"≤{r.high_ms:.3f}")
            table.add_row(
                r.target, r.source, f"{r.p50_ms:.3f}", *spread,
                "-" if r.throughput_per_s is None else f"{r.throughput_per_s:,.0f}", f"{r.peak_activation_bytes / 1024:,.1f} KiB",
            )
        console.print(table)
        console.print(f"file: {rows[0].file_bytes:,} bytes" if rows else "no targets")
        for r in rows:
            console.print(f"{r.target}: {r.detail}", highlight=False)
        if json_out is not None:
            with atomic_path(json_out) as tmp:
                tmp.write_text(json.dumps(to_jsonable(rows), indent=2) + "\n")


@app.command()
def calibrate(
    target: Annotated[str, typer.Option("--target", help="Profile to calibrate; it must be reachable (host-cpu, or --address).")] = "host-cpu",
    address: Annotated[Optional[str], typer.Option(help="ssh: user@host:port; adb: the device serial.")] = None,
    perf_test: Annotated[Optional[Path], typer.Option(help="adb targets: onnxruntime_perf_test built for Android.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Measure a suite of small models on a target and fit its predictor (stored in the per-user cache)."""
    import tempfile

    from edgedistill.errors import UserError
    from edgedistill.targets.calibration import calibrate as fit_calibration
    from edgedistill.targets.calibration import save
    from edgedistill.targets.latency import LatencyService
    from edgedistill.targets.profile import load_target

    with _errors(debug):
        profile = load_target(target)
        service = LatencyService((profile,), {profile.name: address} if address else {}, perf_test=perf_test)
        if not service.reachable(profile):
            raise UserError(f"{profile.name} is not reachable from here: pass --address for its {profile.runner} runner")
        with tempfile.TemporaryDirectory(prefix="edgedistill-calibrate-") as folder:
            console.print(f"calibrating {profile.name}: measuring the suite of small models…")
            cal = fit_calibration(profile, lambda path: service.measure(path, profile).p50_ms, Path(folder))
        path = save(cal)
        console.print(
            f"{profile.name}: median |error| {100 * cal.median_abs_error:.1f}% over {len(cal.models)} models, "
            f"worst ratio {cal.worst_ratio:.2f}x; saved to {path}"
        )


def _print_lint(results) -> int:
    """Print each finding on one line; the number of findings."""
    count = 0
    for r in results:
        for f in r.findings:
            console.print(f"[yellow]{r.runtime}:[/] node {f.node} ({f.domain or 'ai.onnx'}::{f.op}): {f.reason}", highlight=False)
        count += len(r.findings)
        if r.ok:
            console.print(f"{r.runtime}: {Path(r.model).name} is clean (checked against {r.reference})", highlight=False)
    return count


def _print_table(report) -> None:
    from edgedistill.report.rows import SHORT_COLUMNS, headers, summary_rows

    quality = "cosine to the teacher and neighbour agreement" if report.task == "embedding" else "accuracy"
    table = Table(
        title=f"{report.name}: validation {quality}; p50 latency measured on this CPU, batch 1",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col, title in zip(SHORT_COLUMNS, headers(SHORT_COLUMNS, report.task)):
        table.add_column(title, no_wrap=True, justify="left" if col in ("model", "generator", "precision", "budget") else "right")
    for row in summary_rows(report):
        table.add_row(*row.pick(SHORT_COLUMNS), style=None if row.ok else "red")
    console.print(table)


class _Terminated(BaseException):
    """SIGTERM, raised where the program is, so that every `finally` (temp files, the lock) runs.
    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """One line and the error's exit status instead of a traceback (unless --debug).

    SIGINT and SIGTERM stop the work the same way: unwinding, so no half-written file is left and
    every finished stage stays recorded for the rerun to resume from.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except EdgeDistillError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except (KeyboardInterrupt, _Terminated) as exc:
        err_console.print("interrupted: finished stages are kept in the run directory; rerun to resume")
        raise typer.Exit(130 if isinstance(exc, KeyboardInterrupt) else 143) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    """Console-script entry point."""
    app()
