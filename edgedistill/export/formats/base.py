"""The format seam: what a device loads, as registered entries.

An entry (`DeployFormat`) names a format, the precisions it makes, the runtime its source is
linted for and whether its file runs here (with onnxruntime, or with the format's own runtime,
`HereRuntime`); its `make` builds the file from the ONNX file of that precision (`OnnxFiles`), or
from the student in PyTorch (`Sources.model`), and checks it against that source. `FORMATS` holds the
registered entries by name; a new format is one new module in this package plus its
`register(...)` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
from torch import nn

from edgedistill.compress.budget import Precision
from edgedistill.compress.quantize import Int8StaticSymmetric, QuantResult, quantize
from edgedistill.data.text import FixedLength
from edgedistill.errors import UserError
from edgedistill.export.eager import MAX_SAMPLES, eager_rows, forward_names, model_inputs
from edgedistill.export.fp16 import Fp16Artifact, to_fp16
from edgedistill.export.lint import LintResult, lint
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.export.tensorrt import TrtArtifact
from edgedistill.ortsession import Feed, feed_slice, open_session, run_batched


QAT_NOTE = "made from the student trained with int8 in the loop (QAT), as the run's int8 ONNX is"


@dataclass(frozen=True)
class Sources:
    """What deployment artifacts are made from: a student's ONNX files, and real inputs to check
    them (`val_x`, scored by `score`, higher is better) and to calibrate int8 (`calib_x`). The
    inputs are one array, or arrays by input name for a graph with named feeds (a tokenizer's
    `input_ids` and `attention_mask`).

    `fp32` None: only an int8 model is at hand (`edgedistill export` of an int8 file), and only
    int8 artifacts can be made, from that file as it is. `make_int8` False skips every int8
    artifact (quantization is off for the run). `timing_cache` None keeps TensorRT's timing
    cache beside `folder`, shared by a run's students. `model` is the student in PyTorch, which
    formats made by `torch.export` convert (None: only ONNX files are at hand, as for
    `edgedistill export` or the search's size probe). `fixed` pads named feeds to the one
    sequence length that files made at fixed shapes take (a transformer's `.pte`); None for one
    array. `int8_dynamic`: the run's int8 ONNX quantizes activations at run time (int8-dynamic
    won its methods), which the int8 files made from the student then do too, where their
    targets' runtime runs such files: not those of `full_integer_only` (LiteRT Micro's, by
    target name), whose int8 files stay full-integer. `int8_fp32` and `int8_model`: where the
    run's int8 comes from a student of its own (trained with int8 in the loop, QAT), that
    student's fp32 ONNX and PyTorch model, which every int8 file is made from (`student`), and
    `int8_reference` the fp32 score that student's int8 is held to: the student's before QAT.
    """

    fp32: Path | None
    int8: Path | None
    folder: Path
    val_x: Feed
    calib_x: Feed
    score: Callable[[np.ndarray], float]
    symmetric: Int8StaticSymmetric
    max_drop: float = 0.01
    make_int8: bool = True
    timing_cache: Path | None = None
    model: nn.Module | None = None
    fixed: FixedLength | None = None
    int8_dynamic: bool = False
    full_integer_only: tuple[str, ...] = ()
    int8_fp32: Path | None = None
    int8_model: nn.Module | None = None
    int8_reference: float | None = None

    def student(self, precision: Precision) -> nn.Module | None:
        """The student in PyTorch that a file at `precision` is made from."""
        return self.int8_model if precision == "int8" and self.int8_model is not None else self.model

    def student_notes(self, precision: Precision) -> tuple[str, ...]:
        """What a file at `precision` says of the student it was made from."""
        qat = self.int8_model is not None or self.int8_fp32 is not None
        return (QAT_NOTE,) if precision == "int8" and qat else ()

    @property
    def fixed_length(self) -> int | None:
        """The sequence length files made at fixed shapes take; None for one input array."""
        return None if self.fixed is None or not isinstance(self.val_x, Mapping) else self.fixed.length

    def at_fixed_shape(self, x: Feed) -> Feed:
        """`x` as files made at fixed shapes take it: named feeds padded to `fixed`'s length."""
        return self.fixed.fit(x) if self.fixed is not None and isinstance(x, Mapping) else x


@dataclass(frozen=True)
class DeployArtifact:
    """One file made for one or more targets. `path` is the file a device loads (for TensorRT
    without a GPU here: the trtexec script that builds the engine on the device); `source` is
    the ONNX it was made from, or for a file made from the student in PyTorch the student's ONNX
    of the same precision, which its latency on a device is predicted from and which is linted.
    `notes` say what could not be checked here (a Core ML package, which only macOS runs); the
    report and `edgedistill export` print them beside the file. `arena_bytes`: the activation
    memory the file's own runtime plans for it at batch 1, where the format knows it (LiteRT's,
    for microcontroller targets' SRAM). `seq_len`: the one sequence length a file made at fixed
    shapes takes (a transformer's `.pte`), which it is timed and priced at; None where its axes
    are dynamic or it takes no sequence."""

    format: str
    precision: str
    path: Path
    source: Path
    targets: tuple[str, ...]
    parity: Parity
    lint: tuple[LintResult, ...]
    build: TrtArtifact | None = None
    quantization: QuantResult | None = None
    notes: tuple[str, ...] = ()
    arena_bytes: int | None = None
    seq_len: int | None = None


