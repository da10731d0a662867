"""report.html: one self-contained page with the report's tables and plots.

Nothing on the page is fetched: the style sheet is inline, the plots are matplotlib SVG written into
the page, and there is no script. The same report always gives the same bytes.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

from edgedistill.report.rows import (
    BUDGET_HEADER, COLUMNS, DEPLOYED_HEADER, NOISY_MARK, QUANTIZATION_HEADER, TRAINING_HEADER, artifact_notes,
    assignment_lines, budget_rows, deployed_rows, deployment_findings, headers, marked_noisy, noisy_note,
    quantization_rows, summary_rows, training_rows,
)
from edgedistill.report.schema import Artifact, Latency, Report, Student

# Students' colours; red is kept for budgets and failures, black for the teacher.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
# Artifact kinds (format + precision) in the size plot: a different family from the students'.
_KIND_PALETTE = ("#3b528b", "#21918c", "#5ec962", "#b5a00b", "#6a3d9a", "#a6761d", "#e7298a", "#666666")
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h", "<", ">")
_BUDGET = "#cf222e"
_NUMERIC = {"params", "MACs", "file", "accuracy", "p50 ms", "p90 ms", "p99 ms", "items/s", "limit", "value", "headroom"}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1240px;padding:0 16px;color:#1f2328}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin:2px 0}.verdict{display:inline-block;padding:1px 10px;border-radius:12px;font-weight:600;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}
.failures{border:2px solid #cf222e;background:#ffebe9;border-radius:6px;padding:4px 16px;margin:16px 0}
.failures h2{color:#cf222e;border:0;margin:6px 0}.failures li{color:#82071e;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.bad td{background:#ffebe9;color:#82071e;font-weight:600}tr.warn td{background:#fff8c5}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px 24px}
figure{margin:0}figure svg{max-width:100%;height:auto}figcaption{color:#57606a;font-size:13px}
"""


def render(report: Report) -> str:
    """The whole report as one HTML page with no external references."""
    body = [
        _header(report),
        _failures(report),
        _section("summary", "Summary", _summary(report)),
        _section("plots", "Plots", _plots(report)),
        _section("budgets", "Budgets", _budgets(report)),
        _section("training", "Training", _table(TRAINING_HEADER, training_rows(report))),
        _section("latency", "Latency by target", _latencies(report)),
        _section("quantization", "Quantization", _quantization(report)),
        _section("deployed", "Deployed", _deployed(report)),
        _section("targets", "Target artifacts", _targets(report)),
        _notes(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e('edgedistill report: ' + report.name)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )


def _e(value: object) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(value))


def _section(ident: str, title: str, content: str) -> str:
    """A titled section; its id is a stable anchor."""
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{content}</section>'


def _header(report: Report) -> str:
    """Run name, verdict, task, data, date and version."""
    d = {k.replace("_shape", ""): "×".join(map(str, v)) if isinstance(v, list) else v for k, v in report.data.items() if k != "texts"}
    data = ", ".join([str(d.pop("source", "?")), *(f"{k} {v}" for k, v in d.items())])
    verdict = ('<span class="verdict pass">passed</span>' if report.passed
               else f'<span class="verdict fail">FAILED: {len(report.failures)} failure(s)</span>')
    targets = ", ".join(t.get("name", "?") for t in report.targets) or "host-cpu"
    scored = (
        "Cosine and neighbour agreement (nbr@10) are against the teacher" if report.task == "embedding"
        else f"Scores ({_e(report.quality or 'accuracy')}) are"
    )
    return (
        f"<header><h1>edgedistill report: {_e(report.name)} {verdict}</h1>"
        f'<p class="meta">Task: {_e(report.task)}. Data: {_e(data)}. Targets: {_e(targets)}.</p>'
        f'<p class="meta">Created {_e(report.created)} by edgedistill {_e(report.edgedistill_version)} '
        f"(report schema {_e(report.schema)}). {scored} on the validation split; every latency "
        "says whether it was measured or predicted.</p></header>"
    )


