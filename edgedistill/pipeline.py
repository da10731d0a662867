"""`edgedistill run`, stage by stage. Each stage's logic lives in its own module; this file only chains
them, keys each on its inputs and records it in the run directory so that a rerun resumes.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import onnx
import torch
from pydantic import BaseModel
from torch import nn

from edgedistill import __version__, teaching
from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import DistillConfig, ProgressFn, TeacherOutputs, TrainResult, accuracy, fit, predict
from edgedistill.compress.quantize import QuantResult, quantize
from edgedistill.compress.search import search
from edgedistill.compress.students import Family, Prune
from edgedistill.config import RunConfig, TierConfig
from edgedistill.data import Splits, load_arrays, split
from edgedistill.distributed import World, init_world, serve
from edgedistill.errors import UserError
from edgedistill.export.deploy import Deployment, Sources, deploy, wanted
from edgedistill.export.onnx import OnnxArtifact, OnnxExport, export_onnx
from edgedistill.fileio import file_digest
from edgedistill.measure import Bench, artifact_entry, deployed_entry, final_checks
from edgedistill.progress import Progress
from edgedistill.report import html as report_html
from edgedistill.report import markdown, schema
from edgedistill.rundir import RunDir, input_key
from edgedistill.serialize import from_jsonable, to_jsonable
from edgedistill.targets.calibration import load as load_calibration
from edgedistill.targets.cost import as_precision, graph_cost
from edgedistill.targets.estimate import predict as predict_latency
from edgedistill.targets.profile import Target, load_target
from edgedistill.teachers import OnnxTeacher
from edgedistill.teaching import LoadedTeacher, OutputsInfo


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the report and where it was written."""

    report: schema.Report
    report_path: Path


@dataclass(frozen=True)
class StudentRecord:
    """The outcome of the search and distillation of one tier, as kept in the manifest."""

    knob: float
    footprint: budgets.Footprint
    checks: tuple[budgets.BudgetCheck, ...]
    search_evaluations: int
    val_accuracy: float
    best_epoch: int
    epochs_run: int
    # validation accuracy of each generation of self-distillation; empty with one generation
    generations: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Context:
    """What every stage of one run reads: config, run directory, data, teacher and their keys."""

    cfg: RunConfig
    rd: RunDir
    splits: Splits
    teacher: LoadedTeacher
    outputs: TeacherOutputs
    targets: tuple[Target, ...]
    data_key: str
    outputs_key: str
    progress: Progress
    trainer: _Trainer

    @property
    def bench(self) -> Bench:
        return Bench(self.splits.val, self.cfg.measure, self.targets, self.rd.root, self.progress)


def run(
    cfg: RunConfig,
    out: Path,
    base: Path = Path("."),
    force: bool = False,
    progress: Progress = Progress(),
    world: World | None = None,
) -> RunResult | None:
    """Run every stage of `cfg` into the run directory `out`; relative paths in `cfg` start at `base`.

    Under torchrun, rank 0 runs the stages and returns the result; the other ranks only train their
    shards when rank 0 trains, and return None.
    """
    world = world or init_world()
    if not world.is_main:
        splits, _ = _data(cfg, base)
        serve(world, lambda order: fit(order[0], splits.train, splits.val, *order[1:], world=world))
        world.close()
        return None
    try:
        return _run(cfg, out, base, force, progress, world)
    finally:
        if world.distributed:
            world.send(None)
            world.close()


def _run(cfg: RunConfig, out: Path, base: Path, force: bool, progress: Progress, world: World) -> RunResult:
    with RunDir(out, force) as rd:
        rd.write_json("config.json", cfg)
        targets = tuple(load_target(t if not t.endswith(".toml") else str(base / t)) for t in cfg.targets)
        _check_latency_targets(cfg, targets)
        if cfg.teacher.kind == "hf":
            from edgedistill.hf import run as hf_run

            report = hf_run.run(cfg, rd, base, targets, progress)
        else:
            report = _classifier_run(cfg, rd, base, targets, progress, world)
        path = rd.write_text("report.json", schema.dumps(report))
        rd.write_text("report.md", markdown.render(report))
        rd.write_text("report.html", report_html.render(report))
        return RunResult(report, path)


