"""The gate: judge a report's students against their budgets, for a CI step that must fail the build.

Every value judged is recomputed from the student's own figures in the report, by the rule the run
judged it by (`pipeline.entries.checks`): params, MACs and peak memory as measured in PyTorch, bytes
on the largest file a target deploys, latency on the p50 of the file deployed on the target
(`schema.largest_file`, `schema.deciding_latency`). The tier's budgets and those given on the command line go through that
one path; only the limit differs. The report's own check of a budget is compared with what the run
would have written from the figures: where they disagree the report was edited or damaged, and the
budget is broken whatever the figures say. An artifact that failed its parity check, and a report
whose over-budget flag disagrees with its figures, are broken verdicts too.

What the gate reads is type-checked first: a field of the wrong type, a NaN or a negative figure is
a UserError naming the field, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgedistill.compress.budget import LATENCY_PREFIX, Budget, Footprint, Limit, Precision, latency_name, parse_quantity, resolve
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_path
from edgedistill.report import schema
from edgedistill.serialize import from_jsonable

# The budgets a tier can set, with the kind of quantity each takes (as `Budget` parses them).
BUDGET_KINDS = {"params": "count", "macs": "count", "bytes": "bytes", "peak_memory": "bytes"}
LATENCY = "latency_ms"
ALL_TIERS = "*"
_LATENCY_FORM = f"TIER.{LATENCY}.TARGET=MS, e.g. fifth.{LATENCY}.raspberry-pi-5=5 (p50 milliseconds at batch 1)"
_FORM = f"TIER.NAME=VALUE, e.g. fifth.params=20000, fifth.bytes=64KB or '*.params=30%', or {_LATENCY_FORM}"
_FIX = "give the report.json that `edgedistill run` wrote (runs/<name>/report.json)"
_DAMAGED = "the report was edited or damaged; rerun `edgedistill run` to write it again"
# No model or device has a figure this large: a larger one (infinity too) is a damaged field, and
# every figure below it converts to a float.
_LARGEST = 2.0**63
_JSON_TYPES = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
_SCALARS = {bool: "true or false", str: "a string", int: "a whole number", float: "a number"}
_DEFAULT_PRECISION = Budget.model_fields["precision"].default


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
class Figure:
    """A student's value of one budget, recomputed from the report's own fields, and where it came
    from; `value` is None where the report holds none (no latency on the target)."""

    value: float | None
    source: str


@dataclass(frozen=True)
class Verdict:
    """One budget of one student judged: `value` against `limit`, with where the value came from.

    `value` is None when the report holds no figure to judge (no latency on the target, the report's
    own over-budget flag). `ok` is False too when the report's check disagrees with its figures,
    and then `source` says how.
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
        sign = "<=" if self.value <= self.limit else ">"
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


# --- reading a report ------------------------------------------------------------------------------


def load_report(path: Path) -> schema.Report:
    """Read a report.json and type-check what the gate reads; anything that is not a report the
    gate can judge is a UserError naming the file, the field (students[1].params) and the fix."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not an {schema.SCHEMA} report (it holds a JSON {_JSON_TYPES[type(data)]}, not an object): {_FIX}")
    if "schema" not in data:
        raise UserError(f'{path} is not an {schema.SCHEMA} report (it has no "schema" field): {_FIX}')
    if data["schema"] != schema.SCHEMA:
        raise UserError(f"{path} has schema {data['schema']!r}, not {schema.SCHEMA!r}: gate it with the edgedistill that wrote it")
    # Types first, so that decoding (which trusts them) never meets a string where a number is.
    if (problem := _type_problem(schema.Report, data, "")) is None:
        report = from_jsonable(schema.Report, data)
        if (problem := _unjudgeable(report)) is None:
            return report
    raise UserError(f"{path}: {problem}: {_DAMAGED}")


def _read_json(path: Path) -> object:
    """The JSON value in `path`; a file that cannot be read or parsed is a UserError saying why."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"report {path} does not exist: {_FIX}") from exc
    except OSError as exc:
        raise UserError(f"cannot read report {path} ({exc.strerror}): {_FIX}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a text file: {_FIX}") from exc
    except json.JSONDecodeError as exc:
        # A truncated file ends here too ("Expecting ',' delimiter: line 40 column 1").
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): {_FIX}") from exc


