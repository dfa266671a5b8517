"""What fit scores after each epoch: a function of the state and the name of the split it scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine import StepOptions, make_eval_step
from harness.data import Dataset
from harness.loader import TEST_SEED, eval_batches, evaluate_mean
from harness.world import World

EVAL_BATCH = 1000  # images per evaluation batch


@dataclass(frozen=True)
class Evaluator:
    """evaluate(state) -> {metric: float}; `split` names it in metrics.jsonl (test_loss, val_loss)."""

    score: Callable[[object], dict[str, float]]
    split: str = "test"

    def __call__(self, state) -> dict[str, float]:
        return self.score(state)


def loss_evaluator(
    loss_fn, data: Dataset, options: StepOptions, world: World, noise=None, binarize=False, split="test"
) -> Evaluator:
    """The means of loss_fn and its metrics over `data` in fixed batches (the same binarisation and
    noise draws each time), sharded over the ranks of `world`."""
    eval_step = make_eval_step(loss_fn, options)

    def score(state) -> dict[str, float]:
        batches = eval_batches(data, EVAL_BATCH, TEST_SEED, noise, binarize)
        return evaluate_mean(eval_step, state, batches, world)

    return Evaluator(score, split)
