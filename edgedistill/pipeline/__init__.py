"""`edgedistill run`: the one run for every teacher and every kind of input. It only chains
stages: the inputs entry prepares the data and the teacher, then the baseline, each tier's
student (search, distillation), its files (export, int8, every format its targets want), their
latency (measured where a runner reaches the device, predicted elsewhere) and the report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgedistill import __version__
from edgedistill.config import RunConfig
from edgedistill.data.registry import inputs_for
from edgedistill.distributed import World, init_world, serve
from edgedistill.errors import UserError
from edgedistill.progress import Progress
from edgedistill.report import html as report_html
from edgedistill.report import markdown, schema
from edgedistill.rundir import RunDir
from edgedistill.pipeline.artifacts import student_entry
from edgedistill.pipeline.context import Context, Trainer
from edgedistill.pipeline.student import Distilled, distilled, lesson
from edgedistill.pipeline.teacher import baseline
from edgedistill.targets.android_tools import PerfTests, idle_text
from edgedistill.targets.latency import LatencyService, Timing
from edgedistill.targets.profile import Target, load_target


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the report and where it was written."""

    report: schema.Report
    report_path: Path


@dataclass(frozen=True)
class Devices:
    """Devices a run measures on: addresses by target name (over the config's `[addresses]`) and
    the Android timing binaries, by runtime, for adb targets."""

    addresses: Mapping[str, str] | None = None
    perf_test: PerfTests = PerfTests()


def run(
    cfg: RunConfig,
    out: Path,
    force: bool = False,
    progress: Progress = Progress(),
    world: World | None = None,
    devices: Devices = Devices(),
) -> RunResult | None:
    """Run every stage of `cfg` into the run directory `out`.

    Under torchrun, rank 0 runs the stages and returns the result; the other ranks only train their
    shards when rank 0 trains, and return None.
    """
    world = world or init_world()
    if world.distributed and cfg.data.synthetic is not None:
        # Every rank would need the synthetic inputs that rank 0 alone makes.
        raise UserError("data.synthetic runs in one process: run without torchrun (synthesise once, then train on its data/synthetic.npz with data.train), or drop it")
    entry = inputs_for(cfg.teacher)
    if cfg.quantize.qat and entry.qat_refused is not None:
        raise UserError(f"quantize.qat = true: {entry.qat_refused}: set quantize.qat = false, or leave it unset")
    if not world.is_main:
        parts = entry.parts(cfg)
        serve(world, lambda order: entry.fit(parts, order, None, world))
        world.close()
        return None
    try:
        return _run(cfg, out, force, progress, world, devices)
    finally:
        if world.distributed:
            world.send(None)
            world.close()


def _run(cfg: RunConfig, out: Path, force: bool, progress: Progress, world: World, devices: Devices) -> RunResult:
    targets = tuple(load_target(t) for t in cfg.targets)
    _check_latency_targets(cfg, targets)
    m = cfg.measure
    service = LatencyService(
        targets, {**cfg.addresses, **(devices.addresses or {})}, Timing(m.warmup, m.runs, m.threads, m.throughput_batch),
        devices.perf_test,
    )
    with RunDir(out, force) as rd:
        entry = inputs_for(cfg.teacher)
        trainer = Trainer(entry, world)
        prep = entry.prepare(cfg, rd, progress, trainer.fit)
        ctx = Context(cfg, rd, entry, prep, targets, service, progress, trainer)
        report = _report(ctx)
        # The config beside the report it made: a run stopped by bad input keeps the last pair.
        rd.write_json("config.json", cfg)
        path = rd.write_text("report.json", schema.dumps(report))
        rd.write_text("report.md", markdown.render(report))
        rd.write_text("report.html", report_html.render(report))
        _check_perf_tests(ctx, report)
        return RunResult(report, path)


def _report(ctx: Context) -> schema.Report:
    """The baseline, then every tier in the order their teachers need, then the report."""
    teacher = baseline(ctx)
    made: dict[str, Distilled] = {}
    students: dict[str, schema.Student] = {}
    for tier in ctx.cfg.ordered():
        learn = lesson(ctx, tier, made.get(tier.parent) if tier.parent else None)
        made[tier.name] = distilled(ctx, tier, learn)
        students[tier.name] = student_entry(ctx, tier, made[tier.name], learn)
    ordered = tuple(students[t.name] for t in ctx.cfg.tiers)
    return schema.Report(
        schema=schema.SCHEMA,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        edgedistill_version=__version__,
        name=ctx.cfg.name,
        task=ctx.prep.task.name,
        data=ctx.prep.report,
        teacher=teacher,
        students=ordered,
        failures=schema.parity_failures(teacher, ordered),
        targets=tuple(t.model_dump(mode="json") for t in ctx.targets),
        quality=ctx.prep.task.quality,
    )


def _check_perf_tests(ctx: Context, report: schema.Report) -> None:
    """Each binary given with --perf-test must time a file the run made for a phone it measures:
    one that timed nothing (its format's extra not installed, the converter refused the students,
    no phone's profile lists the format, no phone has an address) is said once the report is
    written, with the reason the report gives for the files not made."""
    phones = {t.name for t in ctx.targets if t.runner == "adb" and ctx.latency.reachable(t)}
    made = {Path(a.path).suffix for s in report.students for a in s.artifacts if phones & set(a.targets)}
    idle = ctx.latency.perf_test.idle(made)
    if idle is None:
        return
    tool, _ = idle
    # A skipped file names its format, which is its files' ending (tflite, pte).
    why = next(
        (f" ({k['format']} {k['precision']}: {k['reason']})" for s in report.students for k in s.skipped
         if phones & set(k["targets"]) and f".{k['format']}" in tool.suffixes),
        "",
    )
    where = f"for {', '.join(sorted(phones))}" if phones else "for a phone it measures (no adb target has an --address)"
    raise UserError(
        f"{idle_text(*idle)}, and this run made none {where}{why}: the report is written without their "
        "figures; fix that and rerun, or drop that --perf-test"
    )


def _check_latency_targets(cfg: RunConfig, targets: tuple[Target, ...]) -> None:
    names = {t.name for t in targets}
    for tier in cfg.tiers:
        unknown = sorted(set(tier.budget.latency_ms or ()) - names)
        if unknown:
            raise UserError(
                f"tier {tier.name} has a latency budget on {', '.join(unknown)}, which is not among the run's "
                f"targets ({', '.join(sorted(names))}): add it to `targets` or drop the budget"
            )