def _type_problem(tp: object, data: object, where: str) -> str | None:
    """Why `data` is not a `tp` as report.json writes one, naming the first wrong field by its path;
    None when it is one. Extra fields are fine: a later schema may add them."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return None if data is None else _type_problem(next(a for a in args if a is not type(None)), data, where)
    if dataclasses.is_dataclass(tp):
        return _fields_problem(tp, data, where)
    if origin is tuple:  # the schema's tuples are all tuple[X, ...]
        if not isinstance(data, list):
            return _wrong(where, data, "a list")
        return _first(_type_problem(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
    if tp is dict or origin is dict:
        if not isinstance(data, dict):
            return _wrong(where, data, "an object")
        return _first(_type_problem(args[1], v, f"{where}.{k}") for k, v in data.items()) if args else None
    return _scalar_problem(tp, data, where)


def _fields_problem(tp: type, data: object, where: str) -> str | None:
    """The first field of dataclass `tp` that `data` lacks or holds with the wrong type."""
    if not isinstance(data, dict):
        return _wrong(where, data, "an object")
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        here = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return f"{here} is missing"
        elif (problem := _type_problem(hints[f.name], data[f.name], here)) is not None:
            return problem
    return None


def _scalar_problem(tp: object, data: object, where: str) -> str | None:
    """A bool, string, whole number or number; a float may be null, as the report writes a NaN."""
    if tp is float and data is None:
        return None
    number = isinstance(data, (int, float)) and not isinstance(data, bool)
    fits = {bool: isinstance(data, bool), str: isinstance(data, str), int: number and isinstance(data, int), float: number}
    return None if fits[tp] else _wrong(where, data, _SCALARS[tp])  # type: ignore[index]


def _unjudgeable(report: schema.Report) -> str | None:
    """What makes a well-typed report unfit to judge: a figure the gate judges that is negative,
    NaN or infinite, a limit that is not positive, a budget of no known name, a student twice."""
    teacher = [_figure_problem(getattr(report.teacher, f), f"teacher.{f}") for f in ("params", "macs", "bytes_fp32", "peak_activation_bytes")]
    names = [s.name for s in report.students]
    twice = (
        f"students[{i}].name {name!r} is that of students[{names.index(name)}] too: a report names each student once"
        for i, name in enumerate(names) if name in names[:i]
    )
    students = (_student_problem(s, f"students[{i}]") for i, s in enumerate(report.students))
    return _first([*teacher, *twice, *students])


def _student_problem(s: schema.Student, where: str) -> str | None:
    """The first figure, limit or budget name of one student the gate cannot judge."""
    problems = [_figure_problem(getattr(s, f), f"{where}.{f}") for f in ("params", "macs", "peak_activation_bytes")]
    problems.append(_budget_problem(s.budget, f"{where}.budget"))
    for j, c in enumerate(s.checks):
        here = f"{where}.checks[{j}]"
        if c.name in [d.name for d in s.checks[:j]]:
            problems.append(f"{here}.name {c.name!r} repeats an earlier check's: a student has one check of each budget")
        problems += [
            _name_problem(c.name, f"{here}.name"),
            _figure_problem(c.limit, f"{here}.limit", limit=True),
            None if c.value is None else _figure_problem(c.value, f"{here}.value"),
        ]
    for k, a in enumerate(s.artifacts):
        problems.append(_figure_problem(a.bytes, f"{where}.artifacts[{k}].bytes"))
        problems += [
            _figure_problem(lat.p50_ms, f"{where}.artifacts[{k}].latency.{t}.p50_ms")
            for t, lat in a.latency.items() if lat.p50_ms is not None  # null: no figure, as NaN is written
        ]
    return _first(problems)


def _budget_problem(budget: dict, where: str) -> str | None:
    """The tier's budget as the run records it: {"limits": {name: absolute bound}, "precision": ...}."""
    if "limits" not in budget:
        return f"{where}.limits is missing"
    limits = budget["limits"]
    if not isinstance(limits, dict):
        return _wrong(f"{where}.limits", limits, "an object")
    if not limits:
        return f"{where}.limits is empty, yet every tier sets at least one limit"
    precisions = typing.get_args(Precision)
    precision = budget.get("precision", _DEFAULT_PRECISION)
    if precision not in precisions:
        return _wrong(f"{where}.precision", precision, " or ".join(map(json.dumps, precisions)))
    names = (_name_problem(name, f"{where}.limits") for name in limits)
    return _first([*names, *(_figure_problem(v, f"{where}.limits.{name}", limit=True) for name, v in limits.items())])


