"""The run config: pydantic models of the TOML file, with one-line errors that name the field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from edgedistill.compress.budget import Budget, Limit
from edgedistill.compress.distill import DistillConfig
from edgedistill.compress.quantize import QuantizeConfig
from edgedistill.compress.students import Prune, StudentSpec
from edgedistill.data.arrays import BUILTIN
from edgedistill.data.synthetic import SynthesisConfig
from edgedistill.errors import UserError
from edgedistill.fileio import config_relative
from edgedistill.teachers import TeacherConfig, parse_teacher
from edgedistill.tasks import ARRAY_TASKS


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "digits",
        validate_default=True,
        description='"digits" or "sensor-digits" (built in), a .npz file with x and y, or a folder of class folders; for a Hugging Face '
        'teacher: "pydoc" (English sentences from Python\'s own documentation), a .txt of lines or a .jsonl.',
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of samples held out for validation.")
    calib_fraction: float = Field(0.1, gt=0, lt=1, description="Share of samples held out to calibrate int8 quantization.")
    image_size: tuple[int, int] = Field((32, 32), description="Height and width images are resized to (image folders).")
    channels: int = Field(3, description="1 (grayscale) or 3 (RGB), for image folders.")
    labels: bool = Field(
        True, strict=True,
        description="Use the source's labels; false ignores them and students learn from the teacher alone, scored by "
        "agreement with it (a .npz without y, a .npy or a folder of images alone has none anyway).",
    )
    text_column: str = Field("text", description="The field of each .jsonl line that holds the text.")
    label_column: str | None = Field(None, description="The field of each .jsonl line that holds a class label, if any.")
    max_length: int = Field(128, ge=2, description="Tokens per text at most (longer texts are truncated).")
    max_samples: int | None = Field(None, ge=3, description="Use at most this many texts (a seeded choice).")
    train: str | None = Field(
        None,
        description="A .npz with x and y that the students train on instead of the training split (a condensed set "
        "from `edgedistill condense`); validation and calibration still come from source, and a teacher the run "
        "trains still trains on source.",
    )
    synthetic: SynthesisConfig | None = Field(
        None,
        description="Data-free distillation: training inputs synthesised from the teacher's BatchNorm statistics and "
        "class outputs (DeepInversion); `synthetic = N` makes N. Validation stays real, to score the students.",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str, info: ValidationInfo) -> str:
        # The built-in sources are names, not paths.
        return v if v in BUILTIN_SOURCES else config_relative(v, info)

    @field_validator("train")
    @classmethod
    def _train(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else config_relative(v, info)

    @field_validator("synthetic", mode="before")
    @classmethod
    def _synthetic_count(cls, v: object) -> object:
        # `synthetic = 2000` reads as the number of inputs; bool is an int in Python, so it is refused first.
        if isinstance(v, bool):
            raise ValueError("give a number of inputs (synthetic = 2000) or a table ({samples = 2000, real = 0})")
        return {"samples": v} if isinstance(v, int) else v

    def identity(self) -> dict:
        """The settings of the source's splits for stage keys, without where a file source lies (its
        digest stands in); what the students train on instead is keyed where it is made
        (`data.training_set`), so a change there never retrains the teacher."""
        dump = self.model_dump(mode="json", exclude={"train", "synthetic"})
        if dump["source"] not in BUILTIN_SOURCES:
            dump["source"] = Path(dump["source"]).suffix or "folder"
        return dump

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int) -> int:
        if v not in (1, 3):
            raise ValueError("must be 1 or 3")
        return v

    @model_validator(mode="after")
    def _training_share(self) -> DataConfig:
        # Said here, at load, naming both fields: later it would read as too few samples.
        total = self.val_fraction + self.calib_fraction
        if total >= 1:
            raise ValueError(
                f"val_fraction ({self.val_fraction:g}) + calib_fraction ({self.calib_fraction:g}) = {total:g} "
                "leaves no samples to train on: make their sum less than 1, e.g. 0.2 and 0.1"
            )
        return self


BUILTIN_SOURCES = (*BUILTIN, "pydoc")
TIER_PREFIX = "tier:"
# A run or tier name becomes one folder name: short enough for every filesystem with the files
# beside it, and never a path of its own.
NAME_MAX = 64


def check_name(value: str) -> str:
    """A run or tier name, which names a folder of the run directory: one path component."""
    if not value.strip():
        raise ValueError("must not be empty: give a short name such as \"small\"")
    if len(value) > NAME_MAX:
        raise ValueError(f"is {len(value)} characters long: use at most {NAME_MAX}")
    if value in (".", "..") or any(c in value for c in "/\\") or not value.isprintable() or value.startswith("."):
        raise ValueError("must be a plain folder name (no '/', '\\', leading '.' or control characters): rename it")
    return value


# A run's or a tier's name: checked wherever a config gives one.
Name = Annotated[str, AfterValidator(check_name)]


class TierConfig(_Section):
    """One budget tier: the budgets a student must meet and the generator that makes it."""

    name: Name = Field(description="Tier name, used for the student's folder and in the report.")
    budget: Budget = Field(description="Limits the student must meet (params, macs, bytes, peak_memory).")
    student: StudentSpec = Field(
        default_factory=Prune,
        description="Generator: prune (default for a PyTorch teacher), scale, family (default for an ONNX, recorded "
        "or query-only teacher), hf (Hugging Face teachers) or custom.",
    )
    teacher: str | None = Field(
        None, description='"tier:NAME": learn from tier NAME\'s student instead of the teacher (a teacher chain).'
    )
    generations: int = Field(
        1, ge=1, le=10,
        description="Self-distillation: each generation after the first is the same architecture, re-initialised "
        "and distilled from the one before; the best by validation accuracy is kept.",
    )
    compare: bool = Field(
        False,
        description="Also train this tier's student on labels alone (same start, seed and settings, no teacher) and "
        "report its score beside the distilled one: what distillation gained.",
    )

    @field_validator("teacher")
    @classmethod
    def _tier_teacher(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith(TIER_PREFIX) or not v.removeprefix(TIER_PREFIX)):
            raise ValueError(f'must be "{TIER_PREFIX}NAME", naming another tier')
        return v

    def budget_text(self) -> str:
        """The tier's limits as progress shows them, as a config says them:
        "params <= 10%, bytes <= 96 KB, latency on raspberry-pi-5 <= 0.3 ms"."""
        b = self.budget
        parts = [
            f"{label} <= {_limit_text(limit, kind)}"
            for label, limit, kind in (
                ("params", b.params, "count"), ("macs", b.macs, "count"),
                ("bytes", b.bytes, "bytes"), ("peak memory", b.peak_memory, "bytes"),
            )
            if limit is not None
        ]
        parts += [f"latency on {target} <= {ms:g} ms" for target, ms in (b.latency_ms or {}).items()]
        return ", ".join(parts)

    @property
    def parent(self) -> str | None:
        """The tier whose student teaches this one, or None when the run's teacher does."""
        return self.teacher.removeprefix(TIER_PREFIX) if self.teacher else None


