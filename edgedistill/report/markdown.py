"""report.md: the same tables as the CLI, for pull requests."""

from __future__ import annotations

from edgedistill.report.rows import (
    BUDGET_HEADER, COLUMNS, DEPLOYED_HEADER, NOISY_MARK, QUANTIZATION_HEADER, TRAINING_HEADER, artifact_notes,
    assignment_lines, budget_rows, deployed_rows, deployment_findings, headers, marked_noisy, noisy_note,
    quantization_rows, summary_rows, training_rows,
)
from edgedistill.report.schema import Report


def render(report: Report) -> str:
    """The whole report as Markdown."""
    lines = [
        f"# edgedistill report: {report.name}",
        "",
        _about(report),
        *_teacher_outputs(report),
        "",
        *_table(headers(COLUMNS, report.task), [r.pick(COLUMNS) for r in summary_rows(report)]),
        *([""] + [note] if (note := noisy_note(report)) else []),
        "",
        "## Budgets",
        "",
        *_table(
            BUDGET_HEADER,
            [
                (r.student, r.budget, r.limit, r.value, r.headroom, "yes" if r.ok else "**no**", r.source)
                for r in budget_rows(report)
            ],
        ),
        "",
        "## Training",
        "",
        *_table(TRAINING_HEADER, training_rows(report)),
        "",
        "## Quantization",
        "",
        *_table(QUANTIZATION_HEADER, quantization_rows(report)),
        *([""] + [f"- mixed precision: {line}" for line in assignments] if (assignments := assignment_lines(report)) else []),
    ]
    lines += ["", "## Deployed", "", *_deployed(report)]
    if report.data.get("texts"):
        lines += ["", "## Transformers", "", *_transformers(report)]
    lines += ["", "## Target artifacts", "", *_targets(report)]
    if notes := artifact_notes(report):
        lines += ["", "## Notes", "", *(f"- {note} ({'; '.join(f'`{w}`' for w in where)})" for note, where in notes)]
    if report.failures:
        lines += ["", "## Failures", "", *(f"- {f}" for f in report.failures)]
    return "\n".join(lines) + "\n"


def _deployed(report: Report) -> list[str]:
    """Each target's file of each student, and where int8 lost, why, from the graph and the runtime."""
    lines = [
        "Each target deploys the fastest of its files that holds the score (measured where a runner reached it, "
        "predicted elsewhere), and at equal speed the smaller; `bytes` and latency budgets are judged on these files.",
        "",
        *_table(DEPLOYED_HEADER, [(*row[:3], f"`{row[3]}`", row[4]) for row in deployed_rows(report)]),
    ]
    for student, target, findings in deployment_findings(report):
        lines += ["", f"Why int8 is slower for {student} on {target}:", "", *(f"- {f}" for f in findings)]
    return lines


def _about(report: Report) -> str:
    d = report.data
    if d.get("texts"):
        quality = (
            "Cosine is the mean cosine similarity to the teacher's embedding of each validation text; nbr is the "
            "share of each text's 10 nearest neighbours (by the teacher) that the model also ranks in its 10"
            if report.task == "embedding" else "Accuracy is on the validation split"
        )
        return (
            f"Task: {report.task}. Data: `{d['source']}`, texts of at most {d['input_shape'][0]} tokens, "
            f"{d['train']} train / {d['val']} validation / {d['calib']} calibration texts (seed {d['seed']}). "
            f"{quality}. Latencies are measured with onnxruntime on this machine at batch 1 and "
            f"{max(d['seq_lens'])} tokens (p50/p99); items/s at the throughput batch."
        )
    labels = f"{d['classes']} classes" if d.get("classes") else f"labels: {d.get('labels', 'none')}"
    chosen = f" ({d['task_chosen']})" if d.get("task_chosen") else ""
    return (
        f"Task: {report.task}{chosen}. Data: `{d['source']}`, input {tuple(d['input_shape'])}, {labels}, "
        f"{d['train']} train / {d['val']} validation / {d['calib']} calibration samples (seed {d['seed']}). "
        f"Scores ({report.quality or 'accuracy'}) are on the validation split. Latencies are measured with onnxruntime "
        "on this machine at batch 1 (p50/p99); items/s at the throughput batch."
    )


def _teacher_outputs(report: Report) -> list[str]:
    """How the teacher's outputs were had, for teachers that are not run here (records, queries)."""
    t, out = report.teacher, report.teacher.outputs
    if t.kind not in ("recorded", "query") or not out:
        return []
    lines = ["", f"Teacher ({t.kind}, `{t.source}`): {out['form']}; {out['use']}. {out['covered']:,} training inputs have its outputs."]
    if out.get("queries"):
        lines[-1] += f" Queries: {out['queries']['message']}."
    return lines


def _transformers(report: Report) -> list[str]:
    """Latency at each sequence length, layers and width, and the share of the word embeddings."""
    lengths = report.data["seq_lens"]
    rows = [
        ("teacher", "-", "-", f"{a.format} {a.precision}", *(_p50(a, n) for n in lengths), "-")
        for a in report.teacher.artifacts
    ]
    for s in report.students:
        vocab = s.distill.get("vocabulary", {})
        share = vocab.get("kept_embedding_params", vocab.get("embedding_params", 0)) / max(1, s.params)
        embed = f"{100 * share:.0f}% of params"
        if vocab.get("pruned"):
            embed += (f"; {vocab['kept_rows']:,} of {vocab['rows']:,} rows kept, "
                      f"{100 * vocab['held_out_tokens_lost_to_unk']:.1f}% of validation tokens read as [UNK]")
        rows += [
            (s.name, str(s.distill.get("layers", "-")), str(s.distill.get("hidden", "-")), f"{a.format} {a.precision}",
             *(_p50(a, n) for n in lengths), embed)
            for a in s.artifacts
        ]
    header = ("model", "layers", "hidden", "artifact", *(f"p50 ms @ {n} tokens" for n in lengths), "word embeddings")
    return _table(header, rows)


def _p50(a, tokens: int) -> str:
    lat = a.seq_latency.get(str(tokens))
    return f"{lat.p50_ms:.2f}{NOISY_MARK if marked_noisy(lat) else ''}" if lat else "-"


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
