"""The rows of the summary table, shared by report.md and the CLI's final table."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgedistill.compress.budget import LATENCY_PREFIX
from edgedistill.report.schema import Artifact, Check, Latency, QuantizationInfo, Report, Student, device_memory

HOST = "host-cpu"
_SHORT_FORMAT = {"tensorrt": "trt"}
COLUMNS = (
    "model", "generator", "params", "MACs", "artifact", "file", "accuracy",
    "p50 ms", "p99 ms", "items/s", "latency", "deployed on", "budget",
)
# The terminal is often 80 columns wide: the CLI shows these, report.md shows all. The CLI puts the
# generator under the model's name and "score" is the quality without the words its header says.
SHORT_COLUMNS = ("model", "params", "artifact", "file", "score", "p50 ms", "budget")
BUDGET_HEADER = ("student", "budget", "limit", "value", "headroom", "ok", "value from")
NOISY_MARK = "*"


@dataclass(frozen=True)
class Row:
    """One artifact of the teacher or a student, formatted for display."""

    cells: dict[str, str]
    ok: bool

    def pick(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.cells[c] for c in columns)


def summary_rows(report: Report) -> list[Row]:
    """Teacher first, then each student's artifacts; every latency names its source."""
    t = report.teacher
    rows = [_row("teacher", t.source.split(":")[-1], t.params, t.macs, a, "-", True) for a in t.artifacts]
    for s in report.students:
        kind = s.generator.get("kind", "?")
        gen = kind if kind == "custom" else f"{kind} {s.knob:.2f}"
        verdict = "within" if s.within_budget else "BROKEN"
        rows += [_row(s.name, gen, s.params, s.macs, a, verdict, s.within_budget) for a in s.artifacts]
    return rows


def _row(name: str, gen: str, params: int, macs: int, a: Artifact, verdict: str, ok: bool) -> Row:
    lat = a.latency.get(HOST)
    cells = {
        "model": name,
        "generator": gen,
        "params": f"{params:,}",
        "MACs": _si(macs),
        "artifact": short_name(a.format, a.precision),
        "file": "script" if a.build is not None and not a.build.get("built") else _kib(a.bytes),
        "accuracy": quality(a.metrics),
        "score": quality(a.metrics, short=True),
        "p50 ms": f"{lat.p50_ms:.3f}{NOISY_MARK if marked_noisy(lat) else ''}" if lat else "-",
        "p99 ms": f"{lat.p99_ms:.3f}" if lat and lat.p99_ms is not None else "-",
        "items/s": f"{lat.throughput_per_s:,.0f}" if lat and lat.throughput_per_s is not None else "-",
        "latency": _latency_source(lat) if lat else _unmeasured(a),
        "deployed on": ", ".join(a.deployed_for) or "-",
        "budget": verdict if a.passed else f"{verdict}, parity FAILED",
    }
    return Row(cells, ok and a.passed)


def headers(columns: tuple[str, ...], task: str) -> tuple[str, ...]:
    """Column titles for a report's task: a classifier's quality column is accuracy, a sentence
    encoder's cosine and neighbour agreement, any other task's its score (each cell names its metric)."""
    title = {"embedding": "cos · nbr@10", "classification": "accuracy"}.get(task, "score")
    return tuple(title if c in ("accuracy", "score") else c for c in columns)


def quality(metrics: dict[str, float], short: bool = False) -> str:
    """An artifact's quality as tables show it: accuracy in %, or a sentence encoder's cosine to
    the teacher and neighbour agreement; `short` leaves out the words "cos" and "nbr" (for a
    table whose header names them)."""
    if "accuracy" in metrics:
        return f"{100 * metrics['accuracy']:.2f}%"
    if "cosine" in metrics:
        cos, nbr = ("", "·") if short else ("cos ", " · nbr ")
        agreement = next((f"{nbr}{v:.3f}" for k, v in metrics.items() if k.startswith("neighbours@")), "")
        return f"{cos}{metrics['cosine']:.4f}{agreement}"
    if "agreement" in metrics and len(metrics) == 1:
        return f"{100 * metrics['agreement']:.2f}% agree"
    return next((f"{k} {v:.4f}" for k, v in metrics.items()), "-")


def score_change(fp32_score: float, metrics: dict[str, float]) -> str:
    """fp32 → quantized, in the quantizer's own score: accuracy (%) or cosine to the teacher."""
    if "accuracy" in metrics:
        return f"{100 * fp32_score:.2f}% → {100 * metrics['accuracy']:.2f}%"
    if "cosine" in metrics:
        return f"cos {fp32_score:.4f} → {metrics['cosine']:.4f}"
    if "agreement" in metrics and len(metrics) == 1:
        return f"{100 * fp32_score:.2f}% → {100 * metrics['agreement']:.2f}% agreement"
    key, value = next(iter(metrics.items()), ("score", float("nan")))
    return f"{key} {fp32_score:.4f} → {value:.4f}"


