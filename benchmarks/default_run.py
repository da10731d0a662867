"""Figure 5: the default run. `edgedistill run` on the built-in example in a fresh run directory, as a
user starts it (a subprocess): wall time, peak memory, the share of each stage, a resumed rerun, and
what the teacher-output cache saves in distillation time.

Run: python -m benchmarks.default_run [--quick]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.compare import interleaved
from benchmarks.fixtures import TRAIN_THREADS, torch_threads
from benchmarks.results import Figure, cores, main, table
from edgedistill.compress.distill import TeacherOutputs, fit
from edgedistill.data.arrays import load_arrays, split
from edgedistill.cli import DEFAULT_EXAMPLE
from edgedistill.config import RunConfig, load_config
from edgedistill.examples.digits import config_path
from edgedistill.teachers import load_teacher

HEADING = "## 5. The default run: `edgedistill run` on the default example (sensor-digits)"
STAGE_MARK = "• "  # how the CLI prints a stage line when its output is not a terminal
ROUNDS, QUICK_ROUNDS = 5, 2  # side-by-side rounds of the cache's saving
QUICK_EPOCHS = 2  # quick mode runs the example with this many teacher and student epochs


@dataclass(frozen=True)
class Stage:
    text: str
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Process:
    """One `edgedistill run` subprocess: wall time, peak RSS, exit status and its stages."""

    wall_s: float
    max_rss_mib: float
    status: int
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class Student:
    """One tier's distillation in the run, and what it would have cost without the cache."""

    tier: str
    distil_s: float
    epochs_run: int
    teacher_share: float  # a teacher forward over the training split / one cached distillation epoch

    @property
    def no_cache_s(self) -> float:
        return self.distil_s * (1 + self.teacher_share)


class PeakRss(threading.Thread):
    """Polls a process's VmHWM (its resident-set high-water mark) in /proc until it exits.

    Not `os.wait4`'s ru_maxrss: Linux carries the parent's high-water mark into a forked child, so
    a child of this (large) benchmark process would report at least the benchmark's own peak.
    VmHWM belongs to the child's own address space, and only grows, so the last read is the peak
    up to POLL_S before exit.
    """

    POLL_S = 0.05

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak_kib = 0

    def run(self) -> None:
        while True:
            try:
                text = self.status.read_text()
            except OSError:  # the process is gone
                return
            found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
            if found is None:  # a zombie has no memory lines left
                return
            self.peak_kib = max(self.peak_kib, int(found.group(1)))
            time.sleep(self.POLL_S)


def edgedistill_run(out: Path, config: Path | None) -> Process:
    """Run `python -m edgedistill run [CONFIG] --out OUT` with unbuffered output, timestamping each
    stage line as it arrives, its peak RSS polled by `PeakRss`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgedistill", "run", *([str(config)] if config else []), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    rss = PeakRss(proc.pid)
    rss.start()
    marks = [
        (time.perf_counter() - started, line.strip().removeprefix(STAGE_MARK))
        for line in proc.stdout
        if line.startswith(STAGE_MARK)
    ]
    status = proc.wait()
    wall = time.perf_counter() - started
    proc.stdout.close()
    rss.join()
    ends = [t for t, _ in marks[1:]] + [wall]
    stages = tuple(Stage(text, t, end) for (t, text), end in zip(marks, ends))
    return Process(wall, rss.peak_kib / 1024, status, stages)


def step(text: str, tiers: set[str]) -> str:
    """The kind of a stage line: "teacher: training ..." -> "teacher"; "<tier>: distilling ..." -> "student: distilling"."""
    prefix, _, rest = text.partition(": ")
    return f"student: {rest.split()[0]}" if prefix in tiers and rest else prefix


def teacher_shares(out: Path, tiers: list[str], rounds: int) -> dict[str, float]:
    """For each student of the run: the time of the teacher's forward over the training split (eval,
    no grad, in distillation batches: what a loop without the cache adds to every epoch) over the
    time of one distillation epoch with the cache (`fit` for one epoch), timed side by side in
    interleaved rounds on the run's own teacher, students and cached outputs."""
    cfg = default_example()
    x, y, classes = load_arrays(cfg.data.source)
    s = split(x, y, classes, cfg.data.source, cfg.data.val_fraction, cfg.data.calib_fraction, cfg.seed)
    teacher = load_teacher(cfg.teacher)
    teacher.load_state_dict(torch.load(out / "teacher" / "teacher.pt", weights_only=True))
    teacher.eval()
    with np.load(out / "teacher" / "outputs.npz") as saved:
        cached = TeacherOutputs(saved["logits"])
    size = cfg.distill.batch_size
    batches = [torch.from_numpy(s.train.x[i : i + size]) for i in range(0, len(s.train), size)]
    one_epoch = cfg.distill.model_copy(update={"epochs": 1})

    def teacher_epoch() -> None:
        with torch.no_grad():
            for xb in batches:
                teacher(xb)

    shares = {}
    # One thread, as the other training figures: on a shared 2-core machine torch's default two made
    # these small models train many times slower (see figure 6); a ratio of two workloads at one
    # setting carries over to the run's.
    with torch_threads(TRAIN_THREADS):
        for tier in tiers:
            student = torch.load(out / "students" / tier / "student.pt", weights_only=False)
            timings = interleaved(
                {"teacher": teacher_epoch, "student": lambda st=student: fit(st, s.train, s.val, one_epoch, cfg.seed, cached)},
                rounds=rounds, runs=1, warmup=1,
            )
            shares[tier] = timings.ratio("teacher", "student")
    return shares


