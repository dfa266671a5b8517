"""Model selection on a validation split: the weights of the best epoch kept beside the run, and
brought back into the final state, so the test split scores the chosen epoch only."""

from __future__ import annotations

from pathlib import Path

from engine import atomic_write, load_weights, save_weights
from harness.files import json_text, read_json

BEST = "best.safetensors"  # the weights of the best epoch so far; best.json: which one


def keep_if_best(run_dir: Path, state, record: dict, key: str = "val_loss") -> None:
    """best.safetensors and best.json: the weights of the epoch with the lowest record[key] so far.
    key: the true bound on validation, whatever the training loss weighs (beta, warm-up, free bits)."""
    best = run_dir / "best.json"
    if best.exists() and read_json(best).get(key, float("inf")) <= record[key]:
        return
    save_weights(run_dir / BEST, state.params, state.buffers)
    text = json_text({k: record[k] for k in ("epoch", "step", "val_loss", key)}, indent=None)
    atomic_write(best, lambda tmp: tmp.write_text(text))


def selected(run_dir: Path, state):
    """state with the params and buffers of best.safetensors (the rest, optimizer included, as is)."""
    weights, _ = load_weights(run_dir / BEST, state.step.device)
    chosen = read_json(run_dir / "best.json")
    print(f"selected epoch {chosen['epoch']} (val loss {chosen['val_loss']:.4f})")
    params = {k: weights[k].to(v.dtype) for k, v in state.params.items()}
    buffers = {k: weights[k].to(v.dtype) for k, v in state.buffers.items()}
    return state._replace(params=params, buffers=buffers)