def _failures(report: Report) -> str:
    """The failures, boxed in red at the top; nothing when the run passed."""
    if not report.failures:
        return ""
    items = "".join(f"<li>{_e(f)}</li>" for f in report.failures)
    return f'<section id="failures" class="failures"><h2>Failures</h2><ul>{items}</ul></section>'


def _deployed(report: Report) -> str:
    """Each target's file of each student and why; where int8 lost for speed, the findings."""
    table = _table(DEPLOYED_HEADER, deployed_rows(report))
    why = "".join(
        f"<p>Why int8 is slower for {_e(student)} on {_e(target)}:</p><ul>{''.join(f'<li>{_e(f)}</li>' for f in findings)}</ul>"
        for student, target, findings in deployment_findings(report)
    )
    return (
        "<p>Each target deploys the fastest of its files that holds the score, and at equal speed the smaller; "
        "<code>bytes</code> and latency budgets are judged on these files.</p>" + table + why
    )


def _notes(report: Report) -> str:
    """What is said of the report's files, each note once with the files it is said of; nothing
    when there is none."""
    notes = artifact_notes(report)
    if not notes:
        return ""
    items = "".join(f"<li>{_e(note)} <small>({_e('; '.join(where))})</small></li>" for note, where in notes)
    return _section("notes", "Notes", f"<ul>{items}</ul>")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], classes: Sequence[str] = ()) -> str:
    """An HTML table; `classes` gives each row a CSS class ("bad", "warn" or "")."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = []
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) else ""
        attr = f' class="{cls}"' if cls else ""
        cells = "".join(f'<td{" class=num" if h in _NUMERIC else ""}>{_e(c)}</td>' for h, c in zip(header, row))
        lines.append(f"<tr{attr}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines) + "\n</tbody></table>\n"


def _summary(report: Report) -> str:
    """The summary table: the same rows and cells as report.md and the CLI."""
    rows = summary_rows(report)
    table = _table(headers(COLUMNS, report.task), [r.pick(COLUMNS) for r in rows], ["" if r.ok else "bad" for r in rows])
    note = noisy_note(report)
    return table + (f'<p class="meta">{_e(note)}</p>\n' if note else "")


def _budgets(report: Report) -> str:
    """Every budget check, named with its unit: limit, value, headroom, verdict and where the value came from."""
    rows = budget_rows(report)
    return _table(
        BUDGET_HEADER,
        [(r.student, r.budget, r.limit, r.value, r.headroom, "yes" if r.ok else "NO", r.source) for r in rows],
        ["" if r.ok else "bad" for r in rows],
    )


def _models(report: Report) -> list[tuple[str, Student | None, tuple[Artifact, ...]]]:
    """(name, student or None for the teacher, artifacts), teacher first."""
    return [("teacher", None, report.teacher.artifacts), *((s.name, s, s.artifacts) for s in report.students)]


def _kind(a: Artifact) -> str:
    """An artifact's kind: format and precision."""
    return f"{a.format} {a.precision}"


def _source(lat: Latency) -> str:
    """Where a latency came from, in full."""
    if lat.source == "predicted":
        band = f"within ×{1 + lat.error_band:.2g} either way" if lat.error_band is not None else "unknown band"
        return f"predicted ({lat.profile} profile, {lat.calibration or 'uncalibrated'}, {band})"
    noisy = "; noisy: rerun on a quiet machine" if marked_noisy(lat) else ""
    stand_ins = f"; {lat.stand_ins}" if lat.stand_ins else ""
    return (f"{lat.source} ({lat.runner} on {lat.device}, {lat.runtime}, {lat.provider}, "
            f"threads {lat.threads or 'default'}, {lat.runs} runs{stand_ins}{noisy})")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _p50(lat: Latency) -> str:
    """A p50 cell: marked when its spread says the machine was busy (the summary's footnote says so)."""
    return _ms(lat.p50_ms) + (NOISY_MARK if marked_noisy(lat) else "")