def default_example() -> RunConfig:
    """The config `edgedistill run` runs with no arguments, training here at TRAIN_THREADS (as the other figures)."""
    cfg = load_config(config_path(DEFAULT_EXAMPLE))
    return cfg.model_copy(update={s: getattr(cfg, s).model_copy(update={"threads": TRAIN_THREADS}) for s in ("distill", "teacher_training")})


def training_config(folder: Path, name: str, training: dict[str, int], example_name: str = DEFAULT_EXAMPLE) -> Path:
    """A built-in example's config written to `folder/<name>.toml` with `training`'s settings in
    both its teacher training and its distillation."""
    import tomli_w

    raw = tomllib.loads(config_path(example_name).read_text())
    for section in ("teacher_training", "distill"):
        raw.setdefault(section, {}).update(training)
    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def quick_config(folder: Path) -> Path:
    """The example's config with QUICK_EPOCHS of teacher training and distillation (smoke runs)."""
    return training_config(folder, "quick", {"epochs": QUICK_EPOCHS})


def run(quick: bool = False) -> str:
    cfg = default_example()
    tiers = {t.name for t in cfg.tiers}
    with tempfile.TemporaryDirectory(prefix="edgedistill-default-run-") as tmp:
        out = Path(tmp) / "run"
        config = quick_config(Path(tmp)) if quick else None
        load = os.getloadavg()[0]
        fresh = edgedistill_run(out, config)
        resumed = edgedistill_run(out, config)
        report = json.loads((out / "report.json").read_text())
        distil = {s.text.partition(": ")[0]: s.seconds for s in fresh.stages if step(s.text, tiers) == "student: distilling"}
        outputs_s = sum(s.seconds for s in fresh.stages if step(s.text, tiers) == "teacher outputs")
        if cfg.distill.augment.active:
            teacher = _online(report, distil, cfg.distill.augment.describe())
        else:
            rounds = QUICK_ROUNDS if quick else ROUNDS
            shares = teacher_shares(out, list(distil), rounds)
            students = [
                Student(s["name"], distil[s["name"]], s["distill"]["epochs_run"], shares[s["name"]])
                for s in report["students"]
                if s["name"] in distil
            ]
            teacher = _cache(students, outputs_s, rounds)
    return _section(fresh, resumed, tiers, teacher, load)


def _online(report: dict, distil: dict[str, float], augment: str) -> tuple[list[str], str]:
    """The teacher's cost when it runs online on augmented batches: its seconds (the report's
    `teacher_online_s`) within each student's distillation."""
    rows = [
        [s["name"], s["distill"]["epochs_run"], f"{distil[s['name']]:.1f}", f"{s['distill']['teacher_online_s']:.1f}",
         f"{s['distill']['teacher_online_s'] / distil[s['name']]:.0%}"]
        for s in report["students"]
        if s["name"] in distil
    ]
    online = sum(s["distill"]["teacher_online_s"] for s in report["students"] if s["name"] in distil)
    total = sum(distil.values())
    lines = [
        f"The teacher online: the example augments its training batches ({augment}), so the teacher runs on each "
        "augmented batch the student sees instead of reading cached outputs; the report gives the seconds it ran "
        "(`distill.teacher_online_s`, timed inside the loop) and the stage lines the distillation's wall time:",
        "",
        table(["student", "epochs run", "distil s (in the run)", "teacher online s", "share"], rows),
    ]
    return lines, f"The teacher running online took {online:.1f} s of the {total:.1f} s of distillation ({online / total:.0%})."


