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
    lines += ["", "## Target artifacts", "", *_targets(report)]
    if report.failures:
        lines += ["", "## Failures", "", *(f"- {f}" for f in report.failures)]
    return "\n".join(lines) + "\n"


def _targets(report: Report) -> list[str]:
    """Which files each target gets, their lint results and how TensorRT engines are built."""
    rows = []
    for s in report.students:
        for a in s.artifacts:
            lint = "; ".join(
                f"{r['runtime']}: " + ("clean" if not r["findings"] else f"{len(r['findings'])} finding(s): "
                + ", ".join(f"{f['node']} ({f['op']}) {f['reason']}" for f in r["findings"]))
                for r in a.lint
            ) or "-"
            build = "-"
            if a.build is not None:
                build = "engine built here" if a.build.get("built") else f"not built here ({a.build['reason']}); run the script on the device"
            rows.append((s.name, ", ".join(a.targets) or "-", f"{a.format} {a.precision}", f"`{a.path}`", lint, build))
        rows += [
            (s.name, ", ".join(k["targets"]), f"{k['format']} {k['precision']}", "not made", "-", k["reason"])
            for k in s.skipped
        ]
    names = ", ".join(t["name"] for t in report.targets) or "host-cpu"
    return [
        f"Targets: {names}.",
        "",
        *_table(("student", "targets", "artifact", "file", "lint", "TensorRT build"), rows),
    ]


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out