def _latencies(report: Report) -> str:
    """Every latency figure on every target, with its full source."""
    rows = [(name, _kind(a), target, _p50(lat), _ms(lat.p90_ms), _ms(lat.p99_ms),
             "-" if lat.throughput_per_s is None else f"{lat.throughput_per_s:,.0f}", _source(lat))
            for name, _, arts in _models(report) for a in arts for target, lat in sorted(a.latency.items())]
    return _table(("model", "artifact", "target", "p50 ms", "p90 ms", "p99 ms", "items/s", "source"), rows)


def _quantization(report: Report) -> str:
    """How each quantized artifact was made and what it cost in accuracy."""
    searches = "".join(f"<li>{_e(line)}</li>" for line in assignment_lines(report))
    return _table(QUANTIZATION_HEADER, quantization_rows(report)) + (f"<p>Mixed precision:</p><ul>{searches}</ul>" if searches else "")


def _lint(a: Artifact) -> str:
    """An artifact's lint results per runtime, findings spelled out."""
    return "; ".join(
        f"{r['runtime']}: " + ("clean" if not r["findings"] else f"{len(r['findings'])} finding(s): "
                               + ", ".join(f"{f['node']} ({f['op']}) {f['reason']}" for f in r["findings"]))
        for r in a.lint) or "-"


def _build(a: Artifact) -> str:
    """A TensorRT engine's build status; '-' for other artifacts."""
    if a.build is None:
        return "-"
    if a.build.get("built"):
        return "engine built here"
    return f"not built here ({a.build.get('reason', '?')}); run the script on the device"


def _targets(report: Report) -> str:
    """Each student's files per target, their lint findings and TensorRT build status."""
    rows, classes = [], []
    for s in report.students:
        for a in s.artifacts:
            rows.append((s.name, ", ".join(a.targets) or "-", _kind(a), a.path, _lint(a), _build(a)))
            classes.append("bad" if not a.passed else "warn" if any(r["findings"] for r in a.lint) else "")
        for k in s.skipped:
            rows.append((s.name, ", ".join(k["targets"]), f"{k['format']} {k['precision']}", "not made", "-", k["reason"]))
            classes.append("warn")
    return _table(("student", "targets", "artifact", "file", "lint", "TensorRT build"), rows, classes)


def _plots(report: Report) -> str:
    """Every plot as an inline SVG figure, drawn with matplotlib (imported here: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    style = {"svg.hashsalt": "edgedistill", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10}
    with matplotlib.rc_context(style):
        key, label, _ = _quality(report)
        targets = sorted({t for _, _, arts in _models(report) for a in arts if key in a.metrics for t in a.latency})
        figures = [(_accuracy_latency(report, t), f"{label.capitalize()} against p50 latency on {t} (batch 1). Filled "
                    "markers are measured, hollow ones predicted; the line is the Pareto front.") for t in targets]
        figures += [(_sizes(report), "File size of every artifact (TensorRT scripts left out); dashed: the tier's file budget.")]
        figures += [(_footprint(report, *panel), f"{panel[1]} per model; dashed: the tier's budget; "
                     "hatched: a student that breaks a budget.") for panel in _PANELS]
    return '<div class="plots">' + "".join(f"<figure>{svg}<figcaption>{_e(c)}</figcaption></figure>"
                                           for svg, c in figures) + "</div>\n"


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points nothing else beats on both latency (lower) and accuracy (higher), fastest first."""
    front: list[tuple[float, float]] = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    return front


