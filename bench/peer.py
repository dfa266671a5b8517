"""The peer loop: the mlp VAE as pytorch/examples writes it (DataLoader, nn.Module, torch.optim.Adam)."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class ClassicVAE(nn.Module):
    """pytorch/examples vae/main.py, as written there (784-400-20, the engine's mlp VAE)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def classic_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def build_peer(device: str, batch: int) -> Callable[[int], None]:
    """advance(n): n steps of the loop users copy today (torchvision MNIST, shuffled DataLoader with
    ToTensor, one loss.backward() and optimizer.step() per batch)."""
    from torchvision import datasets, transforms

    ds = datasets.MNIST(
        os.environ.get("DATA_DIR", "data"), train=True, download=False, transform=transforms.ToTensor()
    )
    kwargs = {"num_workers": 1, "pin_memory": True} if device == "cuda" else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, **kwargs)
    model = ClassicVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    box = {"it": iter(loader)}

    def advance(n: int) -> None:
        for _ in range(n):
            data = next(box["it"], None)
            if data is None:
                box["it"] = iter(loader)
                data = next(box["it"])
            data = data[0].to(device)  # (B, 1, 28, 28)
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = classic_loss(recon, data, mu, logvar)
            loss.backward()
            opt.step()

    return advance
