"""The gate: judge a report's students against their budgets, for a CI step that must fail the build.

Every size budget of a student's tier is judged on the report's own check (its value and its source,
as the report says where the value came from); budgets given on the command line replace or add
limits and are judged on the student's figures in the report. A latency budget, the tier's or one
given, is judged on the p50 of the artifacts' latencies by the run's rule (`measure.final_checks`),
so its source can name the runner and the file. An artifact that failed its parity check and a
report that calls a student over budget without a failing check are broken verdicts too.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgedistill.compress.budget import LATENCY_PREFIX, Budget, Footprint, Limit, latency_name, parse_quantity, resolve
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_path
from edgedistill.report import schema

# The budgets a tier can set, with the kind of quantity each takes (as `Budget` parses them).
BUDGET_KINDS = {"params": "count", "macs": "count", "bytes": "bytes", "peak_memory": "bytes"}
LATENCY = "latency_ms"
ALL_TIERS = "*"
_LATENCY_FORM = f"TIER.{LATENCY}.TARGET=MS, e.g. fifth.{LATENCY}.raspberry-pi-5=5 (p50 milliseconds at batch 1)"
_FORM = f"TIER.NAME=VALUE, e.g. fifth.params=20000, fifth.bytes=64KB or '*.params=30%', or {_LATENCY_FORM}"


@dataclass(frozen=True)
class BudgetOverride:
    """A limit given on the command line: budget `name` of `tier` ("*": every tier).

    `name` is as the report's checks name it: "bytes", or "latency_ms:raspberry-pi-5" for a latency.
    """

    tier: str
    name: str
    limit: Limit

    @property
    def label(self) -> str:
        """As the user wrote its key: "fifth.bytes", "fifth.latency_ms.raspberry-pi-5"."""
        target = latency_target(self.name)
        return f"{self.tier}.{self.name}" if target is None else f"{self.tier}.{LATENCY}.{target}"


@dataclass(frozen=True)
class Verdict:
    """One budget of one student judged: `value` against `limit`, with where the value came from.

    `value` is None when the report holds no figure to judge (a budget without a check, a check
    whose value was not a number, the report's own over-budget flag with no failing check behind it).
    """

    student: str
    tier: str
    budget: str
    limit: float
    value: float | None
    ok: bool
    source: str

    def describe(self) -> str:
        """One phrase: "value 12,345 > limit 10,000 (source: student in PyTorch)"."""
        if self.value is None:
            return f"no value (source: {self.source})"
        sign = "<=" if self.ok else ">"
        return f"value {format_number(self.value)} {sign} limit {format_number(self.limit)} (source: {self.source})"


@dataclass(frozen=True)
class GateResult:
    """Every verdict of the selected students, in report order."""

    verdicts: tuple[Verdict, ...]

    @property
    def broken(self) -> tuple[Verdict, ...]:
        """The verdicts that fail."""
        return tuple(v for v in self.verdicts if not v.ok)

    @property
    def passed(self) -> bool:
        """True when every budget holds."""
        return not self.broken


def load_report(path: Path) -> schema.Report:
    """Read a report.json; anything that is not one is a UserError naming what is wrong."""
    fix = "give the report.json that `edgedistill run` wrote (runs/<name>/report.json)"
    try:
        report = schema.load(path)
    except FileNotFoundError as exc:
        raise UserError(f"report {path} does not exist: {fix}") from exc
    except OSError as exc:
        raise UserError(f"cannot read report {path} ({exc.strerror}): {fix}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a text file: {fix}") from exc
    except json.JSONDecodeError as exc:
        # A truncated file ends here too ("Expecting ',' delimiter: line 40 column 1").
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): {fix}") from exc
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise UserError(f"{path} is not an {schema.SCHEMA} report ({_why_not(path, exc)}): {fix}") from exc
    if report.schema != schema.SCHEMA:
        raise UserError(
            f"{path} has schema {report.schema!r}, not {schema.SCHEMA!r}: gate it with the edgedistill that wrote it"
        )
    return report


def _why_not(path: Path, exc: Exception) -> str:
    """Why JSON that parsed did not load as a report; only called on that failure, so reading twice is fine."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    if "schema" not in data:
        return 'it has no "schema" field'
    if data["schema"] != schema.SCHEMA:
        return f"its schema is {data['schema']!r}"
    return f"a field is missing or malformed: {type(exc).__name__}: {exc}"


def latency_target(name: str) -> str | None:
    """The target of a latency budget's name ("latency_ms:pixel-8" -> "pixel-8"); None for a size budget."""
    return name.removeprefix(LATENCY_PREFIX) if name.startswith(LATENCY_PREFIX) else None


def parse_override(text: str) -> BudgetOverride:
    """Parse one `--budget` value: "fifth.params=20000", "fifth.bytes=64KB", "*.params=30%",
    "fifth.latency_ms.raspberry-pi-5=5" (milliseconds)."""
    key, eq, value = text.partition("=")
    if f".{LATENCY}." in key or key.strip().startswith(f"{LATENCY}."):
        return _parse_latency(text, key, value)
    # Budget names hold no dot, so the last one splits the key: a tier name may contain dots.
    tier, dot, name = key.strip().rpartition(".")
    if not (eq and dot and tier and value.strip()):
        raise UserError(f"--budget {text!r} is not {_FORM}")
    if name == LATENCY:
        raise UserError(f"--budget {text!r} names no target: a latency budget is {_LATENCY_FORM}")
    if name not in BUDGET_KINDS:
        raise UserError(
            f"--budget {text!r} names budget {name!r}, which is unknown: use {', '.join(BUDGET_KINDS)} or {LATENCY}.TARGET"
        )
    try:
        limit = parse_quantity(value.strip(), BUDGET_KINDS[name])  # type: ignore[arg-type]
    except UserError as exc:
        raise UserError(f"--budget {text!r}: {exc}") from exc
    return BudgetOverride(tier=tier, name=name, limit=limit)


def _parse_latency(text: str, key: str, value: str) -> BudgetOverride:
    """A latency override: "TIER.latency_ms.TARGET=MS". Targets may hold dots, so the first
    ".latency_ms." splits the key; milliseconds are absolute (the teacher sets no share of them)."""
    tier, _, target = key.strip().partition(f".{LATENCY}.")
    if not (tier and target.strip() and value.strip()):
        raise UserError(f"--budget {text!r} is not {_LATENCY_FORM}")
    try:
        ms = float(value.strip().lower().removesuffix("ms"))
    except ValueError:
        ms = float("nan")
    if not (ms > 0 and math.isfinite(ms)):
        raise UserError(f"--budget {text!r}: {value.strip()!r} is not a latency: give positive milliseconds, {_LATENCY_FORM}")
    return BudgetOverride(tier=tier, name=latency_name(target.strip()), limit=Limit(ms, relative=False))


def gate(report: schema.Report, overrides: Sequence[BudgetOverride] = (), students: Sequence[str] = ()) -> GateResult:
    """Judge every selected student (default: all) against every budget of its tier and the overrides.

    An override for one tier beats one for every tier ("*"); among equals the last given wins.
    """
    known = [s.name for s in report.students]
    unknown = [name for name in students if name not in known]
    if unknown:
        raise UserError(
            f"no student named {', '.join(map(repr, unknown))} in the report: known students are {', '.join(known) or 'none'}"
        )
    tiers = sorted({s.tier for s in report.students})
    for o in overrides:
        if o.tier != ALL_TIERS and o.tier not in tiers:
            raise UserError(
                f"--budget {o.label}: no student has tier {o.tier!r}: known tiers are {', '.join(tiers) or 'none'}, or '*' for all"
            )
    teacher = report.teacher
    teacher_fp = Footprint(teacher.params, teacher.macs, teacher.bytes_fp32, teacher.peak_activation_bytes)
    absolute = {o: _absolute(o, teacher_fp) for o in overrides}
    verdicts: list[Verdict] = []
    for student in report.students:
        if students and student.name not in students:
            continue
        ordered = [o for o in overrides if o.tier == ALL_TIERS] + [o for o in overrides if o.tier == student.tier]
        given = {o.name: o for o in ordered}
        verdicts += _judge(student, {name: (o, absolute[o]) for name, o in given.items()})
    return GateResult(tuple(verdicts))


def _absolute(override: BudgetOverride, teacher: Footprint) -> float:
    """The override's bound: a share of the teacher's figure resolved, milliseconds as given."""
    if latency_target(override.name) is not None:
        return override.limit.value
    return resolve(Budget(**{override.name: override.limit}), teacher).limits[override.name]


def _judge(student: schema.Student, given: dict[str, tuple[BudgetOverride, float]]) -> list[Verdict]:
    """The verdicts of one student: its tier's budgets (overridden where given), then the report's flags."""
    checks = {c.name: c for c in student.checks}
    limits: dict[str, float] = student.budget.get("limits", {})
    precision = student.budget.get("precision", Budget.model_fields["precision"].default)

    def verdict(budget: str, limit: float, value: float | None, ok: bool, source: str) -> Verdict:
        return Verdict(student.name, student.tier, budget, limit, value, ok, source)

    verdicts = []
    for name in dict.fromkeys([*limits, *checks, *given]):
        target = latency_target(name)
        if target is not None:
            # The tier's own limit is its check's, as for sizes; only the figure is the artifacts'.
            limit = given[name][1] if name in given else checks[name].limit if name in checks else float(limits[name])
            value, source = latency_figure(student, target)
            verdicts.append(verdict(name, limit, value, value is not None and value <= limit, source))
        elif name in given:
            override, limit = given[name]
            value, source = _figure(student, override, precision)
            verdicts.append(verdict(name, limit, value, value <= limit, source))
        elif name in checks:
            c = checks[name]
            verdicts.append(verdict(name, c.limit, c.value, _holds(c), c.source))
        else:
            verdicts.append(verdict(name, float(limits[name]), None, False, "the report has no check of this budget"))
    if not student.within_budget and all(_holds(c) for c in student.checks):
        # The flag has no figure of its own: limit 0 failing checks, no value.
        verdicts.append(verdict("within_budget", 0.0, None, False, "the report marks the student over budget, yet every check holds"))
    for a in student.artifacts:
        if not a.passed:
            tolerance = a.parity_tolerance if a.parity_tolerance is not None else 0.0
            verdicts.append(verdict("parity", tolerance, a.parity_max_abs_err, False, f"parity check of {a.path}"))
    return verdicts


def _holds(check: schema.Check) -> bool:
    """Fail when either the report's flag or the numbers say so (a NaN value loads as None): a CI gate fails closed."""
    return check.ok and check.value is not None and check.value <= check.limit


def _figure(student: schema.Student, override: BudgetOverride, precision: str) -> tuple[float, str]:
    """The student's value of a budget given on the command line, and where it came from."""
    if override.name != "bytes":
        value = {"params": student.params, "macs": student.macs, "peak_memory": student.peak_activation_bytes}[override.name]
        return float(value), "student in PyTorch"
    deployed = schema.largest_file(student.artifacts, precision)  # as the run judges it
    if deployed is not None:
        return float(deployed.bytes), f"largest {precision} file: {deployed.path}"
    check = next((c for c in student.checks if c.name == "bytes" and c.value is not None), None)
    if check is not None:
        return check.value, check.source
    raise UserError(
        f"--budget {override.label}: the report has no {precision} file of student {student.name!r} to size "
        f"(TensorRT engines are not sized here): drop that budget or rerun with a target that deploys {precision}"
    )


def latency_figure(student: schema.Student, target: str) -> tuple[float | None, str]:
    """The p50 a latency budget on `target` is judged on, and where it came from; None when there is none.

    The rule of the run's check: among the files made for `target`, a measured figure outranks a
    predicted one, and among equals the fastest file decides. The report's stored check value is
    not used: a measurement added to the artifacts since must count.
    """
    deciding = schema.deciding_latency(student.artifacts, target)
    if deciding is None:
        timed = sorted({t for a in student.artifacts for t in a.latency})
        return None, f"no latency on {target}: the student's files have latency on {', '.join(timed) or 'no target'}"
    lat, art = deciding
    return lat.p50_ms, f"{_provenance(lat, target)} (p50 of {art.path})"


def _provenance(lat: schema.Latency, target: str) -> str:
    """How a latency was had: "measured over ssh on raspberry-pi-5", "predicted for pixel-8, uncalibrated"."""
    if lat.source == "measured":
        via = {"": "", "local": " locally"}.get(lat.runner, f" over {lat.runner}")
        return f"measured{via} on {target}"
    return f"{lat.source} for {target}, {lat.calibration or 'uncalibrated'}"


def summary(result: GateResult) -> str:
    """The gate's last line: how many budgets of how many students, how many broken."""
    judged = len({v.student for v in result.verdicts})
    scope = f"{len(result.verdicts)} budget{'s' * (len(result.verdicts) != 1)} of {judged} student{'s' * (judged != 1)}"
    line = f"gate passed: {scope}, all hold" if result.passed else f"gate failed: {len(result.broken)} broken of {scope}"
    if any(latency_target(v.budget) is not None for v in result.verdicts):
        line += "; latency budgets are judged on the p50 at batch 1"
    return line


def format_number(x: float) -> str:
    """A figure for people: 33,120 / 966.5 / 0.0001."""
    if x == 0 or abs(x) >= 1:
        return f"{x:,.2f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def junit_xml(result: GateResult, name: str) -> str:
    """The verdicts as JUnit XML: one testsuite, one testcase per student and budget, a failure per broken one."""
    suite = ET.Element(
        "testsuite", name=name, tests=str(len(result.verdicts)), failures=str(len(result.broken)), errors="0", skipped="0"
    )
    for v in result.verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"edgedistill.{v.student}", name=v.budget)
        if not v.ok:
            failure = ET.SubElement(case, "failure", message=v.describe(), type="budget")
            failure.text = f"student {v.student} (tier {v.tier}) breaks budget {v.budget}: {v.describe()}"
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def write_junit(result: GateResult, name: str, path: Path) -> None:
    """Write `junit_xml` to `path` atomically: a CI reader never sees half a file."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(junit_xml(result, name), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write --junit {path} ({exc.strerror}): give a file path you can write to") from exc
