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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from edgedistill.errors import EdgeDistillError
from edgedistill.progress import Advance, Progress
from edgedistill.targets.android_tools import idle_text, parse_perf_tests, usage


class _Group(TyperGroup):
    """The command group, with flags shown as flags in every command's help.

    Typer's rich help (0.2x) fills the type column of every option from its annotation, so a flag
    reads `--force <bool>` as if it took a value; an empty metavar leaves that cell blank. Plain
    (non-rich) help already omits it.
    """

    def get_params(self, ctx: typer.Context) -> list:
        return _untyped_flags(super().get_params(ctx))

    def get_command(self, ctx: typer.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _untyped_flags(command.get_params(ctx))  # --help included: click caches that option
        return command


def _untyped_flags(params: list) -> list:
    """`params`, with each flag that has no metavar of its own given an empty one."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Distil a teacher into budgeted, quantized, exported students, and measure them.",
)
console = Console(stderr=False)
err_console = Console(stderr=True)

EXAMPLES = ("sensor-digits", "digits", "minilm")
DEFAULT_EXAMPLE = EXAMPLES[0]
PERF_TEST_HELP = (
    f"adb targets: a timing binary built for Android, by runtime; repeatable ({usage()}). "
    "Files of a runtime given none are predicted, once one is given."
)


class RichProgress(Progress):
    """Stage lines and transient progress bars on the terminal."""

    def stage(self, text: str) -> None:
        console.print(f"[bold cyan]•[/] {escape(text)}")

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
    example: Annotated[Optional[str], typer.Option(help=f"Built-in example to run: {', '.join(EXAMPLES)} (default {DEFAULT_EXAMPLE} when no CONFIG).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher file overriding the config's (.onnx, .pt2 or recorded .npz); the data and tiers stay. The run is named <name>-<file stem>.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/<name>). A rerun there resumes finished stages.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage instead of resuming; files are overwritten.")] = False,
    address: Annotated[list[str], typer.Option("--address", metavar="NAME=ADDRESS", help="Measure target NAME on a device: user@host:port for ssh, a serial for adb (over the config's addresses table). Repeatable.")] = [],
    perf_test: Annotated[list[str], typer.Option("--perf-test", metavar="[RUNTIME=]PATH", help=PERF_TEST_HELP, show_default=False)] = [],
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
            name = example or DEFAULT_EXAMPLE
            if name not in EXAMPLES:
                raise UserError(f"unknown example {name!r}: choose one of {', '.join(EXAMPLES)}")
            config, folder = config_path(name), Path(".")
        else:
            folder = config.parent
        _importable(folder)
        cfg = load_config(config)
        if teacher is not None:
            cfg = with_teacher(cfg, teacher)
        if out is not None and out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file: a run directory is a folder; give a new folder or a finished run's")
        out_dir = out or Path("runs") / cfg.name
        devices = Devices(parse_addresses(address), parse_perf_tests(perf_test))
        world = init_world()
        if not world.is_main:
            # Under torchrun the other ranks only train their shards; rank 0 speaks for the run.
            run_pipeline(cfg, out_dir, force, world=world)
            return
        console.print(f"[bold]edgedistill run[/] {escape(cfg.name)} → {escape(str(out_dir))}" + (f" ({world.size} processes)" if world.distributed else ""))
        result = run_pipeline(cfg, out_dir, force, RichProgress(), world, devices)
        _print_table(result.report)
        console.print(f"report: {result.report_path} (report.md and report.html beside it)", markup=False)
        if result.report.failures:
            for failure in result.report.failures:
                err_console.print(f"[red]failed:[/] {escape(failure)}")
            raise typer.Exit(1)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A .onnx, a .pt2, or a run's student folder (runs/<name>/students/<tier>).", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="onnx, ort (ONNX Runtime Mobile), or tensorrt; pte (ExecuTorch), tflite (LiteRT) and mlpackage (Core ML), each from a student folder or .pt2.")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8 (int8 from fp32 needs --data to calibrate).")] = "fp32",
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = Path("export"),
    data: Annotated[Optional[Path], typer.Option(help=".npz with x (and y): real inputs for parity checks and int8 calibration.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Export one model to one format and precision, checked against its source and linted for its runtime.

    An ONNX file with a fixed batch is made from a copy with a dynamic batch axis, checked to give the same outputs.
    """
    from edgedistill.errors import UserError
    from edgedistill.export.convert import ExportRequest, export_model
    from edgedistill.export.formats import format_names

    with _errors(debug):
        if format not in format_names():
            raise UserError(f"--format {format!r} is unknown: use {', '.join(format_names())}")
        if precision not in ("fp32", "fp16", "int8"):
            raise UserError(f"--precision {precision!r} is unknown: use fp32, fp16 or int8")
        result = export_model(ExportRequest(model, format, precision, out, data))
        console.print(f"wrote {result.path} ({result.bytes:,} bytes, {result.format} {result.precision})", markup=False)
        for note in result.notes:
            console.print(note, markup=False, highlight=False)
        parity = result.parity
        if parity.checked:
            verdict = "ok" if parity.passed else "[red]FAILED[/]"
            console.print(
                f"parity against its source on {result.inputs}: max abs error {parity.max_abs_err:.2e} "
                f"(tolerance {parity.tolerance:.0e}) {verdict}"
            )
        if result.build is not None:
            console.print(result.build.reason if not result.build.built else f"engine built: {result.build.engine}", markup=False)
            console.print(f"trtexec command: {result.build.command_path}", markup=False)
        findings = _print_lint(result.lint)
        if not parity.passed or findings:
            raise typer.Exit(1)


@app.command()
def lint(
    model: Annotated[Path, typer.Argument(help="The .onnx file to check (an .mlpackage for coreml, a .tflite for litert and litert-micro).", show_default=False)],
    runtime: Annotated[str, typer.Option(help="tensorrt or ort-mobile (an ONNX file); coreml (an .mlpackage: ops of the iOS 17 mlprogram opset); litert or litert-micro (a .tflite: builtin operators, or those LiteRT Micro's op resolver has).")] = "tensorrt",
    ops_config: Annotated[Optional[Path], typer.Option(help="ort-mobile: the reduced build's required-operators config (default: ONNX Runtime's mobile package).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the findings as JSON to this file (an earlier JSON file there is replaced; any other file is refused).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Check an ONNX file (or a Core ML package, or a LiteRT file) against what a runtime accepts; exit 1 when any node is not."""
    from edgedistill.export.lint import lint as run_lint

    with _errors(debug):
        _check_json_out(json_out, "lint.json")
        result = run_lint(model, runtime, ops_config)
        if json_out is not None:
            _write_json(json_out, result.to_dict())
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
    model: Annotated[Path, typer.Argument(help="The model file to benchmark: .onnx (or .ort, .tflite, .pte where a runner times it).", show_default=False)],
    target: Annotated[list[str], typer.Option("--target", help="A profile name or .toml path; repeatable.")] = ["host-cpu"],
    mode: Annotated[str, typer.Option(help="auto (measure where a runner reaches the target, predict elsewhere), measure or predict.")] = "auto",
    address: Annotated[list[str], typer.Option("--address", help="NAME=ADDRESS of a device: user@host:port for ssh, a serial for adb.")] = [],
    perf_test: Annotated[list[str], typer.Option("--perf-test", metavar="[RUNTIME=]PATH", help=PERF_TEST_HELP, show_default=False)] = [],
    seq_len: Annotated[Optional[int], typer.Option(help="Size of dynamic axes after the batch (a transformer's sequence length).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON to this file (an earlier JSON file there is replaced; any other file is refused).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Latency of one model on each target: measured where a runner reaches it, predicted elsewhere, each labelled."""
    from edgedistill.errors import UserError
    from edgedistill.serialize import to_jsonable
    from edgedistill.targets.bench import bench as run_bench
    from edgedistill.targets.latency import parse_addresses
    from edgedistill.targets.profile import load_target

    with _errors(debug):
        if mode not in ("auto", "measure", "predict"):
            raise UserError(f"--mode {mode!r} is unknown: use auto, measure or predict")
        _check_json_out(json_out, "bench.json")
        rows = run_bench(
            model, [load_target(t) for t in target], mode, parse_addresses(address),
            perf_test=parse_perf_tests(perf_test), seq_len=seq_len,
        )
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"{model.name}: batch 1")
        for col in ("target", "source", "p50 ms", "p90 | low", "p99 | high", "items/s", "peak act."):
            table.add_column(col, no_wrap=True, justify="left" if col in ("target", "source") else "right")
        for r in rows:
            spread = (f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}") if r.p90_ms is not None else (f"≥{r.low_ms:.3f}", f"≤{r.high_ms:.3f}")
            table.add_row(
                r.target, f"{r.source}, noisy" if r.noisy else r.source, f"{r.p50_ms:.3f}", *spread,
                "-" if r.throughput_per_s is None else f"{r.throughput_per_s:,.0f}", f"{r.peak_activation_bytes / 1024:,.1f} KiB",
            )
        console.print(table)
        console.print(f"file: {rows[0].file_bytes:,} bytes" if rows else "no targets")
        for r in rows:
            # A noisy figure's line stands out: its figures should not be taken as the model's.
            console.print(f"{r.target}: {r.detail}", style="yellow" if r.noisy else None, highlight=False, markup=False)
        if json_out is not None:
            _write_json(json_out, to_jsonable(rows))


@app.command()
def calibrate(
    target: Annotated[str, typer.Option("--target", help="Profile to calibrate; it must be reachable (host-cpu, or --address).")] = "host-cpu",
    address: Annotated[Optional[str], typer.Option(help="ssh: user@host:port; adb: the device serial.")] = None,
    perf_test: Annotated[list[str], typer.Option("--perf-test", metavar="[RUNTIME=]PATH", help=PERF_TEST_HELP, show_default=False)] = [],
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
        binaries = parse_perf_tests(perf_test)
        idle = binaries.idle({".onnx"})
        if idle is not None:
            raise UserError(f"{idle_text(*idle)}, and the calibration suite is ONNX models: drop that --perf-test")
        service = LatencyService((profile,), {profile.name: address} if address else {}, perf_test=binaries)
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


@app.command()
def condense(
    out: Annotated[Path, typer.Option(metavar="PATH.npz", help="The .npz to write (x, y, classes), in an existing folder; an earlier condensed set there is replaced, any other file refused.", show_default=False)],
    config: Annotated[Optional[Path], typer.Argument(metavar="CONFIG", help=f"Run config (TOML): its data, split as `edgedistill run` splits it, and its teacher's architecture. Without it, the built-in {DEFAULT_EXAMPLE} example.", show_default=False)] = None,
    per_class: Annotated[int, typer.Option("--per-class", metavar="K", help="Synthetic samples per class.")] = 10,
    iterations: Annotated[Optional[int], typer.Option(metavar="N", help="Optimisation steps, each under a freshly initialised network (default 100).", show_default=False)] = None,
    score: Annotated[bool, typer.Option("--score/--no-score", help="Then train the teacher's architecture from scratch on the condensed set, on a random real subset of its size and on the whole training split, with the config's teacher_training settings, and print their validation accuracies.")] = True,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Condense the config's training split into K synthetic inputs per class (distribution matching)."""
    from pydantic import ValidationError

    from edgedistill.compress import condense as dm
    from edgedistill.config import describe, load_config
    from edgedistill.data.array_inputs import source_splits
    from edgedistill.errors import UserError
    from edgedistill.examples.digits import config_path

    with _errors(debug):
        _check_npz_out(out)
        options = {"per_class": per_class} | ({"iterations": iterations} if iterations is not None else {})
        try:
            how = dm.CondenseConfig(**options)
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0])  # said as the flag that set it: per_class is --per-class
            raise UserError("--" + field.replace("_", "-") + describe(exc).removeprefix(field)) from exc
        _importable(config.parent if config is not None else Path("."))
        cfg = load_config(config or config_path(DEFAULT_EXAMPLE))
        architecture = dm.architecture_of(cfg.teacher)
        splits = source_splits(cfg)
        if splits.num_classes < 2:
            raise UserError(
                f"condense makes a few samples per class, and {cfg.data.source} has no class labels (one class index per "
                "sample): condense a classifier's data"
            )
        console.print(
            f"[bold]edgedistill condense[/] {escape(cfg.name)}: {len(splits.train):,} training samples of "
            f"{len(splits.classes)} classes → {how.per_class} per class"
        )
        progress = RichProgress()
        with progress.task("condensing", how.iterations) as advance:
            condensed = dm.condense(architecture, splits.train, splits.classes, how, cfg.seed, lambda done, _total: advance(done, ""))
        dm.save(condensed, out)
        console.print(
            f"wrote {out}: {len(condensed):,} samples of shape {tuple(condensed.x.shape[1:])} ({out.stat().st_size:,} bytes) "
            f"in {condensed.seconds:.0f} s",
            markup=False, highlight=False, soft_wrap=True,
        )
        if score:
            progress.stage(f"scoring: training {cfg.teacher.source} from scratch on each set")
            s = dm.score(architecture, condensed, splits.train, splits.val, cfg.teacher_training, cfg.seed)
            console.print(f"validation accuracy ({len(splits.val):,} samples) after training on:", markup=False)
            for label, value in ((f"the condensed set ({s.samples:,})", s.condensed),
                                 (f"a random real subset ({s.samples:,})", s.random),
                                 (f"the whole training split ({s.full_samples:,})", s.full)):
                console.print(f"  {label:<34} {value:7.2%}", markup=False, highlight=False)


def _importable(folder: Path) -> None:
    """As `python script.py` would: a config's factories resolve from its folder and the current one."""
    for place in (Path.cwd(), folder.resolve()):
        if str(place) not in sys.path:
            sys.path.insert(0, str(place))


def _check_npz_out(path: Path) -> None:
    """Refuse, before any work, an --out that is a folder, not a .npz, in no existing folder, or a
    file other than an earlier condensed set (a dataset of the user's is never overwritten)."""
    from edgedistill.compress.condense import is_condensed
    from edgedistill.errors import UserError

    if path.is_dir():
        raise UserError(f"--out {path} is a folder: give a file path, such as {path / 'condensed.npz'}")
    if path.suffix != ".npz":
        raise UserError(f"--out {path} does not end in .npz: a data source is read as a .npz, e.g. {path.with_suffix('.npz')}")
    if not path.absolute().parent.is_dir():
        raise UserError(f"--out {path}: {path.absolute().parent} is not an existing folder: create it or give a path in one")
    if path.exists() and not is_condensed(path):
        raise UserError(f"--out {path} exists and is not a condensed set: give a new path, or an earlier condense output to replace")


# An earlier --json file is small; a larger file is not one, and is not read to find out.
_JSON_MAX_BYTES = 16 * 1024**2


def _check_json_out(path: Path | None, example: str) -> None:
    """Refuse, before any work, a --json path that cannot be written or whose writing would
    destroy something: a folder, a path under a file, or a file that holds anything but JSON.
    An earlier --json file (or an empty one) is replaced, atomically."""
    from edgedistill.errors import UserError

    if path is None:
        return
    if path.is_dir():
        raise UserError(f"--json {path} is a folder: give a file path, such as {path / example}")
    if path.exists() and not _holds_json(path):
        raise UserError(f"--json {path} exists and does not hold JSON: give a new path, or an earlier --json file to replace")
    folder = next(p for p in path.absolute().parents if p.exists())
    if not folder.is_dir():
        raise UserError(f"--json {path}: {folder} is a file, not a folder: give a path in a folder")


def _holds_json(path: Path) -> bool:
    """Whether the file at `path` is empty or holds JSON (what --json writes)."""
    import json

    try:
        if not path.is_file() or path.stat().st_size > _JSON_MAX_BYTES:
            return False
        text = path.read_text()
        if text.strip():
            json.loads(text)
        return True
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def _write_json(path: Path, data: object) -> None:
    """Write `data` as JSON to `path` atomically; a failure is one line."""
    import json

    from edgedistill.errors import UserError
    from edgedistill.fileio import atomic_path

    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write --json {path} ({exc.strerror or exc}): choose another path") from exc


def _print_lint(results) -> int:
    """Print each finding on one line; the number of findings."""
    count = 0
    for r in results:
        for f in r.findings:
            line = f"node {f.node} ({f.domain or 'ai.onnx'}::{f.op}): {f.reason}"
            console.print(f"[yellow]{r.runtime}:[/] {escape(line)}", highlight=False)
        count += len(r.findings)
        if r.ok:
            console.print(f"{r.runtime}: {Path(r.model).name} is clean (checked against {r.reference})", highlight=False, markup=False)
    return count


def _print_table(report, out: Console | None = None) -> None:
    """The run's summary and budgets, fitted to the console's width (80 columns in a log):
    cells that may wrap do, and numbers, names and files never shrink to "…"."""
    from edgedistill.report.rows import budget_rows, deployed_summary, distillation_gains, noisy_note

    out = out or console
    quality = report.quality or "accuracy"
    out.print(_summary_table(report, f"{report.name}: validation {quality}; p50 latency measured on this CPU, batch 1"))
    if note := noisy_note(report):
        out.print(note, highlight=False)
    rows = budget_rows(report)
    if rows:
        table = _table("budgets: limit and value in the budget's unit")
        for col in ("student", "budget", "limit", "value", "ok", "value from"):
            # A long check name or source wraps; the figures beside it stay whole.
            wraps = col in ("budget", "value from")
            table.add_column(col, no_wrap=not wraps, overflow="fold", justify="right" if col in ("limit", "value") else "left")
        for r in rows:
            table.add_row(r.student, r.budget, r.limit, r.value, "yes" if r.ok else "NO", r.source,
                          style=None if r.ok else "red")
        out.print(table)
    for student, gained in distillation_gains(report):
        out.print(f"{student}: trained on labels alone → distilled: {gained}", highlight=False, markup=False)
    for student, deploys in deployed_summary(report):
        out.print(f"{student} deploys: {deploys}", highlight=False, markup=False)


def _summary_table(report, title: str) -> Table:
    """One block per model: its name, its generator under it, beside its artifacts' rows."""
    from itertools import groupby

    from edgedistill.report.rows import SHORT_COLUMNS, headers, summary_rows

    table = _table(title)
    groups = [(name, list(rows)) for name, rows in groupby(summary_rows(report), key=lambda r: r.cells["model"])]
    for col, head in zip(SHORT_COLUMNS, headers(SHORT_COLUMNS, report.task)):
        # Only words wrap (a verdict, a generator under its model's name): figures and names stay whole.
        table.add_column(
            head, no_wrap=col not in ("model", "budget"), overflow="fold",
            min_width=max((len(name) for name, _ in groups), default=0) if col == "model" else None,
            justify="left" if col in ("model", "budget") else "right",
        )
    for name, rows in groups:
        gen = "" if name == "teacher" else rows[0].cells["generator"]
        labels = [Text(name), Text(gen, style="dim"), *[""] * (len(rows) - 2)]
        if len(rows) == 1 and gen:
            labels = [Text(name) + "\n" + Text(gen, style="dim")]
        for i, (label, row) in enumerate(zip(labels, rows)):
            cells = [Text(c) for c in row.pick(SHORT_COLUMNS)[1:]]
            table.add_row(label, *cells, style=None if row.ok else "red", end_section=i == len(rows) - 1)
    return table


def _table(title: str) -> Table:
    """A table in the CLI's style: a rule under the header, no outer padding."""
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)


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
        # The message may quote the user's input: "[/x]" in it is text, not a style.
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except (KeyboardInterrupt, _Terminated) as exc:
        err_console.print("interrupted: finished stages are kept in the run directory; rerun to resume")
        raise typer.Exit(130 if isinstance(exc, KeyboardInterrupt) else 143) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    """Console-script entry point."""
    app()
