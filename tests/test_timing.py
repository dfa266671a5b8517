"""Where a command's time goes (harness.timing), the throttle on per-epoch figures, quiet logs off a
terminal, and the compiled-step cache (engine.compile_step(cache=...)) against the uncached step."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

import engine
from engine.state import Aux, flatten_state
from harness import progress
from harness.timing import Phases, Throttled


def test_phases_count_each_second_once_nested_blocks_apart():
    phases = Phases(start=time.time())
    with phases("outer"):
        time.sleep(0.05)
        with phases("inner"):
            time.sleep(0.1)
    with phases("inner"):
        time.sleep(0.05)
    t = phases.table()
    assert t["inner"] == pytest.approx(0.15, abs=0.03) and t["outer"] == pytest.approx(0.05, abs=0.03)
    assert sum(v for k, v in t.items() if k != "total") == pytest.approx(t["total"], abs=0.002)
    phases.stepped()
    assert phases.table()["to_first_step"] <= phases.table()["total"]
    phases.begin_run()  # a second run in the same process: a fresh table, no imports counted
    assert phases.seconds == {} and phases.first_step is None


def test_throttled_skips_while_its_cost_would_exceed_its_share_and_flushes_the_last_call():
    calls = []

    def draw(i):
        calls.append(i)
        time.sleep(0.02)

    plots = Throttled(draw, share=0.1)  # 20 ms a drawing: at most one per 200 ms
    for i in range(5):
        plots(i)
    assert calls == [0]
    plots.flush()
    assert calls == [0, 4]  # the newest skipped call, once
    plots.flush()
    assert calls == [0, 4]
    time.sleep(0.25)
    plots(5)
    assert calls == [0, 4, 5]


def test_progress_bars_only_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert list(progress.bar(range(3), desc="x")) == [0, 1, 2]
    progress.say("epoch 1: loss 1.0")
    out, err = capsys.readouterr()
    assert out == "epoch 1: loss 1.0\n" and err == ""
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    assert not progress.bar(range(3)).disable


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _build(cache, donate=True):
    torch.manual_seed(0)
    net = _Net()

    def loss_fn(params, buffers, batch):
        out, buffers = engine.call_module(net, params, buffers, batch["x"])
        loss = ((out - batch["y"]) ** 2).mean()
        return loss, Aux({"mse": loss}, buffers)

    opt = engine.adam(1e-2)
    step = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=True, donate=donate, cache=cache))
    return step, engine.init_state(net, opt)


def _run(step, state, n=4):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(32, 6, generator=g)
        state, metrics = step(state, {"x": x, "y": x.sum(1, keepdim=True)})
    return flatten_state(state), metrics


def test_the_compiled_step_cache_is_saved_then_loaded_and_bitwise_equal_to_compiling(tmp_path, capsys):
    ref, ref_metrics = _run(*_build(None))
    path = tmp_path / "steps" / "net.aot"
    torch._dynamo.reset()
    first, _ = _run(*_build(path))  # compiled ahead of time, saved under the step's fingerprint
    [entry] = path.parent.glob("net-*.aot")
    assert entry.stat().st_size > 0
    torch._dynamo.reset()
    step, state = _build(path)  # built again: new objects, the same fingerprint
    with torch._dynamo.config.patch(error_on_recompile=True):
        calls = torch._dynamo.utils.counters["stats"]["calls_captured"]
        loaded, metrics = _run(step, state)  # loaded: dynamo traces nothing
        assert torch._dynamo.utils.counters["stats"]["calls_captured"] == calls
    for got in (first, loaded):
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    assert torch.equal(metrics["mse"], ref_metrics["mse"])
    assert "note:" not in capsys.readouterr().err


def test_a_damaged_cache_file_falls_back_to_compiling_with_a_note(tmp_path, capsys):
    ref, _ = _run(*_build(None))
    path = tmp_path / "net.aot"
    _run(*_build(path))
    [entry] = tmp_path.glob("net-*.aot")
    entry.write_bytes(b"not a compiled step")
    torch._dynamo.reset()
    got, _ = _run(*_build(path))
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert "compiled-step cache" in capsys.readouterr().err


def test_a_fingerprint_sees_what_a_trace_bakes_in_and_not_the_weights_or_inputs():
    def build(seed=0, scale=2.0, constant=None, attr=0.5):
        torch.manual_seed(seed)
        net = _Net()
        net.attr = attr  # a plain attribute forward could read: baked into a trace
        shift = torch.ones(3) if constant is None else constant

        def loss_fn(params, buffers, batch):
            return (scale * batch["x"]).sum() + shift.sum(), None

        return loss_fn, net

    x = {"x": torch.randn(4, 6)}
    base = engine.fingerprint(build(), x)
    assert engine.fingerprint(build(seed=1), {"x": torch.randn(4, 6)}) == base  # other weights and inputs
    for changed in (build(scale=3.0), build(constant=torch.zeros(3)), build(attr=0.6)):
        assert engine.fingerprint(changed, x) != base
    assert engine.fingerprint(build(), {"x": torch.randn(5, 6)}) != base  # an input of another shape
    assert engine.fingerprint(build(), {"x": torch.randn(6, 4).t()}) != base  # or layout


def test_a_fingerprint_reads_slots_class_values_and_paths_alike_in_every_process():
    class Slotted:
        __slots__ = ("__value",)  # private: stored mangled

        def __init__(self, value):
            self.__value = value

    class Scaled:
        factor = 1.0  # a class value `self.factor` reads

    assert engine.fingerprint((Slotted(1), Slotted(2))) != engine.fingerprint((Slotted(1), Slotted(3)))
    before = engine.fingerprint(Scaled())
    Scaled.factor = 2.0
    assert engine.fingerprint(Scaled()) != before
    weight = torch.ones(3)
    held = (lambda w: lambda: w)(weight)  # a closure constant that is also an input
    before = engine.fingerprint(held, (weight,))
    weight.add_(1)
    assert engine.fingerprint(held, (weight,)) != before
    path = Path("runs/a")
    before = engine.fingerprint(path)
    assert str(path) and path == Path("runs/a") and engine.fingerprint(path) == before


def test_a_step_the_fingerprint_cannot_read_compiles_without_a_file(tmp_path, capsys):
    net, opt = _Net(), engine.adam(1e-2)

    def loss_fn(params, buffers, batch, unread=torch.eye(3).to_sparse()):  # no layout to hash
        out, buffers = engine.call_module(net, params, buffers, batch["x"])
        loss = ((out - batch["y"]) ** 2).mean()
        return loss, Aux({"mse": loss}, buffers)

    options = engine.StepOptions(compile=True, cache=tmp_path / "net.aot")
    got, _ = _run(engine.make_train_step(loss_fn, opt, options), engine.init_state(net, opt), n=2)
    torch._dynamo.reset()
    ref, _ = _run(
        engine.make_train_step(loss_fn, opt, engine.StepOptions()), engine.init_state(net, opt), n=2
    )
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert "not used" in capsys.readouterr().err and not list(tmp_path.iterdir())


@pytest.fixture
def step_file(data_root, tmp_path, monkeypatch):
    """step_file(main, *flags): the file the run's first compiled step would be saved to,
    found by running the command up to that step (nothing is compiled)."""
    import engine.step

    monkeypatch.setenv("PURESTEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DATA_DIR", str(data_root))
    names = []

    def stop(step, mode, args, path):
        names.append(path)
        raise SystemExit(0)

    monkeypatch.setattr(engine.step, "_cached", stop)

    def path(main, *flags):
        run = tmp_path / f"run{len(names)}"
        with pytest.raises(SystemExit):
            main([*flags, "--run-dir", str(run), "--no-progress", "--no-tensorboard"])
        return names[-1]

    return path


def test_the_cache_file_name_changes_with_what_the_step_depends_on_and_only_that(
    step_file, tmp_path, monkeypatch
):
    from experiments import ae, gan, vae
    from harness.device import resolve_precision

    path = step_file
    parity = ("--arch", "mlp", "--epochs", "10", "--batch-size", "128", "--lr", "1e-3")
    base = path(vae.main, *parity)
    assert base.parent == tmp_path / "cache" / "steps" and base.name.startswith("vae-step-")
    # what never reaches the step: the seed, the epochs (no schedule), a data set of the same shape
    same = path(
        vae.main, *parity, "--seed", "3", "--epochs", "2", "--dataset", "fashion-mnist", "--val-split", "100"
    )
    assert same == base
    other = "fp32" if resolve_precision("auto", torch.device("cpu")) == "bf16" else "bf16"  # not the default
    for changed in (("--lr", "2e-3"), ("--latent-dim", "8"), ("--precision", other), ("--batch-size", "64"),
                    ("--kl-warmup", "100"), ("--lr-decay", "cosine"), ("--arch", "conv")):  # fmt: skip
        assert path(vae.main, *parity, *changed) != base, changed
    assert path(vae.main, *parity, "--lr-decay", "cosine") != path(
        vae.main, *parity, "--lr-decay", "cosine", "--epochs", "3"
    )
    assert path(ae.main, "--dataset", "fashion-mnist") == path(ae.main)
    assert path(gan.main, "--epochs", "3") == path(gan.main)
    top_k = ("--top-k", "0.5")  # its share falls over the whole run: the epochs now reach the step
    assert path(gan.main, *top_k, "--epochs", "3") != path(gan.main, *top_k) != path(gan.main)
    from experiments.vae import VAEConfig
    from harness.stepcache import step_cache_path

    assert step_cache_path(VAEConfig(compile_cache=False), "vae", 1, torch.device("cpu")) is None
    monkeypatch.setenv("PURESTEP_CACHE", "off")
    assert step_cache_path(VAEConfig(), "vae", 1, torch.device("cpu")) is None


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a run's TensorBoard files, read back by tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def test_tensorboard_holds_the_logged_records_and_a_resume_logs_no_step_twice(data_root, tmp_path):
    import json

    from tests.conftest import run_cli

    run = tmp_path / "vae"
    flags = ["--arch", "mlp", "--latent-dim", "2", "--no-compile", "--batch-size", "256", "--run-dir", run]
    run_cli("experiments.vae", [*flags, "--max-steps", "120", "--checkpoint-every", "40", "--keep", "5"],
            data_root)  # fmt: skip
    # as if killed after logging step 100 but before its checkpoint at 120: resume from step 80
    (run / "checkpoints" / "step-00000120.safetensors").unlink()
    resume = ["--resume", run, "--epochs", "1", "--max-steps", "0", "--no-progress"]
    run_cli("experiments.vae", resume, data_root)
    scalars, acc = _scalars(run / "tensorboard")
    lines = (run / "steps.jsonl").read_text().splitlines() + (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [s for s, _ in scalars["loss"]] == [r["step"] for r in records if "loss" in r and "epoch" not in r]
    for r in records:  # every number of every record, at its step, once
        for name, value in r.items():
            if name in ("step", "epoch"):
                continue
            hits = [v for s, v in scalars[name] if s == r["step"]]
            assert hits == [pytest.approx(value, rel=1e-5)], (name, r["step"], hits)
    assert scalars["lr"] and all(v == pytest.approx(1e-3) for _, v in scalars["lr"])
    assert {"reconstructions", "prior_samples"} <= set(acc.Tags()["images"])
    assert "final_test_loss" in scalars
    projector = (run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "sprite" in projector and "metadata.tsv" in projector


def test_warm_prepares_the_very_cache_entries_the_default_commands_load(step_file):
    from experiments.warm import COMMANDS

    for entry, flags, loop in COMMANDS.values():
        command = step_file(entry, *flags)
        assert step_file(entry, *flags, *loop) == command, (flags, loop)


def test_warm_fills_the_cache_and_the_command_then_loads_it(data_root, tmp_path, monkeypatch):
    from tests.conftest import run_cli

    monkeypatch.setenv("PURESTEP_CACHE", str(tmp_path / "cache"))
    proc = run_cli("experiments.warm", ["--only", "parity"], data_root)
    assert "warm: parity" in proc.stdout and "compiled step ready" in proc.stdout
    entries = list((tmp_path / "cache" / "steps").glob("*.aot"))
    assert len(entries) == 1 and entries[0].with_name(entries[0].name + ".sig").exists()
    written = entries[0].stat().st_mtime_ns
    parity = ["--arch", "mlp", "--epochs", "10", "--batch-size", "128", "--lr", "1e-3", "--max-steps", "3"]
    proc = run_cli("experiments.vae", [*parity, "--run-dir", tmp_path / "run", "--no-progress"], data_root)
    assert "note:" not in proc.stderr  # loaded, not refused or recompiled
    assert entries[0].stat().st_mtime_ns == written  # loaded: a compiled step would have been saved again