# Largest first, decimal before binary: 96000 reads "96 KB" and 262144 "256 KiB", as they were written.
_BYTE_UNITS = (("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0))


def _limit_text(limit: Limit, kind: str) -> str:
    """A budget limit as a person writes it: "10%", "200,000", "5M", "96 KB", "256 KiB"."""
    if limit.relative:
        return f"{100 * limit.value:g}%"
    if kind == "count":
        return f"{limit.value / 1e6:g}M" if limit.value >= 1e6 else f"{limit.value:,.0f}"
    for unit, scale in _BYTE_UNITS:
        q = limit.value / scale
        if q >= 1 and abs(q - round(q, 2)) < 1e-9:
            return f"{q:g} {unit}"
    return f"{limit.value:,.0f} B"


class ExportConfig(_Section):
    """ONNX export and its parity check."""

    opset: int = Field(18, ge=13, description="ONNX opset version.")
    simplify: bool = Field(True, description="Simplify the graph with onnxslim.")
    parity_tolerance: float = Field(1e-4, gt=0, description="Largest allowed |onnxruntime - torch| on fp32 outputs.")


class MeasureConfig(_Section):
    """Latency measurement with onnxruntime on this machine."""

    warmup: int = Field(10, ge=0, description="Untimed runs before timing.")
    runs: int = Field(100, ge=1, description="Timed runs at batch 1.")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = onnxruntime's default.")
    throughput_batch: int = Field(32, ge=1, description="Batch size of the throughput measurement.")


class OutputTask(_Section):
    """How one output of a teacher with several is learnt: its task and its weight."""

    task: str | None = Field(None, description="Its task; default: inferred from its shape.")
    weight: float = Field(1.0, gt=0, description="Its weight in the loss and in the run's score.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: object) -> object:
        # `boxes = "regression"` reads as the task alone.
        return {"task": v} if isinstance(v, str) else v

    @field_validator("task")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        return _known_task(v)


def _known_task(v: str | None) -> str | None:
    if v is not None and v not in ARRAY_TASKS:
        raise ValueError(f"unknown task {v!r}: use one of {', '.join(ARRAY_TASKS)}, or leave it out to infer it")
    return v


class RunConfig(_Section):
    """A whole run: teacher, data, budget tiers and how each stage works."""

    name: Name = Field("run", description="Run name; the run directory is runs/<name> unless --out is given.")
    seed: int = Field(0, description="Seed of data splits, initialisation and training order.")
    teacher: TeacherConfig = Field(description="Where the teacher comes from.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data source and splits.")
    tiers: tuple[TierConfig, ...] = Field(min_length=1, description="Budget tiers, one student each.")
    targets: tuple[str, ...] = Field(
        ("host-cpu",),
        min_length=1,
        description="Devices to build for: built-in profile names or paths of .toml profiles (see `edgedistill targets`).",
    )
    addresses: dict[str, str] = Field(
        default_factory=dict,
        description='Devices to measure on, by target name: "user@host:port" for ssh, a serial for adb '
        '(`--address NAME=ADDRESS` adds or overrides one).',
    )
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Distillation of the students.")
    teacher_training: DistillConfig = Field(
        default_factory=lambda: DistillConfig(alpha=0.0),
        description="Training of a teacher with teacher.train = true (labels only).",
    )
    export: ExportConfig = Field(default_factory=ExportConfig, description="ONNX export and parity check.")
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig, description="int8 quantization.")
    measure: MeasureConfig = Field(default_factory=MeasureConfig, description="Latency measurement.")
    task: str | None = Field(
        None,
        description="What the teacher's outputs are: classification, regression, multilabel or segmentation; default: "
        "inferred from their shape and the labels (array teachers; a Hugging Face teacher's task is its own).",
    )
    tasks: dict[str, OutputTask] = Field(
        default_factory=dict,
        description='Each output of a teacher with several (a dict\'s keys, or output_0, output_1, ...): its task and '
        'weight, e.g. boxes = "regression", scores = {task = "classification", weight = 2}; default: inferred from shapes.',
    )
    score: str | None = Field(
        None,
        description='Your own score, "package.module:function" of (outputs, targets) -> float, higher is better; targets '
        "are the labels, or the teacher's outputs without them. Replaces the task's for early stopping, the int8 "
        "tolerance and the report.",
    )
    allow_weak_teacher: bool = Field(
        False,
        strict=True,
        description="Distill a teacher whose validation score is near chance or a constant predictor's "
        "(the run stops on one otherwise).",
    )

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        return _known_task(v)

    @field_validator("targets")
    @classmethod
    def _target_files(cls, targets: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # A .toml is the user's own profile, relative to the config's folder; other names are built in.
        return tuple(config_relative(t, info) if t.endswith(".toml") else t for t in targets)

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, tiers: tuple[TierConfig, ...]) -> tuple[TierConfig, ...]:
        names = [t.name for t in tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique; repeated: {', '.join(dupes)}")
        ordered_tiers(tiers)
        return tiers

    def ordered(self) -> tuple[TierConfig, ...]:
        """The tiers in the order they are made: each after the tier whose student teaches it."""
        return ordered_tiers(self.tiers)


def ordered_tiers(tiers: tuple[TierConfig, ...]) -> tuple[TierConfig, ...]:
    """Tiers ordered so that a tier comes after the tier it learns from (stable otherwise).
    Raises ValueError for a cycle or an unknown tier."""
    by_name = {t.name: t for t in tiers}
    ordered: list[TierConfig] = []
    state: dict[str, str] = {}

    def visit(tier: TierConfig, path: list[str]) -> None:
        if state.get(tier.name) == "done":
            return
        if state.get(tier.name) == "visiting":
            cycle = " -> ".join([*path[path.index(tier.name):], tier.name])
            raise ValueError(f"tier teachers form a cycle ({cycle}): let one of them learn from the teacher")
        state[tier.name] = "visiting"
        if tier.parent is not None:
            if tier.parent not in by_name:
                raise ValueError(f"tier {tier.name} learns from {tier.teacher}, but no tier is named {tier.parent!r}")
            visit(by_name[tier.parent], [*path, tier.name])
        state[tier.name] = "done"
        ordered.append(tier)

    for tier in tiers:
        visit(tier, [])
    return tuple(ordered)


def with_teacher(cfg: RunConfig, path: Path) -> RunConfig:
    """`cfg` with its teacher replaced by the file at `path` (absolute, so it does not depend on the
    config's folder), renamed <name>-<stem> so its run directory is not the original run's."""
    if path.suffix not in (".onnx", ".pt2", ".npz"):
        raise UserError(f"--teacher {path} is not an .onnx, .pt2 or recorded .npz file: give one of those")
    if not path.is_file():
        raise UserError(f"--teacher {path} does not exist: give the path of the teacher file")
    teacher = parse_teacher(str(path.resolve()))
    return cfg.model_copy(update={"teacher": teacher, "name": f"{cfg.name}-{path.stem}"})


def load_config(path: Path) -> RunConfig:
    """Read and validate a TOML run config; any problem is a UserError of one line."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise UserError(f"config file {path} does not exist: give the path of a .toml run config") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} cannot be read ({exc}): check its permissions and encoding") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc}): fix the syntax there") from exc
    return parse_config(raw, str(path), path.parent)


def parse_config(raw: dict, origin: str, base: Path | None = None) -> RunConfig:
    """Validate a config dict; `origin` names it in errors. Relative paths in it are made absolute
    against `base`, the config's folder (left as given without one)."""
    try:
        cfg = RunConfig.model_validate(raw, context={"base": base})
    except ValidationError as exc:
        raise UserError(f"{origin}: {describe(exc)}") from exc
    if (where := _boolean_number(raw, cfg, "")) is not None:
        raise UserError(f"{origin}: {where}: a boolean (true or false) is not a number: write the number itself")
    return cfg


def _boolean_number(raw: object, value: object, where: str) -> str | None:
    """Where the TOML says true or false and the validated config holds a number, if anywhere.

    pydantic reads a bool as 1 or 0 for an int or float field, so `epochs = true` would train one
    epoch. Walking the input beside what it became catches it in every section, whoever defines
    it, while a TOML int still serves for a float field.
    """
    if isinstance(raw, bool):
        return where if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(raw, dict):
        pairs = [(key, item, _member(value, key)) for key, item in raw.items()]
    elif isinstance(raw, list) and isinstance(value, (list, tuple)) and len(raw) == len(value):
        pairs = list(zip(range(len(raw)), raw, value))
    else:
        return None
    for key, item, sub in pairs:
        if (found := _boolean_number(item, sub, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def _member(value: object, key: object) -> object:
    """What the input's `key` became: a model's field or a dict's entry (None when neither)."""
    if isinstance(value, BaseModel):
        return getattr(value, key) if key in type(value).model_fields else None
    return value.get(key) if isinstance(value, dict) else None


def describe(exc: ValidationError) -> str:
    """The first validation error as one line: where, what is wrong, what was expected."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    # A key of the user's own (an address name) may hold a newline: the message stays one line.
    where = "".join(c if c.isprintable() else repr(c)[1:-1] for c in where)
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}: remove it or check its spelling"
    if err["type"] == "missing":
        return f"missing key {where!r}: add it"
    got = err.get("input")
    shown = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list, tuple)) else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg'].removeprefix('Value error, ')}{shown}{more}"
