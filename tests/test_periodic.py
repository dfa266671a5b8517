"""fit's periodic actions, one by one (harness/periodic.py), the step iterator and the opened run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch

import engine
import harness
from harness.periodic import EpochEnd, EpochMeter, Journal, NonFiniteError, Probes, Saver, StepLog, StopFlag
from harness.rundir import PROBES, STEPS, list_checkpoints
from harness.train import resume as resume_run


def _loader(n=64, batch=8):
    data = harness.Dataset(
        torch.randint(0, 255, (n, 1, 2, 2), dtype=torch.uint8), torch.zeros(n, dtype=torch.long)
    )
    return harness.Loader(data, batch, seed=0)


def _metrics(loss, skipped=0.0):
    return {"loss": torch.tensor(float(loss)), "skipped": torch.tensor(float(skipped))}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_steps_yields_after_each_step_and_stops_at_max_steps():
    loader, seen = _loader(), []

    def step(state, batch):
        seen.append(batch["x"].shape[0])
        return state + 1, {"n": state}

    states = [s for s, _ in harness.steps(step, 0, loader, max_steps=3)]
    assert states == [1, 2, 3] and loader.steps_taken == 3 and seen == [8, 8, 8]
    rest = [s for s, _ in harness.steps(step, 3, loader)]  # the rest of the epoch, no limit
    assert rest == [4, 5, 6, 7, 8] and (loader.epoch, loader.batch) == (1, 0)


def test_step_log_writes_running_means_every_n_steps_and_names_a_skipped_update(tmp_path):
    log = StepLog(2, False, Journal(tmp_path, True), None)
    meter = EpochMeter(_loader(), 1, enabled=False)
    for done, loss in enumerate([1.0, 3.0, 7.0], start=1):
        meter.stepped()
        log(_metrics(loss), done, meter, None)
    records = _lines(tmp_path / STEPS)
    assert [r["step"] for r in records] == [2] and records[0]["loss"] == 2.0  # nothing at step 3 yet
    with pytest.raises(NonFiniteError, match="step 4: non-finite loss=nan"):
        log(_metrics(float("nan"), skipped=1.0), 4, meter, None)  # found at the sync point, named
    with pytest.raises(NonFiniteError, match="step 5: non-finite gradient"):
        log(_metrics(5.0, skipped=1.0), 5, meter, None)  # also off the sync points, by check()
        log.check(5, None)
    quiet = StepLog(1, True, Journal(tmp_path / "quiet", False), None)  # --skip-nonfinite: counted, no error
    quiet(_metrics(float("nan"), skipped=1.0), 1, meter, None)
    assert len(quiet.history) == 1 and not (tmp_path / "quiet").exists()  # rank > 0 writes nothing


def test_probes_log_step_images_and_a_wall_clock_that_continues_over_a_resume(tmp_path):
    calls = []
    probes = Probes(
        lambda s: calls.append(s) or {"score": float(s)}, 2, Journal(tmp_path, True), batch_size=8
    )
    for done in range(1, 6):
        probes(done * 10, done)
    first = _lines(tmp_path / PROBES)
    assert calls == [20, 40] and [(r["step"], r["images"], r["score"]) for r in first] == [
        (2, 16, 20.0),
        (4, 32, 40.0),
    ]
    again = Probes(lambda s: {"score": 0.0}, 2, Journal(tmp_path, True), batch_size=8)  # a resumed process
    again(None, 6)
    walls = [r["wall_s"] for r in _lines(tmp_path / PROBES)]
    assert walls == sorted(walls) and walls[-1] >= first[-1]["wall_s"]
    Probes(None, 2, Journal(tmp_path / "none", True), 8)(None, 2)  # no probe: nothing written
    assert not (tmp_path / "none" / PROBES).exists()


def test_saver_checkpoints_every_n_steps_within_an_epoch_once_per_step(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = engine.adam(1e-3)
    state, loader = engine.init_state(model, opt), _loader()
    save = Saver(tmp_path, loader, {}, keep=5, every=3, main=True)
    log = StepLog(100, False, Journal(tmp_path, True), [_metrics(1.0)])
    for done in range(1, 8):
        save.every_n(state, done, log, same_epoch=done != 6)  # step 6 ends an epoch: its end saves it
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003.safetensors"]
    save(state, 6, log.history)
    save(state, 6, log.history)  # a second call for the same step (SIGINT just after) writes nothing new
    assert [p.name for p in list_checkpoints(tmp_path)][0] == "step-00000006.safetensors"
    assert save.last == list_checkpoints(tmp_path)[0] and len(list_checkpoints(tmp_path)) == 2
    Saver(tmp_path / "rank1", loader, {}, 5, 3, main=False)(state, 9, log.history)
    assert not list_checkpoints(tmp_path / "rank1")


def test_epoch_end_records_the_evaluators_split_and_calls_back_on_rank_0(tmp_path, capsys):
    seen = []
    history = [_metrics(2.0), _metrics(4.0, skipped=1.0)]
    meter = EpochMeter(_loader(), 1, enabled=False)
    meter.stepped()
    val = harness.Evaluator(lambda s: {"loss": 1.5}, split="val")
    EpochEnd(val, lambda s, r: seen.append(r), Journal(tmp_path, True), ("train_loss", "val_loss"))(
        None, 0, 2, history, meter
    )
    record = _lines(tmp_path / "metrics.jsonl")[0]
    assert record["val_loss"] == 1.5 and record["train_loss"] == 3.0 and record["skipped_nonfinite"] == 1
    assert seen == [record] and "epoch 1: train_loss 3.0000, val_loss 1.5000" in capsys.readouterr().out
    EpochEnd(lambda s: {"loss": 0.5}, seen.append, Journal(tmp_path / "r1", False), ())(
        None, 0, 2, history, meter
    )
    assert len(seen) == 1 and not (tmp_path / "r1").exists()  # rank > 0: no log, no callback
    plain = EpochEnd(lambda s: {"loss": 0.5}, None, Journal(tmp_path, True), ())
    plain(None, 1, 4, history, meter)
    assert _lines(tmp_path / "metrics.jsonl")[-1]["test_loss"] == 0.5  # a plain function scores "test"


def test_stop_flag_turns_signals_into_a_flag_and_a_second_ctrl_c_into_an_interrupt():
    with StopFlag(harness.World(), 10, torch.device("cpu")) as stop:
        assert not stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop(2) and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(harness.Interrupted) as e:
            stop.exit(2, "ckpt", "run")
        assert e.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is not stop._handle  # the old handlers are back


def test_an_opened_run_is_frozen_and_holds_what_its_flags_say(data_root, tmp_path, monkeypatch):
    from experiments.vae import VAEConfig
    from harness import device

    monkeypatch.setenv("DATA_DIR", str(data_root))
    argv = ["--arch", "mlp", "--val-split", "1000", "--run-dir", str(tmp_path / "r"), "--no-compile-cache"]
    run = harness.open_run(VAEConfig, argv, "vae")
    assert (
        len(run.data.val.images) == 1000 and len(run.train.images) == 59000 and len(run.test.images) == 10000
    )
    native = device.resolve_precision("auto", torch.device("cpu"))  # the default: bf16 where native
    assert run.options == engine.StepOptions(precision=native, compile="auto", donate=True)
    assert not (tmp_path / "r" / "config.json").exists()  # written when training starts, not before
    resume_run(run, None, run.loader())
    assert json.loads((tmp_path / "r" / "config.json").read_text())["experiment"] == "vae"
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.config = None
    assert run.evaluator(lambda *a: None, split="val").split == "val"
    with pytest.raises(harness.UsageError, match="already holds a run"):
        harness.open_run(VAEConfig, argv, "vae")


def test_running_means_skip_non_finite_values_and_leave_out_a_metric_with_none():
    from harness.periodic import mean_metrics

    t = torch.tensor
    history = [{"loss": t(1.0), "r1": t(2.0)}, {"loss": t(float("inf")), "r1": t(float("nan"))},
               {"loss": t(3.0), "r1": t(float("nan"))}]  # fmt: skip
    assert mean_metrics(history, "train_") == {"train_loss": 2.0, "train_r1": 2.0}
    assert mean_metrics(history[1:], "") == {"loss": 3.0}  # no finite r1 in these steps: no r1 at all


@pytest.mark.parametrize("flags,expected", [({"avx2", "fma"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"),
                                            ({"amx_bf16", "amx_tile"}, "bf16")])  # fmt: skip
def test_precision_auto_is_bf16_only_on_a_cpu_with_bf16_in_hardware_and_is_saved_resolved(
    data_root, tmp_path, monkeypatch, flags, expected
):
    from experiments.gan import GANConfig
    from harness import device

    monkeypatch.setenv("DATA_DIR", str(data_root))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {' '.join(sorted(flags))}\n")
    monkeypatch.setattr(device, "CPUINFO", cpuinfo)
    assert device.resolve_precision("auto", torch.device("cpu")) == expected
    assert device.resolve_precision("fp16", torch.device("cpu")) == "fp16"  # as given
    run = harness.open_run(GANConfig, ["--device", "cpu", "--run-dir", str(tmp_path / "r")], "gan")
    assert run.config.precision == run.options.precision == expected
    resume_run(run, None, run.loader())  # a new run's config.json, as training starts
    assert json.loads((tmp_path / "r" / "config.json").read_text())["precision"] == expected
