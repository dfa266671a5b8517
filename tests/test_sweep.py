"""A vmapped sweep trains every config exactly as separate runs with the same seed would."""

import pytest
import torch

from engine import stack_states, unstack_state
from experiments.sweep import parse, train_group


def test_stack_and_unstack_are_inverse():
    states = [{"a": torch.full((2, 3), float(i)), "b": {"c": torch.tensor(i)}} for i in range(4)]
    stacked = stack_states(states)
    assert stacked["a"].shape == (4, 2, 3)
    for i, s in enumerate(states):
        back = unstack_state(stacked, i)
        assert torch.equal(back["a"], s["a"]) and torch.equal(back["b"]["c"], s["b"]["c"])


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vmapped_sweep_equals_separate_runs(data_root, arch):
    import harness

    data = harness.load_mnist(data_root, "train")
    data = harness.Dataset(data.images[:2048], data.labels[:2048])
    argv = [
        "--beta",
        "0.5,1,4",
        "--lr",
        "1e-3,3e-3",
        "--max-steps",
        "25",
        "--batch-size",
        "64",
        "--no-compile",
        "--no-progress",
        "--arch",
        arch,
        "--latent-dim",
        "3",
    ]
    configs = [(b, lr) for b in (0.5, 1.0, 4.0) for lr in (1e-3, 3e-3)]
    _, together, _ = train_group(arch, 3, configs, parse(argv), data, torch.device("cpu"))
    _, separate, _ = train_group(arch, 3, configs, parse(argv + ["--no-vmap"]), data, torch.device("cpu"))
    for a, b in zip(together, separate):
        assert int(a.step) == int(b.step) == 25

    # batched matmuls round differently from single ones, and Adam's 1/sqrt(v) magnifies that on the
    # odd weight whose gradient is ~0 (one differed by 6.4e-4 on one thread, 2.4e-4 on two), so compare
    # whole states: each vmapped config lands within 1% of the distance to its nearest other config
    # (measured: 0.1% at worst); a config trained with another's beta or lr would be about 100% away
    def flat_params(run):
        return [torch.cat([v.flatten() for v in st.params.values()]) for st in run]

    flat = flat_params(together), flat_params(separate)
    for i, (a, b) in enumerate(zip(*flat)):
        nearest = min(float((b - other).norm()) for j, other in enumerate(flat[1]) if j != i)
        assert float((a - b).norm()) < 0.01 * nearest, (configs[i], float((a - b).norm()), nearest)
    key = "decoder.fc1.weight" if arch == "conv" else "decoder.fc3.weight"
    assert not torch.allclose(together[0].params[key], together[-1].params[key])  # configs differ


def test_every_sweep_config_is_one_tensorboard_hparams_row(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from experiments.sweep import write_hparams

    rows = [{"arch": "mlp", "latent_dim": 2, "beta": b, "lr": 1e-3, "neg_elbo": 150.0 + b, "nll": 140.0 + b}
            for b in (0.5, 4.0)]  # fmt: skip
    write_hparams(tmp_path, rows)
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in runs] == [f"archmlp-latent_dim2-beta{b}-lr0.001" for b in (0.5, 4.0)]
    for run, row in zip(runs, rows):
        acc = EventAccumulator(str(run))
        acc.Reload()
        assert acc.Scalars("hparam/neg_elbo")[0].value == row["neg_elbo"]
        events = [e for f in run.glob("events*") for e in EventFileLoader(str(f)).Load()]
        tags = {v.tag for e in events for v in e.summary.value}
        assert "_hparams_/session_start_info" in tags  # the hparams plugin's row for this config


def test_a_vmapped_adam_step_needs_no_per_config_fallback():
    """vmap has no batching rule for in-place lerp_ or addcmul_: it warns once a process and loops
    over the configs. The per-tensor optimizer runs them out of place, so a fresh process warns nothing."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = """if True:
        import warnings, torch, engine
        from losses import make_elbo_loss
        from models import build_vae
        model, opt = build_vae("mlp", 4), engine.adam(1e-3, foreach=False)
        step = engine.make_vmapped_train_step(make_elbo_loss(model), opt, config_keys=("beta",))
        state = engine.tree_map(lambda t: torch.stack([t, t]), engine.init_state(model, opt))
        batch = {"x": torch.rand(8, 1, 28, 28), "eps": torch.randn(8, 4), "beta": torch.tensor([1.0, 2.0])}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state, _ = step(state, batch)
        assert int(state.step[1]) == 1
        print(*{str(w.message) for w in caught}, sep="\\n")
    """
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "batching rule" not in proc.stdout, proc.stdout