@dataclass(frozen=True)
class OnnxFiles:
    """The ONNX file of each precision that one `deploy` builds its formats from. The fp16 and
    symmetric int8 files are made on first need and then shared, so a target set that wants an
    fp16 ONNX and an fp16 TensorRT engine converts once."""

    src: Sources

    @property
    def folder(self) -> Path:
        """Where the files made from the sources go."""
        return self.src.folder

    def at(self, precision: Precision) -> Path:
        """The ONNX file at `precision`: the run's fp32 or int8 file, or the fp16 one made here."""
        if precision == "fp16":
            return self.fp16.path
        path = self.src.fp32 if precision == "fp32" else self.src.int8
        if path is None and precision == "fp32":
            raise UserError(f"{self.src.int8.name} is an int8 model: fp32 and fp16 files need the fp32 model, give that")
        if path is None:
            raise UserError("there is no int8 ONNX file to make int8 artifacts from: quantize the fp32 model first")
        return path

    @cached_property
    def fp16(self) -> Fp16Artifact:
        """The fp16 ONNX, converted from fp32 and checked against it on the validation inputs."""
        return to_fp16(self.at("fp32"), self.folder / "model.fp16.onnx", self.src.val_x)

    @cached_property
    def int8_error(self) -> float:
        """The largest distance of the run's int8 ONNX from the student in fp32 on the validation
        samples a converted file is checked on: the bar of a dynamic-range file made from the
        student (`export.eager.dynamic_tolerance`)."""
        x, model = feed_slice(self.src.val_x, 0, MAX_SAMPLES), self.src.student("int8")
        onnx = run_batched(open_session(self.at("int8")), x)
        return max_abs_err(onnx, eager_rows(model, model_inputs(model, x)))

    @cached_property
    def symmetric(self) -> tuple[Path, QuantResult | None]:
        """A symmetric static int8 Q/DQ file (the form TensorRT takes) and how it was quantized,
        from the fp32 ONNX the run's int8 came from, held to the score that int8 was held to; with
        no fp32 model, the given int8 file as it is (its consumer checks its form)."""
        s = self.src
        if s.fp32 is None:
            return self.at("int8"), None
        quant = quantize(
            s.int8_fp32 or s.fp32, s.folder / "model.int8-symmetric.onnx", (s.symmetric,), s.calib_x, s.score, s.val_x,
            s.max_drop, reference=s.int8_reference if s.int8_fp32 is not None else None,
        )
        return quant.path, quant


@dataclass(frozen=True)
class HereRuntime:
    """A format's own runtime on this machine, for files onnxruntime cannot open: `name` labels
    its figures, `suffix` is its files' ending, `outputs` runs a file on every sample of a feed
    (one array, or named feeds of which it takes those it names), `timed` gives the call that
    is timed: the file on one batch-1 input, handed over once in the file's own form (an int8
    file's input already quantized, as an app's native code would), `input_shape` that input's
    shape, and `input_names` the named feeds a file takes, in order (none for one input array)."""

    name: str
    suffix: str
    outputs: Callable[[Path, Feed], np.ndarray]
    timed: Callable[[Path, np.ndarray], Callable[[], object]]
    input_shape: Callable[[Path], tuple[int, ...]]
    input_names: Callable[[Path], tuple[str, ...]]