def _name_problem(name: str, where: str) -> str | None:
    """A budget's name is a size budget's, latency_ms:TARGET, or a device's memory (flash:TARGET, sram:TARGET)."""
    if name in BUDGET_KINDS or latency_target(name) or schema.device_memory(name):
        return None
    return (
        f"{where} names budget {name!r}, which is unknown: a budget is {', '.join(BUDGET_KINDS)}, {LATENCY_PREFIX}TARGET, "
        f"{' or '.join(f'{m}:TARGET' for m in schema.DEVICE_MEMORY)}"
    )


def _figure_problem(value: object, where: str, limit: bool = False) -> str | None:
    """A figure the gate judges is a finite number from 0 (a limit: above 0); NaN fails both tests."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and (value > 0 if limit else value >= 0) and value <= _LARGEST:  # type: ignore[operator]
        return None
    return _wrong(where, value, "a finite number above 0" if limit else "a finite number >= 0")


def _wrong(where: str, value: object, wanted: str) -> str:
    """A problem in words: students[0].params is "abc", not a whole number."""
    shown = json.dumps(value)
    return f"{where} is {shown if len(shown) <= 40 else shown[:37] + '...'}, not {wanted}"


def _first(problems: Iterable[str | None]) -> str | None:
    """The first problem found, or None: checking stops at the first, as the message names one."""
    return next((p for p in problems if p is not None), None)


# --- budgets from the command line -----------------------------------------------------------------


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


# --- judging ---------------------------------------------------------------------------------------


def gate(report: schema.Report, overrides: Sequence[BudgetOverride] = (), students: Sequence[str] = ()) -> GateResult:
    """Judge every selected student (default: all) against every budget of its tier and the overrides.

    An override for one tier beats one for every tier ("*"). Every budget, the tier's or given, is
    judged on the figure `figure` recomputes; only its limit differs.
    """
    _refuse(report, overrides, students)
    teacher = report.teacher
    teacher_fp = Footprint(teacher.params, teacher.macs, teacher.bytes_fp32, teacher.peak_activation_bytes)
    absolute = {o: _absolute(o, teacher_fp) for o in overrides}
    verdicts: list[Verdict] = []
    for student in report.students:
        if students and student.name not in students:
            continue
        ordered = [o for o in overrides if o.tier == ALL_TIERS] + [o for o in overrides if o.tier == student.tier]
        verdicts += _judge(student, {o.name: absolute[o] for o in ordered}, _spec_limits(student, teacher_fp))
    return GateResult(tuple(verdicts))


def _spec_limits(student: schema.Student, teacher: Footprint) -> dict[str, float] | None:
    """The tier's limits as its budget spec (as the config wrote it: "50%") resolves against the
    report's teacher, as the run resolved them; None where the report keeps no spec."""
    spec = student.budget.get("spec")
    if spec is None:
        return None
    try:
        return resolve(Budget.model_validate(spec), teacher).limits
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return {}


