"""The run's teacher stages for every kind of teacher: loading it (training it from labels first
if asked) and its outputs on the training split, computed, read from a record or queried once and
cached in the run directory; and the outputs of a tier's student when another tier learns from
it (a teacher chain)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import TeacherOutputs, predict, teacher_outputs
from edgedistill.config import RunConfig
from edgedistill.data.arrays import OutputLabels, Splits, output_labels
from edgedistill.data.base import EpochProgress, FitOrder, Trained
from edgedistill.errors import UserError
from edgedistill.fileio import file_digest
from edgedistill.finite import Diverged, nonfinite
from edgedistill.progress import Progress
from edgedistill.recorded import load_recorded, log_probabilities
from edgedistill.rundir import Made, RunDir, StageId, input_key
from edgedistill.tasks import Inferred, infer, scored_by
from edgedistill.tasks.heads import Head, Labelled, Part, Several, heads_of, labels_in
from edgedistill.teachers import OnnxTeacher, QueryTeacher, RecordedTeacher, load_teacher, onnx_footprint



@dataclass(frozen=True)
class LoadedTeacher:
    """The teacher as the run uses it. `model` is None for a teacher that cannot be run on new
    inputs (recorded, query-only); `footprint` is None where its size is unknown."""

    model: nn.Module | None
    key: str
    footprint: budgets.Footprint | None
    # How a `train = true` teacher was trained (score, epoch, threads), for the report.
    training: dict | None = None
    # Its outputs' names and shapes per sample (None where it cannot run: known from its outputs).
    heads: tuple[Head, ...] | None = None


@dataclass(frozen=True)
class Taught:
    """The teacher's outputs on the training split, on the validation split where had (None for a
    teacher that cannot run, on labelled data), how they were had, and their stage key."""

    outputs: TeacherOutputs
    val: np.ndarray | None
    info: OutputsInfo
    key: str


@dataclass(frozen=True)
class OutputsInfo:
    """How the teacher's outputs were had and used, for the report."""

    form: str
    use: str
    covered: int
    missing: int
    queries: dict | None = None


def load(
    cfg: RunConfig, rd: RunDir, splits: Splits, data_key: str, progress: Progress,
    fit: Callable[[FitOrder, EpochProgress], Trained],
) -> LoadedTeacher:
    """Load the teacher, training it from labels first (once: cached in the run directory) if asked."""
    t = cfg.teacher
    # Keyed on what the teacher is and on its files' digests, not on where the files lie.
    key = input_key(t.identity(), [file_digest(f) for f in t.files()])
    if not t.runnable:
        return LoadedTeacher(None, key, None)
    # Factories initialise weights from the global RNG: seed it so a run is repeatable.
    torch.manual_seed(cfg.seed)
    model = load_teacher(t)
    heads = check_fit(model, splits)
    if not t.trains:
        return LoadedTeacher(model, key, footprint(model, splits.input_shape), None, heads)
    if splits.train.y is None:
        raise UserError("teacher.train trains the teacher on labels, and this data has none: give labelled data or a trained teacher")
    key = input_key(key, cfg.teacher_training, data_key)
    task = task_of(cfg, heads, splits).task

    def train() -> Made[dict]:
        progress.stage(f"teacher: training {t.factory} on labels")
        with progress.task("train teacher", cfg.teacher_training.epochs) as advance:
            order = FitOrder(model, cfg.teacher_training, cfg.seed, None, None, task=task)
            try:
                result = fit(order, lambda e, _n, score: advance(e, f"val {score:.3f}"))
            except Diverged as exc:
                # The same loop trains students; the learning rate to lower is the teacher's own.
                raise exc.of("teacher_training") from None
        path = rd.save_torch("teacher/teacher.pt", result.model.state_dict())
        record = {
            "val_score": result.val_score, "best_epoch": result.best_epoch,
            "threads": result.threads.threads, "threads_chosen": result.threads.how,
        }
        return Made(record, (path,))

    training = rd.stage(StageId("teacher"), key, dict, train, progress, "teacher: trained earlier, loaded from the run directory")
    model.load_state_dict(torch.load(rd.path("teacher/teacher.pt"), weights_only=True))
    # What follows is keyed on the trained weights themselves: a retrained teacher is a new one.
    return LoadedTeacher(model.eval(), rd.made_key(StageId("teacher")), footprint(model, splits.input_shape), training, heads)


def footprint(model: nn.Module, input_shape: tuple[int, ...]) -> budgets.Footprint:
    """Parameters, MACs and memory of a runnable teacher; an ONNX teacher's from its graph."""
    if isinstance(model, OnnxTeacher):
        return onnx_footprint(model.path, input_shape)
    return budgets.measure(model, input_shape)