@dataclass(frozen=True)
class DeployFormat(ABC):
    """One registered format.

    `precisions` are those `make` makes; `staged` those of this format that the run's export and
    quantize stages make instead (the fp32 and int8 ONNX), which `deploy` passes over.
    `lint_runtime` names the linter (`edgedistill.export.lint`) the file is checked with, or
    None: an ONNX linter checks the source (`lint_source`), one of converted files (Core ML's)
    the file made. `runs_here`: the file is evaluated and timed on this machine, by onnxruntime
    or, where `here` is given, by that runtime.
    `symmetric_int8`: int8 is made from a symmetric Q/DQ quantization of fp32 of its own
    (`OnnxFiles.symmetric`), not from the run's int8 ONNX.
    `revision` and `converters` (the distributions `make` converts with) enter the key of the
    run's deploy stage (`made_with`), so a resumed run remakes the files when what `make` makes
    changes: bump `revision` with such a change; installing, upgrading or removing a converter
    changes the key by itself.
    """

    name: str
    precisions: tuple[Precision, ...]
    lint_runtime: str | None
    runs_here: bool
    staged: tuple[Precision, ...] = ()
    symmetric_int8: bool = False
    here: HereRuntime | None = None
    revision: int = 1
    converters: tuple[str, ...] = ()

    @abstractmethod
    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """Make this format's file at `precision` for `targets`, checked against its source; raise
        `edgedistill.errors.Unmade` where a converter refuses this student."""

    def unavailable(self, src: Sources) -> str | None:
        """Why this format cannot be made from `src` here (a runtime not installed, no student in
        PyTorch), as one line with the fix; None when it can."""
        return None

    def source(self, precision: Precision, files: OnnxFiles) -> tuple[Path, QuantResult | None]:
        """The ONNX file this format makes `precision` from, and how it was quantized when made here."""
        if precision == "int8" and self.symmetric_int8:
            return files.symmetric
        return files.at(precision), None

    def require(self, precision: str) -> None:
        """Raise a UserError naming this format's precisions when it has no `precision`."""
        known = (*self.staged, *self.precisions)
        if precision not in known:
            raise UserError(f"{self.name} has no precision {precision!r}: use one of {', '.join(known)}")

    def lint_source(self, source: Path) -> tuple[LintResult, ...]:
        """The lint of `source` for this format's runtime; none where it has no linter."""
        return () if self.lint_runtime is None else (lint(source, self.lint_runtime),)


DYNAMIC_NOTE = "int8 dynamic-range, as the run's int8 ONNX: int8 weights, activations quantized at run time"


@dataclass(frozen=True)
class Int8Scheme:
    """How an int8 file made from the student quantizes its activations: at run time (`dynamic`,
    as the run's int8 ONNX does where int8-dynamic won) or calibrated once (full-integer), and
    the note that says so where the choice is not the plain full-integer one."""

    dynamic: bool
    notes: tuple[str, ...] = ()


def int8_scheme(src: Sources, precision: Precision, targets: tuple[str, ...], full_integer_runtime: bool) -> Int8Scheme:
    """The scheme of a file at `precision` for `targets`: dynamic where the run's int8 is,
    unless the format's runtime has no dynamic kernels on one of them (`full_integer_runtime`
    and a target of `src.full_integer_only`)."""
    if precision != "int8" or not src.int8_dynamic:
        return Int8Scheme(False)
    static = [t for t in targets if t in src.full_integer_only] if full_integer_runtime else []
    if static:
        return Int8Scheme(False, (
            f"int8 full-integer although the run's int8 ONNX quantizes activations at run time: "
            f"{', '.join(static)} runs full-integer files only",
        ))
    return Int8Scheme(True, (DYNAMIC_NOTE,))


def from_student_unavailable(src: Sources, what: str) -> str | None:
    """Why `what` (a format converted from the student in PyTorch by `torch.export`) cannot be
    made from `src`: no student in PyTorch (only ONNX files at hand), or named feeds that do not
    hold every input the student's forward names (it is converted taking those, in its order);
    None when it can."""
    if src.model is None:
        return f"{what} is made from the student in PyTorch, not from an ONNX file: give a run's student folder or a .pt2 program"
    if isinstance(src.val_x, np.ndarray):
        return None
    names = forward_names(src.model)
    missing = [n for n in names if n not in src.val_x]
    if not names or missing:
        takes = ", ".join(names) or "no named input"
        return (
            f"{what} is made from the named inputs the student's forward takes ({takes}); "
            f"the inputs given ({', '.join(src.val_x)}) lack {', '.join(missing) or 'them'}"
        )
    return None


FORMATS: dict[str, DeployFormat] = {}


def register(entry: DeployFormat) -> DeployFormat:
    """Register `entry` under its name; formats are kept (and made) in registration order."""
    FORMATS[entry.name] = entry
    return entry


def format_for(name: str) -> DeployFormat:
    """The registered format called `name`; a UserError naming the known ones otherwise."""
    if name not in FORMATS:
        raise UserError(f"format {name!r} is unknown: use one of {', '.join(format_names())}")
    return FORMATS[name]


def here_runtime(path: Path) -> HereRuntime | None:
    """The runtime of the format whose files end as `path` does, where that is not onnxruntime."""
    return next((f.here for f in FORMATS.values() if f.here is not None and f.here.suffix == path.suffix), None)


def made_with(names: Iterable[str]) -> dict[str, dict[str, object]]:
    """What the formats called `names` are made with: each one's revision and the installed
    version of each of its converters (None where it is not installed)."""
    wanted = set(names)
    return {
        name: {"revision": f.revision, "converters": {dist: _installed(dist) for dist in f.converters}}
        for name, f in FORMATS.items() if name in wanted
    }


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def format_names() -> tuple[str, ...]:
    """The names of the registered formats, in registration order."""
    return tuple(FORMATS)