def short_name(fmt: str, precision: str) -> str:
    """An artifact kind as tables show it: "onnx int8", "trt fp16"."""
    return f"{_SHORT_FORMAT.get(fmt, fmt)} {precision}"


def _kib(n: int) -> str:
    # Past 10 MiB a transformer's file reads shorter, and as precisely, in MiB.
    if n >= 10 * 1024**2:
        return f"{n / 1024**2:,.1f} MiB"
    return f"{n / 1024:,.0f} KiB" if n >= 10240 else f"{n / 1024:.1f} KiB"


def marked_noisy(lat: Latency) -> bool:
    """Whether a table marks this figure: a measurement the latency service found noisy."""
    return lat.source == "measured" and lat.noisy


def noisy_note(report: Report) -> str | None:
    """The footnote for figures marked noisy in a table; None when no figure is."""
    figures = [lat for _, arts in _artifacts(report) for a in arts for lat in a.latency.values() if marked_noisy(lat)]
    if not figures:
        return None
    spreads = [lat.spread_p99 for lat in figures if lat.spread_p99 is not None]
    loads = [lat.load for lat in figures if lat.load is not None]
    said = f"p99/p50 up to {max(spreads):.1f}x" if spreads else "p99/p50"
    if loads:
        said += f", load {max(loads):.2f} per core"
    return f"{NOISY_MARK} noisy: the spread ({said}) says the machine was busy; rerun on a quiet machine"


def artifact_notes(report: Report) -> list[tuple[str, tuple[str, ...]]]:
    """Each distinct note of the report's files (a weak teacher distilled anyway, a score taken
    from a source file), with the files it is said of ("teacher: teacher/teacher.onnx"), in order."""
    notes: dict[str, list[str]] = {}
    for model, artifacts in _artifacts(report):
        for a in artifacts:
            for note in a.notes:
                notes.setdefault(note, []).append(f"{model}: {a.path}")
    return [(note, tuple(where)) for note, where in notes.items()]


def _artifacts(report: Report) -> list[tuple[str, tuple[Artifact, ...]]]:
    return [("teacher", report.teacher.artifacts), *((s.name, s.artifacts) for s in report.students)]


@dataclass(frozen=True)
class BudgetRow:
    """One budget check of a student as people read it: the check named with its unit, limit and
    value in that unit, and where the value came from."""

    student: str
    budget: str
    limit: str
    value: str
    headroom: str
    ok: bool
    source: str


def budget_rows(report: Report) -> list[BudgetRow]:
    """Every budget check of every student, formatted for report.md, report.html and the CLI."""
    return [_budget_row(s, c) for s in report.students for c in s.checks]


def _budget_row(s: Student, c: Check) -> BudgetRow:
    precision = s.budget.get("precision", "")
    label, fmt = _BUDGET_UNITS.get(c.name, (c.name, _plain))
    if c.name == "bytes":
        # Judged on the deployed files (any precision), or in an older report at the budget's precision.
        label = "deployed file size (KiB)" if c.source.startswith("largest deployed file") else f"{precision} file size (KiB)".strip()
    elif c.name.startswith(LATENCY_PREFIX):
        label, fmt = f"p50 latency on {c.name.removeprefix(LATENCY_PREFIX)} (ms)", _ms
    elif (device := device_memory(c.name)) is not None:
        memory, target = device
        label, fmt = (f"file in {target}'s flash (KiB)" if memory == "flash" else f"arena in {target}'s SRAM (KiB)"), _kib_number
    known = c.value is not None and not math.isnan(c.value)  # a latency nothing measured nor predicted
    return BudgetRow(
        s.name, label, fmt(c.limit), fmt(c.value) if known else "none",
        f"{100 * c.margin:.1f}%" if known else "-", c.ok, c.source,
    )


def _plain(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3g}"


def _kib_number(v: float) -> str:
    return f"{v / 1024:,.1f}"


def _ms(v: float) -> str:
    # 3 significant digits at least: a 0.069 ms model under a 0.3 ms limit must not read "0 | 0".
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


# budget name -> (label with its unit, value format)
_BUDGET_UNITS = {
    "params": ("params", lambda v: f"{v:,.0f}"),
    "macs": ("MACs", lambda v: _si(v)),
    "bytes": ("file size (KiB)", _kib_number),
    "peak_memory": ("peak memory (KiB)", _kib_number),
}


def _latency_source(lat: Latency) -> str:
    """A latency cell's source, with what stands in for a percentile its tool does not print."""
    stand_ins = f"; {lat.stand_ins}" if lat.stand_ins else ""
    return f"{lat.source} ({lat.runner}, {lat.provider}, threads {lat.threads or 'default'}{stand_ins})"