def task_of(cfg: RunConfig, heads: tuple[Head, ...], splits: Splits) -> Inferred:
    """The run's task for a teacher with these outputs, checked against every split's labels and
    scored by the config's own score where it names one: one output's task, or each of several
    outputs' (`tasks`)."""
    given = output_labels(cfg.data.source) if cfg.data.labels else ()
    if len(heads) > 1:
        inferred = _several(cfg, heads, given, splits.train.y)
    elif cfg.tasks:
        raise UserError("tasks names outputs of a teacher with several, and this teacher has one: use task = ... instead")
    elif given:
        raise UserError(
            f"{cfg.data.source} holds labels per output ({', '.join(f'y_{g.name}' for g in given)}) and the teacher has one "
            "output: save its labels as y"
        )
    else:
        inferred = infer(cfg.task, heads[0].shape, splits.train.y)
    shape = heads[0].shape if len(heads) == 1 else (sum(h.size for h in heads),)
    for part in (splits.train, splits.val, splits.calib):
        problem = inferred.task.check(shape, part.y)
        if problem is not None:
            raise UserError(f"{problem}: give labels of one kind in every sample")
    return Inferred(scored_by(inferred.task, cfg.score), inferred.how)


def _several(cfg: RunConfig, heads: tuple[Head, ...], given: tuple[OutputLabels, ...], labels: np.ndarray | None) -> Inferred:
    """Each output's task (set in `tasks`, or inferred from its shape and its `y_<output>`
    labels, where given), weight and labels."""
    names = [h.name for h in heads]
    if cfg.task is not None:
        raise UserError(f"the teacher has {len(heads)} outputs ({', '.join(names)}): set each one's task in [tasks], not task")
    for what, named in (("tasks", set(cfg.tasks)), (f"{cfg.data.source} labels", {g.name for g in given})):
        unknown = sorted(named - set(names))
        if unknown:
            raise UserError(f"{what} name(s) {', '.join(unknown)}, which the teacher does not output: use its outputs' names ({', '.join(names)})")
    by_name = {g.name: Labelled(g.start, g.stop, g.shape, g.integer) for g in given}
    parts, said = [], []
    for head in heads:
        spec = cfg.tasks.get(head.name)
        where = by_name.get(head.name)
        inferred = infer(spec.task if spec else None, head.shape, labels_in(where, labels))
        parts.append(Part(head, inferred.task, spec.weight if spec else 1.0, where))
        said.append(f"{head.name} {list(head.shape)} {inferred.task.name}, {inferred.how.split(' (')[0]}")
    return Inferred(Several(tuple(parts)), "each output its own task: " + "; ".join(said))


def outputs(cfg: RunConfig, rd: RunDir, teacher: LoadedTeacher, splits: Splits, data_key: str, progress: Progress) -> Taught:
    """The teacher's outputs on the training split (and the validation split where the teacher runs,
    or where the data has no labels to score by): computed, read or queried once, stored, and
    reused by every student."""
    layers = tuple(sorted({p.teacher for p in cfg.distill.features}))
    if layers and (teacher.model is None or isinstance(teacher.model, OnnxTeacher)):
        raise UserError(f"distill.features needs a PyTorch teacher's layers; a {cfg.teacher.kind} teacher has none: drop distill.features")
    key = input_key(teacher.key, data_key, layers)
    rel = "teacher/outputs.npz"

    def make() -> Made[OutputsInfo]:
        out, val, info = _compute(cfg, rd, teacher, splits, layers, progress)
        check_finite(cfg, out)
        extra = {"known": out.known} if out.known is not None else {}
        if val is not None:
            extra["val"] = val
        with rd.atomic(rel) as tmp, open(tmp, "wb") as f:
            np.savez(f, logits=out.logits, **extra, **{f"feature:{k}": v for k, v in out.features.items()})
        return Made(info, (rd.path(rel),))

    info = rd.stage(StageId("teacher-outputs"), key, OutputsInfo, make, progress, "teacher outputs: computed earlier, read from the run directory")
    with np.load(rd.path(rel)) as saved:
        features = {k.removeprefix("feature:"): saved[k] for k in saved.files if k.startswith("feature:")}
        known = saved["known"] if "known" in saved.files else None
        val = saved["val"] if "val" in saved.files else None
        taught = TeacherOutputs(saved["logits"], features, known)
    return Taught(taught, val, info, rd.made_key(StageId("teacher-outputs")))


