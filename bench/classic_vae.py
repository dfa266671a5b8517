"""The whole classic program, as pytorch/examples vae/main.py runs it (the end-to-end peer): each
epoch trains with a print every 10 batches, scores the test set, and writes a reconstruction
comparison and 64 samples as PNGs; on an accelerator where there is one (a GPU), as the script does,
unless --no-accel. `python -m bench.classic_vae --epochs 10 --out DIR`."""

from __future__ import annotations

import argparse
import os

import torch
from torchvision import datasets, transforms
from torchvision.utils import save_image

from bench.peer import ClassicVAE, classic_loss


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--out", default="results")
    parser.add_argument("--no-accel", action="store_true", help="the CPU even where a GPU is present")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    use_accel = not args.no_accel and torch.accelerator.is_available()
    device = torch.accelerator.current_accelerator() if use_accel else torch.device("cpu")
    kwargs = {"num_workers": 1, "pin_memory": True} if use_accel else {}
    root = os.environ.get("DATA_DIR", "data")
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor()),
        batch_size=args.batch_size, shuffle=True, **kwargs,
    )  # fmt: skip
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(root, train=False, transform=transforms.ToTensor()),
        batch_size=args.batch_size, shuffle=False, **kwargs,
    )  # fmt: skip
    model = ClassicVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    os.makedirs(args.out, exist_ok=True)
    test_loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        train_loss = 0.0
        for batch_idx, (data, _) in enumerate(train_loader):
            data = data.to(device)
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = classic_loss(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                print(
                    f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} "
                    f"({100.0 * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item() / len(data):.6f}"
                )
        print(f"====> Epoch: {epoch} Average loss: {train_loss / len(train_loader.dataset):.4f}")
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for i, (data, _) in enumerate(test_loader):
                data = data.to(device)
                recon_batch, mu, logvar = model(data)
                test_loss += classic_loss(recon_batch, data, mu, logvar).item()
                if i == 0:
                    n = min(data.size(0), 8)
                    comparison = torch.cat([data[:n], recon_batch.view(args.batch_size, 1, 28, 28)[:n]])
                    save_image(comparison, f"{args.out}/reconstruction_{epoch}.png", nrow=n)
        test_loss /= len(test_loader.dataset)
        print(f"====> Test set loss: {test_loss:.4f}")
        with torch.no_grad():
            sample = model.decode(torch.randn(64, 20).to(device))
            save_image(sample.view(64, 1, 28, 28), f"{args.out}/sample_{epoch}.png")
    return test_loss


if __name__ == "__main__":
    main()
