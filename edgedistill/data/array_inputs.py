"""The arrays inputs entry: images and other fixed-shape arrays ("digits", `.npz`, image folders)
fed to PyTorch modules (or an ONNX teacher), with labels; teachers of every kind but Hugging Face."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from edgedistill import teaching
from edgedistill.compress.distill import fit, predict
from edgedistill.compress.students import Family, HFShrink, Prune
from edgedistill.config import ExportConfig, RunConfig, TierConfig
from edgedistill.data.arrays import Dataset, Splits, load_arrays, split
from edgedistill.data.training_set import given_train, students_train
from edgedistill.data.base import EpochProgress, Exported, Feed, Fit, FitOrder, Parts, Prepared, Start, TeacherSide, Trained
from edgedistill.distributed import World
from edgedistill.errors import UserError
from edgedistill.export.onnx import OnnxExport, export_onnx
from edgedistill.export.parity import Parity
from edgedistill.fileio import atomic_path, file_digest
from edgedistill.progress import Progress
from edgedistill.rundir import RunDir, input_key
from edgedistill.serialize import to_jsonable
from edgedistill.tasks import Reference
from edgedistill.tasks.classification import CLASSIFICATION
from edgedistill.tasks.heads import Head
from edgedistill.teachers import OnnxTeacher


class ArrayInputs:
    """Fixed-shape float arrays, with labels of the run's task or none; models are PyTorch modules."""

    name = "arrays"
    # Its students are plain torch modules: quantization-aware training wraps their layers.
    qat_refused: str | None = None

    def parts(self, cfg: RunConfig) -> Parts:
        """The seeded train / validation / calibration splits of the config's data, training on
        `data.train` where given (synthetic inputs are made by rank 0 alone: refused under torchrun)."""
        splits = given_train(cfg, source_splits(cfg))
        return Parts(splits.train, splits.val, splits.calib)

    def prepare(self, cfg: RunConfig, rd: RunDir, progress: Progress, fit: Fit) -> Prepared:
        """Load and split the data, then the teacher (trained first if asked) and its outputs."""
        progress.stage(f"data: {cfg.data.source}")
        splits, data_key = source_splits(cfg), _data_key(cfg)
        source = Parts(splits.train, splits.val, splits.calib)
        loaded = teaching.load(cfg, rd, splits, data_key, progress, lambda order, p: fit(source, order, p))
        made = students_train(cfg, rd, splits, data_key, loaded.model, loaded.key, progress)
        splits, data_key = made.splits, made.key
        parts = Parts(splits.train, splits.val, splits.calib)
        taught = teaching.outputs(cfg, rd, loaded, splits, data_key, progress)
        heads = loaded.heads or (Head("output", tuple(taught.outputs.logits.shape[1:])),)
        inferred = teaching.task_of(cfg, heads, splits)
        teacher = TeacherSide(
            loaded.model, loaded.key, loaded.footprint, taught.outputs, Reference(taught.val, parts.val.y), taught.key,
            to_jsonable(taught.info),
        )
        report = {
            "source": cfg.data.source, "input_shape": list(splits.input_shape), "classes": splits.num_classes,
            "output_shape": list(taught.outputs.logits.shape[1:]), "labels": _labels_said(parts.val.y),
            **({"outputs": {h.name: list(h.shape) for h in heads}} if len(heads) > 1 else {}),
            "task_chosen": inferred.how, "train": len(parts.train), "val": len(parts.val), "calib": len(parts.calib),
            "seed": cfg.seed, **made.report,
        }
        if loaded.training is not None:
            report["teacher_training"] = loaded.training
        return Prepared(
            parts, inferred.task, teacher, data_key, splits.input_shape, torch.float32, report,
            output_names=tuple(h.name for h in heads),
        )

    def fit(self, parts: Parts, order: FitOrder, progress: EpochProgress | None, world: World) -> Trained:
        """The task's loss to the teacher's outputs and to labels (either alone where the other is
        missing), scored on the validation split by the task's score."""
        task = order.task or CLASSIFICATION
        val_teacher = order.reference.teacher if order.reference is not None else None
        r = fit(
            order.model, parts.train, parts.val, order.cfg, order.seed, order.outputs, progress, world, order.teacher,
            task, val_teacher, order.start_competes,
        )
        # The score's name is the first of the task's columns for these outputs.
        metric = next(iter(task.metrics(predict(r.model, parts.val.x), Reference(val_teacher, parts.val.y))))
        details = {}
        if order.cfg.augment.active:
            details = {"augment": order.cfg.augment.describe()}
            if order.outputs is not None:
                details |= {"teacher_outputs": "online, on each augmented batch", "teacher_online_s": round(r.teacher_seconds, 3)}
        return Trained(r.model, r.best_epoch, r.epochs_run, r.val_score, metric, r.threads, details)

    def predict(self, model: nn.Module, part: Dataset) -> np.ndarray:
        """The model's outputs on the part's inputs."""
        return predict(model, part.x)

    def feed(self, part: Dataset, names: Sequence[str], count: int | None = None) -> Feed:
        """The inputs as one array: every graph of this entry has one input."""
        return part.x[:count]

    def student(self, prep: Prepared, cfg: RunConfig, tier: TierConfig, weights: bool) -> BaseModel:
        """The tier's generator; a built-in family by default where there are no weights to start from."""
        spec = tier.student
        if "student" not in tier.model_fields_set and not weights:
            spec = Family()
        if isinstance(spec, Prune) and not weights:
            raise UserError(
                f"tier {tier.name}: the prune generator starts from the teacher's weights, which a {cfg.teacher.kind} "
                'teacher does not give: use student = {kind = "family"} (built-in cnn/mlp), scale or custom'
            )
        if isinstance(spec, HFShrink):
            raise UserError(f"tier {tier.name}: the hf generator needs a Hugging Face teacher (teacher.hf): use prune, scale, family or custom")
        if isinstance(spec, Family) and len(prep.output_names) > 1:
            raise UserError(
                f"tier {tier.name}: the built-in families have one output and the teacher has {len(prep.output_names)} "
                f"({', '.join(prep.output_names)}): use prune (from the teacher's weights), scale or custom"
            )
        if isinstance(spec, Family) and spec.outputs is None:
            shape = tuple(prep.teacher.outputs.logits.shape[1:])
            spec = spec.model_copy(update={"outputs": shape[0] if len(shape) == 1 else shape})
        return spec

    def start(self, prep: Prepared, teacher: nn.Module | None, spec: BaseModel) -> Start:
        """The teacher itself, with the number of outputs a built-in family needs."""
        return Start(teacher, {})

    def onnx_name(self, folder: str, stem: str) -> str:
        """Where a model's ONNX goes: `<stem>.onnx` in its folder."""
        return f"{folder}/{stem}.onnx"

    def export(self, prep: Prepared, model: nn.Module, dst: Path, cfg: ExportConfig) -> Exported:
        """torch.onnx export with a dynamic batch axis, simplified, checked on validation inputs;
        an ONNX teacher's own file is copied as it is."""
        if isinstance(model, OnnxTeacher):
            with atomic_path(dst) as tmp:
                shutil.copyfile(model.path, tmp)
            names = tuple(i.name for i in model.session.get_inputs())
            return Exported(dst, names, Parity(0.0, cfg.parity_tolerance))
        val_x = prep.parts.val.x
        how = OnnxExport(
            opset=cfg.opset, output_names=prep.output_names, simplify=cfg.simplify, parity_tolerance=cfg.parity_tolerance
        )
        art = export_onnx(model, val_x[:2], val_x, dst, how)
        return Exported(art.path, (how.input_name,), art.parity)

    def save(self, prep: Prepared, model: nn.Module, rd: RunDir, folder: str) -> Path:
        """The whole module, pickled by torch."""
        return rd.save_torch(f"{folder}/student.pt", model)

    def load(self, rd: RunDir, folder: str) -> nn.Module:
        """The module `save` kept."""
        return torch.load(rd.path(f"{folder}/student.pt"), weights_only=False)


def source_splits(cfg: RunConfig) -> Splits:
    """The config's data source split with its fractions and seed: what `edgedistill run` splits
    (and `edgedistill condense` condenses)."""
    d = cfg.data
    x, y, classes = load_arrays(d.source, d.image_size, d.channels, d.labels)
    return split(x, y, classes, d.source, d.val_fraction, d.calib_fraction, cfg.seed)


def _data_key(cfg: RunConfig) -> str:
    """The key of the source's splits for the stages that use them: settings, seed, content."""
    return input_key(cfg.data.identity(), cfg.seed, file_digest(Path(cfg.data.source)))


def _labels_said(y: np.ndarray | None) -> str:
    """What the report says of the labels: none, or their type and shape per sample."""
    if y is None:
        return "none: students learn from the teacher alone and are scored by agreement with it"
    return f"{y.dtype} {list(y.shape[1:]) or 'scalar'} per sample"


ARRAYS = ArrayInputs()