def _refuse(report: schema.Report, overrides: Sequence[BudgetOverride], students: Sequence[str]) -> None:
    """A UserError for a question the report cannot answer: it has no students, or the command line
    names a student or a tier it lacks, or gives one budget twice (which value would be meant?)."""
    if not report.students:
        # Nothing judged would pass vacuously: a CI gate must not call an empty run a good one.
        raise UserError(f"report {report.name!r} has no students: the run made none; check its config's tiers and rerun `edgedistill run`")
    known = [s.name for s in report.students]
    unknown = [name for name in students if name not in known]
    if unknown:
        raise UserError(f"no student named {', '.join(map(repr, unknown))} in the report: known students are {', '.join(known)}")
    tiers = sorted({s.tier for s in report.students})
    given: set[tuple[str, str]] = set()
    for o in overrides:
        if o.tier != ALL_TIERS and o.tier not in tiers:
            raise UserError(f"--budget {o.label}: no student has tier {o.tier!r}: known tiers are {', '.join(tiers)}, or '*' for all")
        if (o.tier, o.name) in given:
            raise UserError(f"--budget {o.label} is given twice: give each budget once (one for a tier beats one for '*')")
        given.add((o.tier, o.name))


def _absolute(override: BudgetOverride, teacher: Footprint) -> float:
    """The override's bound: a share of the teacher's figure resolved, milliseconds as given."""
    if latency_target(override.name) is not None:
        return override.limit.value
    return resolve(Budget(**{override.name: override.limit}), teacher).limits[override.name]


def _judge(student: schema.Student, given: dict[str, float], spec: dict[str, float] | None) -> list[Verdict]:
    """The verdicts of one student: each budget of its tier (its limit overridden where given) and
    each one given, all on the recomputed figure; then the report's flags. `spec`: the tier's
    limits resolved again from its budget spec, which the recorded limits must agree with."""
    limits = {name: float(v) for name, v in student.budget["limits"].items()}
    checks = {c.name: c for c in student.checks}
    verdicts, tier_broken = [], []
    for name in dict.fromkeys([*limits, *checks, *given]):
        fig, check = figure(student, name), checks.get(name)
        tier_limit = limits.get(name, check.limit if check is not None else None)
        # A device's memory is the target profile's, not the tier's: its check carries the limit.
        budget_limit = tier_limit if schema.device_memory(name) else limits.get(name)
        problem = None
        if tier_limit is not None:
            # The report's check is held to what the run would have written from the same figures.
            problem = _disagreement(check, budget_limit, fig) or _unlike_spec(spec, name, limits.get(name))
            if not _fits(fig, tier_limit):
                tier_broken.append(name)
        limit = given[name] if name in given else typing.cast(float, tier_limit)
        source = fig.source if problem is None else f"{fig.source}; {problem}: {_DAMAGED}"
        verdicts.append(Verdict(student.name, student.tier, name, limit, fig.value, _fits(fig, limit) and problem is None, source))
    return verdicts + _flags(student, tier_broken)


def _disagreement(check: schema.Check | None, budget_limit: float | None, fig: Figure) -> str | None:
    """How the report's check of a tier's budget differs from the one the run writes from the
    report's figures; None when it does not. Its margin is not judged, so not compared."""
    if check is None:
        return "the report's budget sets this limit but the report has no check of it"
    if budget_limit is None:
        return "the report has a check of this budget but its budget sets no such limit"
    if not _same(check.limit, budget_limit):
        return f"the report's check has limit {format_number(check.limit)} but its budget says {format_number(budget_limit)}"
    if not _same(check.value, fig.value):
        return f"the report's check says {_shown(check.value)} but its figures say {_shown(fig.value)}"
    if check.ok != _fits(fig, check.limit):
        return "the report's check says it holds, yet its figure breaks it" if check.ok else "the report's check says it is broken, yet its figure holds"
    return None


def _unlike_spec(spec: dict[str, float] | None, name: str, limit: float | None) -> str | None:
    """How a recorded limit differs from the one its tier's spec gives; None when they agree."""
    if spec is None or limit is None:
        return None
    if name not in spec:
        return f"the report's budget sets a limit its spec ({name} absent) does not give"
    if not _same(spec[name], limit):
        return f"the report's budget has limit {format_number(limit)} but its spec gives {format_number(spec[name])}"
    return None