def _compute(
    cfg: RunConfig, rd: RunDir, teacher: LoadedTeacher, splits: Splits, layers: tuple[str, ...], progress: Progress
) -> tuple[TeacherOutputs, np.ndarray | None, OutputsInfo]:
    if teacher.model is not None:
        progress.stage("teacher outputs: running the teacher once over the training and validation splits")
        out = teacher_outputs(teacher.model, splits.train.x, layers)
        info = OutputsInfo("logits", "KD at temperature on the teacher's logits, computed once", len(splits.train), 0)
        return out, predict(teacher.model, splits.val.x), info
    # A teacher that cannot run is had by its kind's own means; without labels it answers the
    # validation inputs too (first, so a query budget covers them), as they are scored against it.
    if splits.val.y is not None:
        out, info = _UNRUNNABLE[type(cfg.teacher)](cfg.teacher, rd, splits.train.x, splits.num_classes, progress)
        return out, None, info
    n_val = len(splits.val)
    both, info = _UNRUNNABLE[type(cfg.teacher)](
        cfg.teacher, rd, np.concatenate([splits.val.x, splits.train.x]), splits.num_classes, progress
    )
    if both.known is not None and not both.known[:n_val].all():
        raise UserError(
            f"this data has no labels, so students are scored by agreement with the teacher on the validation split, and the "
            f"{cfg.teacher.kind} teacher answers {int(both.known[:n_val].sum())} of its {n_val} inputs: "
            + ("record the teacher on every input" if isinstance(cfg.teacher, RecordedTeacher) else "raise teacher.max_queries")
        )
    known = both.known[n_val:] if both.known is not None else None
    if known is not None and known.all():
        known = None
    covered = len(splits.train) if known is None else int(known.sum())
    info = OutputsInfo(info.form, info.use, covered, len(splits.train) - covered, info.queries)
    return TeacherOutputs(both.logits[n_val:], known=known), both.logits[:n_val], info


def _recorded(t: RecordedTeacher, rd: RunDir, x: np.ndarray, classes: int, progress: Progress) -> tuple[TeacherOutputs, OutputsInfo]:
    progress.stage(f"teacher outputs: reading the record {t.path}")
    rec = load_recorded(Path(t.path), x, classes)
    use = rec.use + (f"; {rec.missing} training inputs the record lacks are trained on labels alone" if rec.missing else "")
    return rec.outputs, OutputsInfo(rec.form, use, rec.matched, rec.missing)


def _query(t: QueryTeacher, rd: RunDir, x: np.ndarray, _classes: int, progress: Progress) -> tuple[TeacherOutputs, OutputsInfo]:
    from edgedistill.query import QueryTeacherConfig, query_teacher

    qcfg = QueryTeacherConfig(command=t.command, max_queries=t.max_queries, batch_size=t.query_batch, timeout_s=t.timeout_s)
    progress.stage(f"teacher outputs: querying {t.source} (at most {t.max_queries:,} queries, answers kept as they arrive)")
    with progress.task("query teacher", len(x)) as advance:
        cwd = Path(t.cwd) if t.cwd else Path(".")
        result = query_teacher(qcfg, x, rd.path("teacher/queries"), cwd, progress=lambda done, _total: advance(done, ""))
    if not result.answered.any():
        raise UserError(f"the query teacher answered none of the {len(x)} training inputs ({result.message}): raise teacher.max_queries")
    logits = result.outputs.astype(np.float32)
    if t.answers == "probabilities":
        logits[result.answered] = log_probabilities(logits[result.answered])
    progress.stage(f"teacher outputs: {result.message}")
    missing = int((~result.answered).sum())
    use = f"KD at temperature on the answered {t.answers}" + (f"; {missing} inputs left unanswered are trained on labels alone" if missing else "")
    queries = {
        "sent_this_run": result.sent_now, "used_total": result.used_total, "max_queries": t.max_queries,
        "stopped_by_budget": result.stopped_by_budget, "message": result.message,
    }
    known = result.answered if missing else None
    return TeacherOutputs(logits, known=known), OutputsInfo(f"queried {t.answers}", use, int(result.answered.sum()), missing, queries)


_UNRUNNABLE = {RecordedTeacher: _recorded, QueryTeacher: _query}


def check_finite(cfg: RunConfig, out: TeacherOutputs) -> None:
    """Fail in one line, before they are cached, when the teacher's outputs hold NaN or Inf: every
    student would learn them. Rows the teacher did not answer (`known` False) are NaN by design."""
    rows = slice(None) if out.known is None else out.known
    arrays = {"logits": out.logits, **{f"layer {k!r}": v for k, v in out.features.items()}}
    for name, values in arrays.items():
        bad = nonfinite(values[rows])
        if bad:
            raise UserError(
                f"the {cfg.teacher.kind} teacher {cfg.teacher.source} gives NaN or Inf in {bad:,} of the "
                f"{values[rows].size:,} values of its {name} on the training split: mend the teacher so that it "
                "gives finite outputs for every input"
            )


def check_fit(model: nn.Module, splits: Splits) -> tuple[Head, ...]:
    """Fail early, in one line, when the data does not fit the teacher; returns its outputs' names
    and shapes per sample."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(splits.val.x[:2]))
        heads = heads_of(out)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"data of shape {splits.input_shape} does not fit the teacher ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}): give data shaped as the teacher expects"
        ) from exc
    if len(heads) == 1 and heads[0].shape == ():
        raise UserError("the teacher outputs shape (N,), one number per sample without an output axis: return (N, 1) (e.g. out[:, None])")
    return heads