def _axes(width: float):
    """A pyplot-free figure (nothing global changes) and its one axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 3.4))
    return fig, fig.add_subplot()


def _colour(index: int, s: Student | None) -> str:
    """Black for the teacher (index 0), the palette for students, the same in every plot."""
    return "black" if s is None else _PALETTE[(index - 1) % len(_PALETTE)]


def _log_if_wide(ax, axis: str, values: list[float]) -> None:
    """A log scale when the values span more than 30x."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _quality(report: Report) -> tuple[str, str, float]:
    """The metric plot 1 shows: (key in metrics, axis label, scale): accuracy in %, a sentence
    encoder's cosine to the teacher, or any other task's score (the first of its columns)."""
    if report.task == "embedding":
        return "cosine", "cosine to the teacher", 1.0
    first = next((k for a in report.teacher.artifacts for k in a.metrics), "accuracy")
    if first == "accuracy":
        return "accuracy", "accuracy (%)", 100.0
    return first, f"{first} ({report.quality})" if report.quality else first, 1.0


def _accuracy_latency(report: Report, target: str) -> str:
    """Plot 1 for one target: one point per artifact, teacher as a star, Pareto front as a staircase."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    key, label, scale = _quality(report)
    fig, ax = _axes(4.6)
    kinds = sorted({_kind(a) for _, s, arts in _models(report) if s for a in arts})
    shown_kinds = {_kind(a) for _, s, arts in _models(report) if s for a in arts if target in a.latency}
    points, handles = [], []
    for i, (name, s, arts) in enumerate(_models(report)):
        colour = _colour(i, s)
        shown = [(a, a.latency[target]) for a in arts if target in a.latency and key in a.metrics]
        for a, lat in shown:
            marker, size = ("*", 220) if s is None else (_MARKERS[kinds.index(_kind(a)) % len(_MARKERS)], 60)
            face = colour if lat.source == "measured" else "none"
            ax.scatter([lat.p50_ms], [scale * a.metrics[key]], marker=marker, s=size, facecolors=face,
                       edgecolors=colour, linewidths=1.5, zorder=3)
            points.append((lat.p50_ms, scale * a.metrics[key]))
        if shown:
            handles.append(Line2D([], [], color=colour, marker="*", ls="", markersize=11, label=name) if s is None
                           else Patch(color=colour, label=name))
    if points:  # the edge of the dominated region: up to each front point, then right
        front = _pareto(points)
        xs = [front[0][0], *(p[0] for p in front), max(p[0] for p in points)]
        ys = [min(p[1] for p in points), *(p[1] for p in front), front[-1][1]]
        ax.step(xs, ys, where="post", color="#555", lw=1, zorder=2)
    grey = {"color": "#555", "ls": "", "markersize": 7}
    handles += [Line2D([], [], marker=_MARKERS[k % len(_MARKERS)], label=kind, mfc="#555", **grey)
                for k, kind in enumerate(kinds) if kind in shown_kinds]
    handles += [Line2D([], [], marker="o", label="measured", mfc="#555", **grey),
                Line2D([], [], marker="o", label="predicted", mfc="none", **grey),
                Line2D([], [], color="#555", lw=1, label="Pareto front")]
    _log_if_wide(ax, "x", [p[0] for p in points])
    if ax.get_xscale() == "linear":
        ax.locator_params(axis="x", nbins=5)
    ax.margins(x=0.06, y=0.1)
    ax.set(xlabel="p50 latency (ms, batch 1)", ylabel=label, title=f"{label.split(' (')[0].capitalize()} against latency: {target}")
    return _finish(ax, fig, "both", handles=handles)


def _finish(ax, fig, grid: str = "y", **legend) -> str:
    """Grid, a legend right of the axes, and the figure as an <svg> element with no metadata (no date)."""
    ax.set_axisbelow(True)
    ax.grid(axis=grid, alpha=0.3)
    if legend or ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False, **legend)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata=dict.fromkeys(("Date", "Creator", "Type", "Format")))
    return buf.getvalue()[buf.getvalue().index("<svg"):]


def _limit(s: Student | None, name: str) -> float | None:
    """The absolute limit of one budget of a student's tier, if the tier has it."""
    if s is None:
        return None
    limit = (s.budget.get("limits") or {}).get(name)
    return limit if limit is not None else next((c.limit for c in s.checks if c.name == name), None)