def _unmeasured(a: Artifact) -> str:
    if a.build is not None and not a.build.get("built"):
        return "not measured: the engine is built on the device (trtexec script)"
    return "not measured here"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


QUANTIZATION_HEADER = ("student", "artifact", "method", "score (fp32 → quantized)", "kept in float", "post-training → QAT", "why")


def quantization_rows(report: Report) -> list[tuple[str, ...]]:
    """How each quantized file was made, what it cost in score and, where quantization-aware
    training ran, post-training and QAT int8 side by side with the one that shipped."""
    return [
        (s.name, short_name(a.format, a.precision), q.method, score_change(q.fp32_accuracy, a.metrics),
         _in_float(q), _qat_cell(q.qat, a.metrics), q.reason if q.qat is None else f"{q.reason}; {q.qat['why']}")
        for s in report.students for a in s.artifacts if (q := a.quantization) is not None
    ]


def _in_float(q: QuantizationInfo) -> str:
    ops = [f"every {op}" for op in q.float_ops]
    return ", ".join([*ops, *q.kept_float]) or "none"


def assignment_lines(report: Report) -> list[str]:
    """One line per mixed-precision search, where layers had to stay in float: what it kept in
    float, its score and file size, and whether it held."""
    return [
        f"{s.name} {short_name(a.format, a.precision)}, {m['order']}: {len(m['kept_float'])} layer(s) in float "
        f"({', '.join(m['kept_float'])}), {quality({next(iter(a.metrics), 'accuracy'): m['accuracy']})}, "
        f"{m['bytes']:,} B, {'holds' if m['holds'] else 'does not hold'}"
        for s in report.students for a in s.artifacts if a.quantization is not None for m in a.quantization.assignments
    ]


def _qat_cell(qat: dict | None, metrics: dict[str, float]) -> str:
    if qat is None:
        return "-"
    metric = next(iter(metrics), "accuracy")
    post = f"{quality({metric: qat['post_training_accuracy']})} ({len(qat['post_training_kept_float'])} in float)"
    trained = f"{quality({metric: qat['qat_accuracy']})} ({len(qat['qat_kept_float'])} in float)"
    return f"{post} → {trained}; {qat['shipped']} shipped"


DEPLOYED_HEADER = ("student", "target", "deploys", "file", "why")


def deployed_rows(report: Report) -> list[tuple[str, ...]]:
    """Which file each target deploys of each student, and why that one."""
    return [
        (s.name, d.target, short_name(d.format, d.precision), d.path, d.reason) for s in report.students for d in s.deployed
    ]


def deployed_summary(report: Report) -> list[tuple[str, str]]:
    """(student, "host-cpu onnx int8 · pixel-8 ort fp32 (int8 slower there)") for the terminal."""
    return [
        (s.name, " · ".join(f"{d.target} {short_name(d.format, d.precision)}{' (int8 slower there)' if d.findings else ''}" for d in s.deployed))
        for s in report.students if s.deployed
    ]


def deployment_findings(report: Report) -> list[tuple[str, str, tuple[str, ...]]]:
    """(student, target, findings) wherever int8 was passed over for being slower, with why."""
    return [(s.name, d.target, d.findings) for s in report.students for d in s.deployed if d.findings]


TRAINING_HEADER = ("student", "learned from", "epochs (best / run)", "threads", "augmentation", "teacher outputs", "labels only → distilled")


def training_rows(report: Report) -> list[tuple[str, ...]]:
    """How each student was trained, and (where its tier compared) what distillation gained over
    the same student trained on labels alone."""
    rows = []
    for s in report.students:
        d = s.distill
        online = f"{d['teacher_outputs']} ({d['teacher_online_s']:.1f} s)" if "teacher_online_s" in d else d.get("teacher_outputs", "-")
        rows.append((
            s.name, d.get("teacher", "teacher"), f"{d.get('best_epoch', '-')} / {d.get('epochs_run', '-')}",
            str(d.get("threads", "-")), d.get("augment", "none"), online,
            _gained(d.get("labels_only"), s.metrics),
        ))
    return rows


def _gained(alone: float | None, metrics: dict[str, float]) -> str:
    if alone is None:
        return "-"
    metric = next(iter(metrics))
    return f"{quality({metric: alone})} → {quality({metric: metrics[metric]})} ({100 * (metrics[metric] - alone):+.2f} pt)"


def distillation_gains(report: Report) -> list[tuple[str, str]]:
    """"labels only → distilled (gain)" of each student whose tier compared the two."""
    return [(s.name, _gained(s.distill["labels_only"], s.metrics)) for s in report.students if "labels_only" in s.distill]
