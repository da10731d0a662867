"""Which file each target deploys: of the files made for it, the fastest that holds the score
(measured where a runner reached it, predicted elsewhere), and at equal speed the smaller. An
int8 file that is slower there, or that loses the score, is passed over, and the report says why.

The choice is a pure function of the measured artifacts, so a resumed run chooses as the first
did; budgets of `bytes` and latency are then judged on what each target deploys."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgedistill.report.rows import short_name
from edgedistill.report.schema import UNSIZED_FORMATS, Artifact, Deployed
from edgedistill.targets.latency import Latency
from edgedistill.targets.profile import Target

# Two p50s within 5 % of each other are one speed: shared machines time that noisily, and then
# the smaller file is the better one to ship.
SAME_SPEED = 0.05
INT8 = "int8"


@dataclass(frozen=True)
class Rules:
    """What a deployed file must hold: the score of the student's fp32 ONNX within `tolerance`,
    and where the tier has one, its `bytes` budget."""

    reference: float
    tolerance: float
    quality: str
    max_bytes: float | None = None


# (target, the int8 file passed over there) -> findings of why it is slower
Explain = Callable[[Target, Artifact], tuple[str, ...]]


def choose(artifacts: tuple[Artifact, ...], targets: Sequence[Target], rules: Rules, explain: Explain) -> tuple[tuple[Artifact, ...], tuple[Deployed, ...]]:
    """The artifacts with `deployed_for` set, and one `Deployed` per target that has a file.
    `explain(target, int8)` gives the findings of why that int8 file is slower there; it is asked
    only when an int8 file was passed over for speed."""
    chosen: list[Deployed] = []
    for target in targets:
        made = [a for a in artifacts if target.name in a.targets]
        if made:
            chosen.append(_deploy(target, made, rules, explain))
    by_path = {d.path: tuple(c.target for c in chosen if c.path == d.path) for d in chosen}
    updated = tuple(dataclasses.replace(a, deployed_for=by_path.get(a.path, ())) for a in artifacts)
    return updated, tuple(chosen)


def _deploy(target: Target, made: list[Artifact], rules: Rules, explain: Explain) -> Deployed:
    holding = [a for a in made if _holds(a, rules)]
    # A file over the tier's bytes budget ships only where no file that holds the score fits.
    fitting = [a for a in holding if rules.max_bytes is None or a.format in UNSIZED_FORMATS or a.bytes <= rules.max_bytes]
    holding = fitting or holding
    pool = holding or [max(made, key=lambda a: _score(a, rules))]
    timed = _figures(pool, target.name)
    if timed:
        fastest = min(lat.p50_ms for lat, _ in timed)
        near = [(lat, a) for lat, a in timed if lat.p50_ms <= fastest * (1 + SAME_SPEED)]
        sized = all(a.format not in UNSIZED_FORMATS for _, a in near)
        lat, pick = min(near, key=lambda f: (f[1].bytes if sized else 0, _preference(target, f[1])))
    else:
        lat, pick = None, min(pool, key=lambda a: _preference(target, a))
    reason = _reason(target, pick, lat, made, holding, rules)
    slower = _slower_int8(target, pick, lat, holding)
    findings = explain(target, slower) if slower is not None else ()
    return Deployed(target.name, pick.path, pick.format, pick.precision, reason, findings)


def _holds(a: Artifact, rules: Rules) -> bool:
    # A file that failed its parity check is not what its source is, so it cannot ship.
    return a.passed and rules.reference - _score(a, rules) <= rules.tolerance + 1e-12


def _score(a: Artifact, rules: Rules) -> float:
    return a.score if a.score is not None else rules.reference


def _figures(pool: list[Artifact], target: str) -> list[tuple[Latency, Artifact]]:
    """The files' p50s on `target`: measured ones where any file was measured there, else predicted."""
    figures = [(a.latency[target], a) for a in pool if target in a.latency and a.latency[target].p50_ms is not None]
    measured = [f for f in figures if f[0].source == "measured"]
    return measured or figures


def _preference(target: Target, a: Artifact) -> int:
    """The file's place in the target's list of artifacts, preferred first."""
    kinds = [(s.format, s.precision) for s in target.artifacts]
    return kinds.index((a.format, a.precision)) if (a.format, a.precision) in kinds else len(kinds)


def _reason(target: Target, pick: Artifact, lat: Latency | None, made: list[Artifact], holding: list[Artifact], rules: Rules) -> str:
    name = short_name(pick.format, pick.precision)
    lost = [_lost(a, rules) for a in made if a not in holding]
    said = "; ".join(lost)
    if not holding:
        return f"no file made for it holds the {rules.quality} ({said}); {name} is the closest"
    if len(made) == 1:
        return f"{name} is the only file made for it"
    if lat is None:
        why = f"{name} is its preferred file that holds the {rules.quality} (no latency figure on {target.name})"
    else:
        why = f"{name} is the fastest that holds the {rules.quality}: {_versus(target, pick, lat, holding)}"
    return f"{why}; {said}" if said else why


def _versus(target: Target, pick: Artifact, lat: Latency, holding: list[Artifact]) -> str:
    parts = [f"{lat.p50_ms:.3f} ms {lat.source}"]
    for other in holding:
        other_lat = other.latency.get(target.name)
        if other is pick or other_lat is None or other_lat.p50_ms is None:
            continue
        same = other_lat.p50_ms <= lat.p50_ms * (1 + SAME_SPEED)
        tail = ""
        if same and {other.format, pick.format} & UNSIZED_FORMATS:
            tail = f", as fast within {SAME_SPEED:.0%}, and {target.name} lists {short_name(pick.format, pick.precision)} first"
        elif same:
            tail = f", as fast within {SAME_SPEED:.0%} but {other.bytes:,} B against {pick.bytes:,} B"
        parts.append(f"{short_name(other.format, other.precision)} {other_lat.p50_ms:.3f} ms{tail}")
    return " vs ".join(parts)


def _lost(a: Artifact, rules: Rules) -> str:
    name = short_name(a.format, a.precision)
    if not a.passed:
        return f"{name} failed its parity check"
    if _holds(a, rules):
        return f"{name} ({a.bytes:,} B) is over the tier's bytes budget ({rules.max_bytes:,.0f} B)"
    drop = rules.reference - _score(a, rules)
    return (
        f"{name} loses {100 * drop:.2f} points of {rules.quality}, more than the {100 * rules.tolerance:.2f} allowed "
        "(quantize.max_score_drop); try int8 in the training loop (quantize.qat = true)"
        if a.precision == INT8 else
        f"{name} loses {100 * drop:.2f} points of {rules.quality}, more than the {100 * rules.tolerance:.2f} allowed"
    )


def _slower_int8(target: Target, pick: Artifact, lat: Latency | None, holding: list[Artifact]) -> Artifact | None:
    """The fastest int8 file that holds the score but was passed over on `target` for being slower."""
    if lat is None or pick.precision == INT8:
        return None
    slower = [
        (other.p50_ms, a) for a in holding
        if a.precision == INT8 and (other := a.latency.get(target.name)) is not None and other.p50_ms is not None
        and other.p50_ms > lat.p50_ms * (1 + SAME_SPEED)
    ]
    return min(slower, key=lambda f: f[0])[1] if slower else None
