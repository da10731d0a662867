"""The rows of the summary table, shared by report.md and the CLI's final table."""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.report.schema import Artifact, Report

HOST = "host-cpu"
_SHORT_FORMAT = {"tensorrt": "trt"}
COLUMNS = (
    "model", "generator", "params", "MACs", "artifact", "file", "accuracy",
    "p50 ms", "p99 ms", "items/s", "latency", "budget",
)
# The terminal is often 80 columns wide: the CLI shows these, report.md shows all.
SHORT_COLUMNS = ("model", "generator", "params", "artifact", "file", "accuracy", "p50 ms", "budget")


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
        "p50 ms": f"{lat.p50_ms:.3f}" if lat else "-",
        "p99 ms": f"{lat.p99_ms:.3f}" if lat and lat.p99_ms is not None else "-",
        "items/s": f"{lat.throughput_per_s:,.0f}" if lat and lat.throughput_per_s is not None else "-",
        "latency": f"{lat.source} ({lat.runner}, {lat.provider}, threads {lat.threads or 'default'})" if lat else _unmeasured(a),
        "budget": verdict if a.passed else f"{verdict}, parity FAILED",
    }
    return Row(cells, ok and a.passed)


def headers(columns: tuple[str, ...], task: str) -> tuple[str, ...]:
    """Column titles for a report's task: a sentence encoder's quality column is cosine and
    neighbour agreement, not accuracy."""
    return tuple("cos · nbr@10" if c == "accuracy" and task == "embedding" else c for c in columns)


def quality(metrics: dict[str, float]) -> str:
    """An artifact's quality as tables show it: accuracy in %, or a sentence encoder's cosine to
    the teacher and neighbour agreement."""
    if "accuracy" in metrics:
        return f"{100 * metrics['accuracy']:.2f}%"
    if "cosine" in metrics:
        nbr = next((f" · nbr {v:.3f}" for k, v in metrics.items() if k.startswith("neighbours@")), "")
        return f"cos {metrics['cosine']:.4f}{nbr}"
    if "agreement" in metrics:
        return f"{100 * metrics['agreement']:.2f}% agree"
    return "-"


def score_change(fp32_score: float, metrics: dict[str, float]) -> str:
    """fp32 → quantized, in the quantizer's own score: accuracy (%) or cosine to the teacher."""
    if "accuracy" in metrics:
        return f"{100 * fp32_score:.2f}% → {100 * metrics['accuracy']:.2f}%"
    if "cosine" in metrics:
        return f"cos {fp32_score:.4f} → {metrics['cosine']:.4f}"
    return f"{100 * fp32_score:.2f}% → {100 * metrics.get('agreement', float('nan')):.2f}% agreement"


def short_name(fmt: str, precision: str) -> str:
    """An artifact kind as tables show it: "onnx int8", "trt fp16"."""
    return f"{_SHORT_FORMAT.get(fmt, fmt)} {precision}"


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 10240 else f"{n / 1024:.1f} KiB"


def _unmeasured(a: Artifact) -> str:
    if a.build is not None and not a.build.get("built"):
        return "not measured: the engine is built on the device (trtexec script)"
    return "not measured here"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"
