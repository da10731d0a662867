"""report.md: the same tables as the CLI, for pull requests."""

from __future__ import annotations

from edgedistill.report.rows import COLUMNS, summary_rows
from edgedistill.report.schema import Report


def render(report: Report) -> str:
    """The whole report as Markdown."""
    d = report.data
    lines = [
        f"# edgedistill report: {report.name}",
        "",
        f"Task: {report.task}. Data: `{d['source']}`, input {tuple(d['input_shape'])}, {d['classes']} classes, "
        f"{d['train']} train / {d['val']} validation / {d['calib']} calibration samples (seed {d['seed']}). "
        "Accuracy is on the validation split. Latencies are measured with onnxruntime on this machine "
        "at batch 1 (p50/p99); items/s at the throughput batch.",
        "",
        *_table(COLUMNS, [r.pick(COLUMNS) for r in summary_rows(report)]),
        "",
        "## Budgets",
        "",
        *_table(
            ("student", "budget", "limit", "value", "headroom", "ok", "value from"),
            [
                (s.name, c.name, f"{c.limit:,.0f}", f"{c.value:,.0f}", f"{100 * c.margin:.1f}%", "yes" if c.ok else "**no**", c.source)
                for s in report.students
                for c in s.checks
            ],
        ),
        "",
        "## Quantization",
        "",
        *_table(
            ("student", "method", "accuracy (fp32 → int8)", "kept in float", "why"),
            [
                (
                    s.name, q.method, f"{100 * q.fp32_accuracy:.2f}% → {100 * a.metrics['accuracy']:.2f}%",
                    ", ".join(q.kept_float) or "none", q.reason,
                )
                for s in report.students
                for a in s.artifacts
                if (q := a.quantization) is not None
            ],
        ),
    ]
    if report.failures:
        lines += ["", "## Failures", "", *(f"- {f}" for f in report.failures)]
    return "\n".join(lines) + "\n"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out