def _classifier_run(
    cfg: RunConfig, rd: RunDir, base: Path, targets: tuple[Target, ...], progress: Progress, world: World
) -> schema.Report:
    """The stages for a classifier teacher (PyTorch, ONNX, recorded or query-only) on array data."""
    progress.stage(f"data: {cfg.data.source}")
    splits, data_key = _data(cfg, base)
    trainer = _Trainer(world, splits)

    teacher = teaching.load(cfg, rd, splits, base, data_key, progress, trainer.fit)
    outputs, info, outputs_key = teaching.outputs(cfg, rd, teacher, splits, base, data_key, progress)
    ctx = _Context(cfg, rd, splits, teacher, outputs, targets, data_key, outputs_key, progress, trainer)

    teacher_entry = _baseline(ctx, info)
    made: dict[str, _Made] = {}
    for tier in cfg.ordered():
        made[tier.name] = _student(ctx, tier, made)
    students = tuple(made[t.name].entry for t in cfg.tiers)
    return schema.Report(
        schema=schema.SCHEMA,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        edgedistill_version=__version__,
        name=cfg.name,
        task="classification",
        data={
            "source": cfg.data.source,
            "input_shape": list(splits.input_shape),
            "classes": splits.num_classes,
            "train": len(splits.train),
            "val": len(splits.val),
            "calib": len(splits.calib),
            "seed": cfg.seed,
        },
        teacher=teacher_entry,
        students=students,
        failures=schema.parity_failures(teacher_entry, students),
        targets=tuple(t.model_dump(mode="json") for t in targets),
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


def _data(cfg: RunConfig, base: Path) -> tuple[Splits, str]:
    """The seeded splits of the config's data, and their key for the stages that use them."""
    source = "digits" if cfg.data.source == "digits" else str(base / cfg.data.source)
    x, y, classes = load_arrays(source, cfg.data.image_size, cfg.data.channels)
    splits = split(x, y, classes, cfg.data.source, cfg.data.val_fraction, cfg.data.calib_fraction, cfg.seed)
    return splits, input_key(cfg.data, cfg.seed, file_digest(Path(source)))


@dataclass(frozen=True)
class _Trainer:
    """`fit` on every rank: in a distributed world, rank 0 first sends the others the same order."""

    world: World
    splits: Splits

    def fit(
        self, model: nn.Module, cfg: DistillConfig, seed: int, outputs: TeacherOutputs | None, progress: ProgressFn
    ) -> TrainResult:
        if self.world.distributed:
            self.world.send((model, cfg, seed, outputs))
        return fit(model, self.splits.train, self.splits.val, cfg, seed, outputs, progress, self.world)


def _baseline(ctx: _Context, info: OutputsInfo) -> schema.Teacher:
    """The teacher's own accuracy, ONNX file and latency: the first row of every table. A teacher
    that cannot be run on new inputs (recorded, query-only) has only how its outputs were had."""
    cfg, teacher = ctx.cfg, ctx.teacher
    key = input_key(teacher.key, ctx.data_key, cfg.export, cfg.measure, info)
    done = ctx.rd.finished("baseline", key)
    if done is not None:
        ctx.progress.stage("baseline: measured earlier, taken from the run directory")
        return from_jsonable(schema.Teacher, done)
    fp = teacher.footprint or budgets.Footprint(0, 0, 0, 0)
    entry = schema.Teacher(
        source=cfg.teacher.source, params=fp.params, macs=fp.macs, bytes_fp32=fp.bytes_fp32,
        peak_activation_bytes=fp.peak_activation_bytes, metrics={}, latency={}, artifacts=(),
        kind=cfg.teacher.kind, outputs=to_jsonable(info),
    )
    outputs: list[Path] = []
    if teacher.model is not None:
        ctx.progress.stage("baseline: exporting and measuring the teacher")
        onnx = _teacher_onnx(ctx, teacher.model)
        art = artifact_entry(
            ctx.bench, "onnx", "fp32", onnx.path, parity=(onnx.parity_max_abs_err, onnx.parity_tolerance),
            targets=tuple(t.name for t in ctx.targets),
        )
        metrics = {"accuracy": accuracy(predict(teacher.model, ctx.splits.val.x), ctx.splits.val.y)}
        entry = replace(entry, metrics=metrics, latency=art.latency, artifacts=(art,))
        outputs.append(onnx.path)
    ctx.rd.finish("baseline", key, entry, outputs)
    return entry


def _teacher_onnx(ctx: _Context, model: nn.Module) -> OnnxArtifact:
    """The teacher as ONNX: exported from PyTorch, or an ONNX teacher's own file, copied as it is."""
    if not isinstance(model, OnnxTeacher):
        return _export(ctx, model, "teacher/teacher.onnx")
    path = ctx.rd.write_bytes("teacher/teacher.onnx", model.path.read_bytes())
    return OnnxArtifact(
        path=path, bytes=path.stat().st_size, opset=_opset(path), simplified=False,
        parity_max_abs_err=0.0, parity_tolerance=ctx.cfg.export.parity_tolerance,
    )


@dataclass(frozen=True)
class _Made:
    """A tier's finished student: its report entry, the trained model and its stage key (the
    tiers that learn from it need both)."""

    entry: schema.Student
    model: nn.Module
    key: str


def _born_again(ctx: _Context, tier: TierConfig, architecture: nn.Module, first: TrainResult) -> tuple[TrainResult, tuple[float, ...]]:
    """Self-distillation ("born-again" networks, Furlanello et al. 2018): each further generation is
    the same architecture, freshly initialised, distilled from the generation before. Returns the
    generation with the best validation accuracy (the earliest on a tie) and every generation's."""
    if tier.generations == 1:
        return first, ()
    cfg, results = ctx.cfg, [first]
    for generation in range(2, tier.generations + 1):
        seed = cfg.seed + generation - 1
        fresh = copy.deepcopy(architecture)
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        teacher = TeacherOutputs(predict(results[-1].model, ctx.splits.train.x))
        ctx.progress.stage(f"{tier.name}: generation {generation} of {tier.generations}, distilled from generation {generation - 1}")
        with ctx.progress.task(f"distil {tier.name} gen {generation}", cfg.distill.epochs) as advance:
            results.append(ctx.trainer.fit(fresh, cfg.distill, seed, teacher, lambda e, _n, acc: advance(e, f"val acc {acc:.3f}")))
    best = max(results, key=lambda r: r.val_accuracy)
    return best, tuple(r.val_accuracy for r in results)


def _generator(ctx: _Context, tier: TierConfig, outputs: int) -> BaseModel:
    """The tier's generator: a built-in family by default when the teacher has no weights to
    start from; prune refused, in one line, for such a teacher."""
    spec = tier.student
    weights = tier.parent is not None or ctx.cfg.teacher.has_weights
    if "student" not in tier.model_fields_set and not weights:
        spec = Family()
    if isinstance(spec, Prune) and not weights:
        raise UserError(
            f"tier {tier.name}: the prune generator starts from the teacher's weights, which a {ctx.cfg.teacher.kind} "
            'teacher does not give: use student = {kind = "family"} (built-in cnn/mlp), scale or custom'
        )
    if isinstance(spec, Family) and spec.outputs is None:
        spec = spec.model_copy(update={"outputs": outputs})
    return spec


def _resolve(ctx: _Context, tier: TierConfig) -> budgets.ResolvedBudget:
    """The tier's budget in absolute terms: shares are of the run's teacher, also in a chain."""
    if ctx.teacher.footprint is None:
        relative = tier.budget.relative_limits()
        if relative:
            raise UserError(
                f"tier {tier.name}: budget {relative[0]} is a share of the teacher's, which a {ctx.cfg.teacher.kind} "
                "teacher does not reveal: give an absolute value (e.g. params = 20000)"
            )
        return budgets.resolve(tier.budget, budgets.Footprint(0, 0, 0, 0))
    return budgets.resolve(tier.budget, ctx.teacher.footprint)


def _student(ctx: _Context, tier: TierConfig, made: dict[str, _Made]) -> _Made:
    """Search, distil, export, quantize and measure one tier's student (each step resumable).
    A chained tier learns from, and is generated from, the student of the tier it names."""
    cfg, rd = ctx.cfg, ctx.rd
    folder = f"students/{tier.name}"
    resolved = _resolve(ctx, tier)
    if tier.parent is None:
        teacher, outputs, outputs_key = ctx.teacher.model, ctx.outputs, ctx.outputs_key
    else:
        parent = made[tier.parent]
        teacher, outputs_key = parent.model, input_key(parent.key, "outputs")
        outputs = teaching.student_outputs(rd, tier.parent, parent.model, ctx.splits.train.x, outputs_key, ctx.progress)
    spec = _generator(ctx, tier, outputs.logits.shape[1])
    student_key = input_key(outputs_key, tier, spec, cfg.distill, cfg.seed)
    done = rd.finished(f"student:{tier.name}", student_key)
    if done is None:
        learns = f" from tier {tier.parent}" if tier.parent else ""
        ctx.progress.stage(f"{tier.name}: searching {spec.kind} for {tier.budget_text()}{learns}")
        torch.manual_seed(cfg.seed)  # scale and custom students start from fresh, seeded weights
        cand = search(
            spec, teacher, ctx.splits.input_shape, resolved,
            file_bytes=_file_size_probe(ctx, resolved.precision),
            latency=_latency_probe(ctx, tier),
        )
        ctx.progress.stage(f"{tier.name}: distilling a {cand.footprint.params:,}-parameter student")
        with ctx.progress.task(f"distil {tier.name}", cfg.distill.epochs) as advance:
            trained = ctx.trainer.fit(
                cand.model, cfg.distill, cfg.seed, outputs, lambda e, _n, acc: advance(e, f"val acc {acc:.3f}")
            )
        trained, generations = _born_again(ctx, tier, cand.model, trained)
        path = rd.save_torch(f"{folder}/student.pt", trained.model)
        record = StudentRecord(
            cand.knob, cand.footprint, cand.checks, cand.evaluations,
            trained.val_accuracy, trained.best_epoch, trained.epochs_run, generations,
        )
        done = rd.finish(f"student:{tier.name}", student_key, record, [path])
    else:
        ctx.progress.stage(f"{tier.name}: distilled earlier, loaded from the run directory")
    record = from_jsonable(StudentRecord, done)
    model = torch.load(rd.path(f"{folder}/student.pt"), weights_only=False)

    export_key = input_key(student_key, cfg.export)
    fp32 = _stage_export(ctx, model, f"{folder}/model.onnx", f"export:{tier.name}", export_key)
    quant_key = input_key(export_key, cfg.quantize, ctx.data_key)
    int8 = _stage_quantize(ctx, fp32, f"{folder}/model.int8.onnx", f"quantize:{tier.name}", quant_key) if cfg.quantize.enabled else None

    deploy_key = input_key(quant_key, ctx.targets)
    val = ctx.splits.val
    sources = Sources(
        fp32.path, int8.path if int8 else None, rd.path(folder), val.x, ctx.splits.calib.x,
        lambda out: accuracy(out, val.y), cfg.quantize.symmetric(), cfg.quantize.max_accuracy_drop,
        make_int8=cfg.quantize.enabled,
    )
    deployment = _stage_deploy(ctx, sources, f"deploy:{tier.name}", deploy_key)

    measure_key = input_key(deploy_key, cfg.measure)
    done = rd.finished(f"measure:{tier.name}", measure_key)
    if done is None:
        want = wanted(ctx.targets)
        artifacts = (
            artifact_entry(
                ctx.bench, "onnx", "fp32", fp32.path, parity=(fp32.parity_max_abs_err, fp32.parity_tolerance),
                targets=want.get(("onnx", "fp32"), ()),
            ),
        )
        if int8 is not None:
            artifacts += (artifact_entry(ctx.bench, "onnx", "int8", int8.path, quant=int8, targets=want.get(("onnx", "int8"), ())),)
        artifacts += tuple(deployed_entry(ctx.bench, d) for d in deployment.made)
        done = rd.finish(f"measure:{tier.name}", measure_key, artifacts)
    else:
        ctx.progress.stage(f"{tier.name}: measured earlier, taken from the run directory")
    artifacts = from_jsonable(tuple[schema.Artifact, ...], done)

    checks = final_checks(record.checks, resolved, artifacts)
    entry = schema.Student(
        name=tier.name,
        tier=tier.name,
        generator=spec.model_dump(mode="json"),
        knob=record.knob,
        budget={
            "spec": tier.budget.model_dump(mode="json", exclude_none=True),
            "limits": resolved.limits,
            "precision": resolved.precision,
        },
        params=record.footprint.params,
        macs=record.footprint.macs,
        peak_activation_bytes=record.footprint.peak_activation_bytes,
        metrics={"accuracy": record.val_accuracy},
        within_budget=all(c.ok for c in checks),
        checks=checks,
        distill={
            "best_epoch": record.best_epoch,
            "epochs_run": record.epochs_run,
            "search_evaluations": record.search_evaluations,
            "teacher_outputs": "cached",
            "teacher": tier.teacher or "teacher",
            "trained_with_teacher": outputs.covered,
            "trained_on_labels_only": len(outputs.logits) - outputs.covered,
            "generations": list(record.generations),
        },
        artifacts=artifacts,
        skipped=tuple({"format": s.format, "precision": s.precision, "targets": list(s.targets), "reason": s.reason} for s in deployment.skipped),
    )
    return _Made(entry, model, student_key)


def _stage_deploy(ctx: _Context, src: Sources, stage: str, key: str) -> Deployment:
    done = ctx.rd.finished(stage, key)
    if done is not None:
        return from_jsonable(Deployment, done)
    ctx.progress.stage(f"{stage.split(':')[1]}: making artifacts for {', '.join(t.name for t in ctx.targets)}")
    result = deploy(src, wanted(ctx.targets))
    outputs = [d.path for d in result.made] + [d.build.command_path for d in result.made if d.build]
    ctx.rd.finish(stage, key, result, outputs)
    return result


def _stage_export(ctx: _Context, model: nn.Module, rel: str, stage: str, key: str) -> OnnxArtifact:
    done = ctx.rd.finished(stage, key)
    if done is not None:
        return from_jsonable(OnnxArtifact, done)
    ctx.progress.stage(f"{stage.split(':')[1]}: exporting to ONNX and checking parity")
    art = _export(ctx, model, rel)
    ctx.rd.finish(stage, key, art, [art.path])
    return art


def _stage_quantize(ctx: _Context, fp32: OnnxArtifact, rel: str, stage: str, key: str) -> QuantResult:
    done = ctx.rd.finished(stage, key)
    if done is not None:
        return from_jsonable(QuantResult, done)
    ctx.progress.stage(f"{stage.split(':')[1]}: quantizing to int8")
    val = ctx.splits.val
    result = quantize(
        fp32.path, ctx.rd.path(rel), ctx.cfg.quantize.methods_for(fp32.path), ctx.splits.calib.x,
        lambda out: accuracy(out, val.y), val.x, ctx.cfg.quantize.max_accuracy_drop,
    )
    ctx.rd.finish(stage, key, result, [result.path])
    return result


def _export(ctx: _Context, model: nn.Module, rel: str | Path) -> OnnxArtifact:
    e = ctx.cfg.export
    val_x = ctx.splits.val.x
    # export_onnx writes to a temporary name and renames, like every write into the run directory.
    return export_onnx(
        model, val_x[:2], val_x, ctx.rd.path(rel),
        OnnxExport(opset=e.opset, simplify=e.simplify, parity_tolerance=e.parity_tolerance),
    )


def _file_size_probe(ctx: _Context, precision: str) -> Callable[[nn.Module], int] | None:
    """Bytes of the file a candidate would ship as, made the way the run makes it, for the search.

    Weight values barely change a file's size, so an undistilled candidate shows it. It is the
    largest of the files at that precision: every int8 method's (the winner is decided later) and
    every file a target deploys (an .ort for a phone).
    """
    if precision == "int8" and not ctx.cfg.quantize.enabled:
        return None
    x = ctx.splits.val.x[:8]

    # The files the targets deploy at this precision; TensorRT engines are sized on the device.
    deployed = {k: v for k, v in wanted(ctx.targets).items() if k[1] == precision and k[0] != "tensorrt"}
    if precision == "fp16":
        deployed.setdefault(("onnx", "fp16"), ())

    def probe(model: nn.Module) -> int:
        with tempfile.TemporaryDirectory(prefix=".size-probe-", dir=ctx.rd.root) as tmp:
            fp32 = _export(ctx, model, Path(tmp) / "model.onnx")
            sizes = [fp32.bytes] if precision == "fp32" else []
            int8 = None
            if precision == "int8":
                q = quantize(
                    fp32.path, Path(tmp) / "model.int8.onnx", ctx.cfg.quantize.methods_for(fp32.path),
                    ctx.splits.calib.x, lambda _out: 0.0, x, timing_runs=1,
                )
                sizes += [t.bytes for t in q.trials]
                int8 = q.path
            src = Sources(
                fp32.path, int8, Path(tmp), x, ctx.splits.calib.x, lambda _out: 0.0, ctx.cfg.quantize.symmetric(),
            )
            sizes += [d.path.stat().st_size for d in deploy(src, deployed).made]
            return max(sizes)

    return probe


def _latency_probe(ctx: _Context, tier: TierConfig) -> Callable[[nn.Module], dict[str, float]] | None:
    """Predicted p50 of a candidate on each target the tier has a latency budget for.

    The candidate is exported (fp32) and its graph priced as if at the precision the target gets
    first: the quantized file does not exist yet. Every target is predicted, this machine too, so
    the search is quick and consistent; the report then judges measured figures where it has them.
    """
    names = tuple(tier.budget.latency_ms or ())
    if not names:
        return None
    targets = [t for t in ctx.targets if t.name in names]

    def probe(model: nn.Module) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix=".latency-probe-", dir=ctx.rd.root) as tmp:
            cost = graph_cost(_export(ctx, model, Path(tmp) / "model.onnx").path)
        return {
            t.name: predict_latency(as_precision(cost, t.artifacts[0].precision), t, load_calibration(t.name)).p50_ms
            for t in targets
        }

    return probe


def _opset(path: Path) -> int:
    return next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")), 0)
