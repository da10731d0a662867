"""Teacher chains: does the smallest digits student learn better through an intermediate student
(teacher-assistant distillation) than straight from the teacher?

Both sides make the example's smallest tier (`twentieth`: <= 5 % of the teacher's parameters) the
way a run does. Direct: pruned from the teacher by `search`, distilled on the teacher's cached
outputs. Chain: the `fifth` tier's student (<= 20 %) is pruned from the teacher and distilled
first; the smallest student is then pruned from it and distilled on its outputs, which is what
`teacher = "tier:fifth"` does in a run. Same budgets, settings, data and seed on both sides; the
seed changes initialisation-free things only (data order), so the spread shows training noise.

Run: python -m benchmarks.chain_vs_direct [--quick]
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from benchmarks import fixtures
from benchmarks.compare import mean_std
from benchmarks.results import Figure, main, table
from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import TeacherOutputs, accuracy, fit, predict, teacher_outputs
from edgedistill.compress.search import search

HEADING = "## 7. Teacher chains: the smallest digits tier, through an assistant vs direct"
SMALL, ASSISTANT = "twentieth", "fifth"
SEEDS, QUICK_SEEDS, QUICK_EPOCHS = 5, 2, 3


@dataclass(frozen=True)
class Trial:
    seed: int
    direct: float
    chained: float
    assistant: float


def _prune(teacher: nn.Module, tier_name: str) -> nn.Module:
    """The tier's student pruned from `teacher` by the search, budgets relative to the run's teacher."""
    cfg, data = fixtures.example(), fixtures.digits()
    tier = next(t for t in cfg.tiers if t.name == tier_name)
    shape = data.train.x.shape[1:]
    resolved = budgets.resolve(tier.budget, budgets.measure(fixtures.teacher(), shape))
    return search(tier.student, teacher, shape, resolved).model


def _distil(model: nn.Module, outputs: TeacherOutputs, seed: int, quick: bool) -> nn.Module:
    cfg, data = fixtures.example(), fixtures.digits()
    settings = fixtures.epochs(cfg.distill, QUICK_EPOCHS) if quick else cfg.distill
    with fixtures.torch_threads(fixtures.TRAIN_THREADS):
        return fit(model, data.train, data.val, settings, seed, outputs).model


def _test_accuracy(model: nn.Module) -> float:
    test = fixtures.digits().test
    return accuracy(predict(model, test.x), test.y)


def trial(seed: int, quick: bool) -> Trial:
    teacher, train = fixtures.teacher(), fixtures.digits().train
    direct = _distil(_prune(teacher, SMALL), fixtures.cached_outputs(), seed, quick)
    assistant = _distil(_prune(teacher, ASSISTANT), fixtures.cached_outputs(), seed, quick)
    chained = _distil(_prune(assistant, SMALL), teacher_outputs(assistant, train.x), seed, quick)
    return Trial(seed, _test_accuracy(direct), _test_accuracy(chained), _test_accuracy(assistant))


def run(quick: bool) -> str:
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    trials = [trial(seed, quick) for seed in seeds]
    direct, chained = mean_std([t.direct for t in trials]), mean_std([t.chained for t in trials])
    wins = sum(t.chained > t.direct for t in trials)
    ties = sum(t.chained == t.direct for t in trials)
    diff = chained[0] - direct[0]
    rows = [(t.seed, f"{100 * t.assistant:.2f}", f"{100 * t.direct:.2f}", f"{100 * t.chained:.2f}") for t in trials]
    rows.append(("mean ± sd", "", f"{100 * direct[0]:.2f} ± {100 * direct[1]:.2f}", f"{100 * chained[0]:.2f} ± {100 * chained[1]:.2f}"))
    helps = abs(diff) > max(direct[1], chained[1])
    verdict = (
        f"the chain {'helps' if diff > 0 else 'hurts'} here: {100 * diff:+.2f} points on average, more than the seed-to-seed spread"
        if helps else
        f"no clear difference here: {100 * diff:+.2f} points on average, within the seed-to-seed spread "
        f"(chain better in {wins}, tied in {ties} of {len(trials)} seeds). The digits teacher is small "
        "(160k parameters) and the gap to a 5 % student modest, which is where teacher assistants matter least"
    )
    return "\n".join([
        f"What: held-out accuracy ({len(fixtures.digits().test)} digits never trained or early-stopped on) of the "
        f"`{SMALL}` student made directly from the teacher against one made through the `{ASSISTANT}` student, "
        f"over {len(trials)} seeds, with the example's distillation settings"
        f"{' cut to ' + str(QUICK_EPOCHS) + ' epochs (quick)' if quick else ''}.",
        "",
        table(("seed", f"assistant ({ASSISTANT}) %", f"direct {SMALL} %", f"chained {SMALL} %"), rows),
        "",
        f"Verdict: {verdict}.",
    ])


FIGURE = Figure("chain_vs_direct", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
