"""The `edgedistill` command: parses, calls the library, prints with rich. No logic of its own."""

from __future__ import annotations

import contextlib
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

EXAMPLES = ("digits",)


class RichProgress(Progress):
    """Stage lines and transient progress bars on the terminal."""

    def stage(self, text: str) -> None:
        console.print(f"[bold cyan]•[/] {text}")

    @contextlib.contextmanager
    def task(self, text: str, total: int) -> Iterator[Advance]:
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
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/<name>). A rerun there resumes finished stages.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage instead of resuming; files are overwritten.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
) -> None:
    """Make, distil, export, quantize and measure a student for every budget tier, then report."""
    from edgedistill.config import load_config
    from edgedistill.errors import UserError
    from edgedistill.examples.digits import config_path
    from edgedistill.pipeline import run as run_pipeline

    # torch warns about its own internals when a .pt2 teacher is copied; users can do nothing about it.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    with _errors(debug):
        if config is not None and example is not None:
            raise UserError("give a CONFIG file or --example, not both")
        if config is None:
            name = example or "digits"
            if name not in EXAMPLES:
                raise UserError(f"unknown example {name!r}: choose one of {', '.join(EXAMPLES)}")
            config, base = config_path(name), Path(".")
        else:
            base = config.parent
        # As `python script.py` would: factories resolve from the config's folder and the current one.
        for folder in (Path.cwd(), base.resolve()):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        cfg = load_config(config)
        out_dir = out or Path("runs") / cfg.name
        console.print(f"[bold]edgedistill run[/] {cfg.name} → {out_dir}")
        result = run_pipeline(cfg, out_dir, base, force, RichProgress())
        _print_table(result.report)
        console.print(f"report: {result.report_path} (and report.md beside it)")
        if result.report.failures:
            for failure in result.report.failures:
                err_console.print(f"[red]failed:[/] {failure}")
            raise typer.Exit(1)


def _print_table(report) -> None:
    from edgedistill.report.rows import SHORT_COLUMNS, summary_rows

    table = Table(
        title=f"{report.name}: validation accuracy; p50 latency measured on this CPU, batch 1",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in SHORT_COLUMNS:
        table.add_column(col, no_wrap=True, justify="left" if col in ("model", "generator", "precision", "budget") else "right")
    for row in summary_rows(report):
        table.add_row(*row.pick(SHORT_COLUMNS), style=None if row.ok else "red")
    console.print(table)


@contextlib.contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """One line and the error's exit status instead of a traceback (unless --debug)."""
    try:
        yield
    except EdgeDistillError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: finished stages are kept in the run directory; rerun to resume")
        raise typer.Exit(130) from None


def main() -> None:
    """Console-script entry point."""
    app()