def _cache(students: list[Student], outputs_s: float, rounds: int) -> tuple[list[str], str]:
    """What the teacher-output cache saves, from the measured teacher shares."""
    cached = sum(s.distil_s for s in students) + outputs_s
    no_cache = sum(s.no_cache_s for s in students)
    cache_rows = [
        [s.tier, s.epochs_run, f"{s.distil_s:.1f}", f"{s.teacher_share:.2f}", f"{s.no_cache_s:.1f}"]
        for s in students
    ]
    saving = 1 - cached / no_cache if no_cache else float("nan")
    lines = [
        "The teacher-output cache: edgedistill runs the teacher once over the training split "
        f"(`teacher outputs` stage: {outputs_s:.2f} s) and every student reads those logits. Without it, every "
        "batch of every epoch of every student would run the teacher again. No no-cache loop is run; instead the "
        "teacher's share is measured side by side: the run's trained teacher forward over the training split "
        "(eval, no grad, distillation batch size: what each no-cache epoch adds) against one cached distillation "
        f"epoch of the run's own student (`fit` for one epoch on the run's cached outputs), {rounds} interleaved "
        f"rounds at {TRAIN_THREADS} torch thread, median ratio. A student's no-cache time is then its measured distillation time x (1 + that "
        "share): a lower bound, since a second model in the loop also costs memory traffic not counted here.",
        "",
        table(["student", "epochs run", "distil s (cached, in the run)", "teacher forward / cached epoch",
               "distil s without cache (est.)"], cache_rows),
        "",
        f"Distillation with the cache: {cached:.1f} s (students + the one teacher pass); without: {no_cache:.1f} s "
        f"(est.); the cache saves **{saving:.0%}** of distillation time here.",
    ]
    verdict = (
        f"The cache saves {saving:.0%}: a teacher forward over the training split costs "
        f"{min(s.teacher_share for s in students):.2f}x–{max(s.teacher_share for s in students):.2f}x a student's "
        "cached epoch (forward, backward, optimizer step and validation)."
    )
    return lines, verdict


def _section(fresh: Process, resumed: Process, tiers: set[str], teacher: tuple[list[str], str], load: float) -> str:
    totals: dict[str, float] = defaultdict(float)
    for s in fresh.stages:
        totals[step(s.text, tiers)] += s.seconds
    before_first = fresh.stages[0].start_s if fresh.stages else fresh.wall_s
    stage_rows = [["start-up (interpreter, imports, config) before the first stage line", f"{before_first:.1f}", f"{before_first / fresh.wall_s:.0%}"]]
    stage_rows += [[name, f"{sec:.1f}", f"{sec / fresh.wall_s:.0%}"] for name, sec in totals.items()]
    return "\n".join([
        f"What: `python -m edgedistill run --out <fresh temp dir>` with no config (the {DEFAULT_EXAMPLE} example: train the "
        f"teacher, then {len(tiers)} pruned students searched, distilled (the smallest also trained on labels alone, "
        "to compare), exported, quantized, built for every target and measured), started as a user starts it, then the same command again (it resumes).",
        "",
        "How: one subprocess each, with unbuffered output; wall time from start to exit; peak memory is the "
        "child's own resident-set high-water mark (VmHWM in /proc, polled every 50 ms; `os.wait4`'s ru_maxrss "
        "would include this benchmark's own peak, which Linux carries into a forked child). A stage's time runs from its stage line "
        "(the `Progress.stage` call the CLI prints) to the next stage line, so each figure includes whatever "
        "the pipeline does between two lines: `making artifacts` also covers measuring every artifact's "
        "latency (no line of its own), and the last interval ends at exit (it includes writing the report "
        "and printing the table). One run: this is a cost profile, not a comparison.",
        "",
        table(["", "fresh run", "resumed rerun"], [
            ["wall time", f"{fresh.wall_s:.1f} s", f"{resumed.wall_s:.1f} s"],
            ["peak RSS", f"{fresh.max_rss_mib:.0f} MiB", f"{resumed.max_rss_mib:.0f} MiB"],
            ["exit status", fresh.status, resumed.status],
        ]),
        "",
        "Where the fresh run's time goes (stages of the same kind summed over the tiers):",
        "",
        table(["stage", "seconds", "share"], stage_rows),
        "",
        *teacher[0],
        "",
        f"Verdict: the default run takes {fresh.wall_s:.0f} s and {fresh.max_rss_mib:.0f} MiB peak; a rerun resumes in "
        f"{resumed.wall_s:.0f} s. {teacher[1]}"
        + (
            f" Other work shared the CPU (load average {load:.1f} on {cores()} cores when the run started), so "
            "its stages took longer than on an idle machine."
            if load > cores() else ""
        ),
    ])


FIGURE = Figure("default-run", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
