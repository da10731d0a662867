"""Figure 8: what training's thread choice does to the default run, on an idle machine and beside
two CPU-bound jobs (as on a shared CI runner): `edgedistill run` on the digits example with torch's
default thread count (every core: what a run did before it chose) against the count `fit` now
chooses from the work of a training step (`distill.threads = 0`, `edgedistill.threads`).

Run: python -m benchmarks.threads [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.default_run import QUICK_EPOCHS, edgedistill_run, training_config
from benchmarks.results import Figure, cores, main, table
from edgedistill.threads import EVERY_CORE_MACS

HEADING = "## 8. Threads: the default run idle and beside two CPU-bound jobs"
HOGS = 2  # CPU-bound jobs beside the run in the busy setting
SETTINGS = {"every core (torch's default)": None, "chosen (threads = 0)": 0}
LOADS = ("idle", f"{HOGS} CPU-bound jobs beside it")


@dataclass(frozen=True)
class Timed:
    """One run: its wall time, the load average before it, and the thread counts it trained with."""

    wall_s: float
    load_before: float
    threads: tuple[int, ...]
    status: int


def config(folder: Path, threads: int | None, quick: bool) -> Path:
    """The example's config with training at `threads` (None: every core, as torch defaults)."""
    training = {"threads": cores() if threads is None else threads, **({"epochs": QUICK_EPOCHS} if quick else {})}
    return training_config(folder, f"threads-{threads}", training, "digits")


def hogs(n: int) -> list[subprocess.Popen]:
    """`n` processes that spin on a core each until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def timed(cfg: Path, out: Path, busy: bool) -> Timed:
    """One fresh `edgedistill run` of `cfg`, with HOGS spinning beside it when `busy`."""
    load = os.getloadavg()[0]
    spinning = hogs(HOGS) if busy else []
    try:
        proc = edgedistill_run(out, cfg)
    finally:
        for p in spinning:
            p.kill()
            p.wait()
    report = json.loads((out / "report.json").read_text()) if proc.status in (0, 1) else {"students": [], "data": {}}
    used = [s["distill"].get("threads", 0) for s in report["students"]]
    used.append(report["data"].get("teacher_training", {}).get("threads", 0))
    return Timed(proc.wall_s, load, tuple(used), proc.status)


def run(quick: bool = False) -> str:
    results: dict[tuple[str, str], Timed] = {}
    with tempfile.TemporaryDirectory(prefix="edgedistill-threads-") as tmp:
        folder = Path(tmp)
        for load in LOADS:  # one sitting: each load's two settings back to back
            for name, threads in SETTINGS.items():
                out = folder / f"run-{len(results)}"
                results[(load, name)] = timed(config(folder, threads, quick), out, load != "idle")
    return _section(results)


def _section(results: dict[tuple[str, str], Timed]) -> str:
    before, after = SETTINGS
    rows = []
    for load in LOADS:
        b, a = results[(load, before)], results[(load, after)]
        rows.append([
            load, f"{b.wall_s:.0f}", f"{a.wall_s:.0f}", f"{a.wall_s / b.wall_s:.2f}x",
            ", ".join(map(str, sorted(set(a.threads)))), f"{b.load_before:.2f} / {a.load_before:.2f}",
        ])
    failed = [f"{load}, {name}: exit {t.status}" for (load, name), t in results.items() if t.status not in (0, 1)]
    lines = [
        "What: wall time of `edgedistill run` on the built-in digits example (teacher training, three "
        "students, export, int8, every target file, measurement), fresh run directory each time, with "
        f"training at every core ({cores()}, torch's default, as runs trained before they chose) and with the "
        "count `fit` now chooses: one thread for a step under "
        f"{EVERY_CORE_MACS / 1e6:,.0f}M multiply-accumulates, every core above.",
        "",
        f"How: a subprocess per run, as a user starts it; on an idle machine, then with {HOGS} processes "
        "spinning on a core each beside it; each load's two settings back to back in one sitting, once each.",
        "",
        table(
            ["machine", "every core, s", "chosen, s", "chosen / every core", "threads chosen", "load before"],
            rows,
        ),
    ]
    if failed:
        lines += ["", "Runs that failed: " + "; ".join(failed)]
    busy = results[(LOADS[1], after)].wall_s / results[(LOADS[1], before)].wall_s
    idle = results[(LOADS[0], after)].wall_s / results[(LOADS[0], before)].wall_s
    lines += [
        "",
        f"Verdict: beside {HOGS} CPU-bound jobs the chosen count took {busy:.2f}x the time of training at every core; "
        f"on the idle machine {idle:.2f}x. One run per setting on a shared machine: read the ratios, not the seconds.",
    ]
    return "\n".join(lines)


FIGURE = Figure("threads", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