def _bar(ax, x: float, value: float, width: float, text: str, rotation: int = 0, **style) -> None:
    """One bar with its value above it, on a white ground so a budget line cannot hide it."""
    for label in ax.bar_label(ax.bar([x], [value], width, **style), labels=[text], fontsize=7.5, padding=2, rotation=rotation):
        label.set(bbox={"fc": "white", "ec": "none", "pad": 0.6, "alpha": 0.85}, zorder=5)


def _budget_line(ax, x: float, limit: float | None, label: str, labelled: set[str]) -> None:
    """A dashed red budget line over one group of bars; the legend names it once."""
    if limit is not None:
        ax.hlines(limit, x - 0.45, x + 0.45, colors=_BUDGET, linestyles="--", lw=1.5, zorder=4,
                  label=None if label in labelled else label)
        labelled.add(label)


def _model_ticks(ax, names: list[str], values: list[float]) -> None:
    """One tick per model (slanted when many), and a log scale for values that span widely."""
    _log_if_wide(ax, "y", values)
    ax.margins(y=0.18)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")


def _sizes(report: Report) -> str:
    """Plot 2: file bytes per model and artifact (grouped bars), with each tier's file budget."""
    groups = [(n, s, [a for a in arts if not (a.build is not None and not a.build.get("built"))]) for n, s, arts in _models(report)]
    kinds = sorted({_kind(a) for _, _, arts in groups for a in arts})
    width = 0.8 / max([len(arts) for _, _, arts in groups] + [1])
    fig, ax = _axes(4.6)
    labelled: set[str] = set()
    for g, (_, s, arts) in enumerate(groups):
        for j, a in enumerate(arts):
            colour = _KIND_PALETTE[kinds.index(_kind(a)) % len(_KIND_PALETTE)]
            _bar(ax, g + (j - (len(arts) - 1) / 2) * width, a.bytes / 1024, width * 0.92, f"{a.bytes / 1024:,.0f}",
                 rotation=90, color=colour, label=None if _kind(a) in labelled else _kind(a))
            labelled.add(_kind(a))
        limit = _limit(s, "bytes")
        precision = s.budget.get("precision", "") if s else ""
        _budget_line(ax, g, None if limit is None else limit / 1024, f"{precision} file budget".strip(), labelled)
    _model_ticks(ax, [n for n, _, _ in groups], [a.bytes / 1024 for _, _, arts in groups for a in arts])
    ax.set(ylabel="file size (KiB)", title="File size per artifact")
    return _finish(ax, fig)


# Plot 3's figures: (budget name, title, Teacher/Student attribute, unit divisor).
_PANELS = (("params", "Parameters", "params", 1), ("peak_memory", "Peak activation memory (KiB)", "peak_activation_bytes", 1024))


def _footprint(report: Report, budget: str, title: str, attr: str, scale: int) -> str:
    """Plot 3: parameters (or peak activation memory) per model, with the tiers' budgets."""
    fig, ax = _axes(4.6)
    models = _models(report)
    values = [getattr(s or report.teacher, attr) / scale for _, s, _ in models]
    labelled: set[str] = set()
    for g, (_, s, _) in enumerate(models):
        broken = s is not None and not s.within_budget
        _bar(ax, g, values[g], 0.6, f"{values[g]:,.0f}" if values[g] >= 10 else f"{values[g]:.1f}", color=_colour(g, s),
             alpha=0.85, hatch="//" if broken else None, edgecolor=_BUDGET if broken else _colour(g, s))
        limit = _limit(s, budget)
        _budget_line(ax, g, None if limit is None else limit / scale, "tier budget", labelled)
    _model_ticks(ax, [n for n, _, _ in models], values)
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.set_title(title)
    return _finish(ax, fig)
