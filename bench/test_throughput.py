"""Train-step throughput of the engine against the classic DataLoader + torch.optim loop."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import engine
from bench.conftest import ROWS, devices
from losses import make_elbo_loss
from models import build_vae

STEPS = 50  # train steps per timed round


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _record(benchmark, case, device, batch):
    ms = benchmark.stats.stats.median / STEPS * 1e3
    row = {
        "case": case,
        "device": device,
        "batch": batch,
        "ms_per_step": ms,
        "samples_per_s": batch / ms * 1e3,
    }
    benchmark.extra_info.update(row)
    ROWS.append(row)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("batch", [128])
def test_engine_mlp_vae_step(benchmark, mnist, device, compile, batch):
    torch.manual_seed(0)
    model = build_vae("mlp", 20).to(device)
    opt = engine.adam(1e-3)
    step = engine.make_train_step(make_elbo_loss(model), opt, compile=compile, donate=True)
    loader = engine.Loader(mnist(device), batch, seed=0, noise={"eps": (20,)})
    box = {"state": engine.init_state(model, opt), "it": iter(loader)}

    def batches():
        for _ in range(STEPS):
            try:
                yield next(box["it"])
            except StopIteration:
                box["it"] = iter(loader)
                yield next(box["it"])

    def run():
        state = box["state"]
        for batch in batches():  # data path (gather, scale, noise) included, as in training
            state, _ = step(state, batch)
        _sync(device)
        box["state"] = state

    t0 = time.perf_counter()
    run()  # the first round compiles; timed separately
    benchmark.extra_info["first_round_s"] = time.perf_counter() - t0
    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    _record(benchmark, f"engine mlp VAE ({'compiled' if compile else 'eager'})", device, batch)


class ClassicVAE(nn.Module):
    """pytorch/examples vae/main.py, as written there."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def _classic_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("batch", [128])
def test_peer_classic_loop(benchmark, device, batch):
    """The loop users copy today: torchvision dataset + DataLoader(ToTensor) + torch.optim.Adam."""
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    ds = datasets.MNIST(
        os.environ.get("DATA_DIR", "data"), train=True, download=False, transform=transforms.ToTensor()
    )
    kwargs = {"num_workers": 1, "pin_memory": True} if device == "cuda" else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, **kwargs)
    model = ClassicVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    box = {"it": iter(loader)}

    def run():
        for _ in range(STEPS):
            try:
                data, _ = next(box["it"])
            except StopIteration:
                box["it"] = iter(loader)
                data, _ = next(box["it"])
            data = data.to(device)
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = _classic_loss(recon, data, mu, logvar)
            loss.backward()
            opt.step()
        _sync(device)

    benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    _record(benchmark, "peer: classic DataLoader loop", device, batch)