def _flags(student: schema.Student, tier_broken: list[str]) -> list[Verdict]:
    """The report's own flags judged: its within-budget flag against the recomputed figures, and
    each artifact whose parity check failed. A flag has no figure of its own: limit 0, no value."""
    verdicts = []
    if student.within_budget == bool(tier_broken):
        said = f"within budget, yet its figures break {', '.join(tier_broken)}" if student.within_budget else "over budget, yet its figures hold every budget"
        verdicts.append(Verdict(student.name, student.tier, "within_budget", 0.0, None, False, f"the report marks the student {said}: {_DAMAGED}"))
    for a in student.artifacts:
        if not a.passed:
            tolerance = a.parity_tolerance if a.parity_tolerance is not None else 0.0
            verdicts.append(Verdict(student.name, student.tier, "parity", tolerance, a.parity_max_abs_err, False, f"parity check of {a.path}"))
    return verdicts


def _fits(fig: Figure, limit: float) -> bool:
    """A figure holds a limit; no figure holds none, for a CI gate fails closed."""
    return fig.value is not None and fig.value <= limit


def _same(a: float | None, b: float | None) -> bool:
    """Two figures agree: both absent (the run writes none as NaN, which JSON holds as null), or
    equal but for the rounding of another JSON writer."""
    a, b = (None if x is None or math.isnan(x) else x for x in (a, b))
    return a is None and b is None or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))


def _shown(x: float | None) -> str:
    """A figure as a message shows it, or "no value"."""
    return "no value" if x is None else format_number(x)


def figure(student: schema.Student, name: str) -> Figure:
    """The value budget `name` of `student` is judged on, recomputed from the student's fields by the
    rule of the run's check (`pipeline.entries.checks`), whatever the limit it is judged against."""
    target = latency_target(name)
    if target is not None:
        return latency_figure(student, target)
    if (device := schema.device_memory(name)) is not None:
        return Figure(*schema.memory_figure(student.artifacts, *device))
    if name == "bytes":
        return _bytes_figure(student)
    value = {"params": student.params, "macs": student.macs, "peak_memory": student.peak_activation_bytes}[name]
    return Figure(float(value), "student in PyTorch")


def _bytes_figure(student: schema.Student) -> Figure:
    """Bytes judged as the run judges them: on the largest file a target deploys (or, in a report
    without deployment choices, the largest file at the budget's precision).

    Without one (none made at that precision, or only TensorRT engines, sized on the device) the
    run judged the search's figure: the weights' estimate, or a probe file's size that the report
    does not keep. No file is smaller than its weights, so the check's figure counts when it is at
    least the estimate, and the estimate otherwise.
    """
    precision = student.budget.get("precision", _DEFAULT_PRECISION)
    deployed = schema.largest_file(student.artifacts, precision)
    if deployed is not None:
        return Figure(float(deployed.bytes), schema.file_source(deployed, precision))
    # The student's fp32 bytes are 4 a parameter, as `budget.measure` counts them.
    weights = Footprint(student.params, student.macs, 4 * student.params, student.peak_activation_bytes).bytes_at(precision)
    check = next((c for c in student.checks if c.name == "bytes"), None)
    if check is not None and check.value is not None and check.value >= weights:
        return Figure(check.value, check.source)
    return Figure(float(weights), f"estimate at {precision} (no {precision} artifact)")


def latency_figure(student: schema.Student, target: str) -> Figure:
    """The p50 a latency budget on `target` is judged on, and where it came from; no value when there is none.

    The rule of the run's check (`schema.deciding_latency`): the file deployed on `target`; in a
    report without deployment choices, a measured figure outranks a predicted one among the files
    made for `target`, and among equals the fastest file decides.
    """
    deciding = schema.deciding_latency(student.artifacts, target)
    if deciding is None:
        timed = sorted({t for a in student.artifacts for t, lat in a.latency.items() if lat.p50_ms is not None})
        return Figure(None, f"no latency on {target}: the student's files have latency on {', '.join(timed) or 'no target'}")
    lat, art = deciding
    return Figure(lat.p50_ms, f"{_provenance(lat, target)} (p50 of {art.path})")


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
