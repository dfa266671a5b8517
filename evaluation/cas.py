"""Classification accuracy score (CAS, Ravuri and Vinyals 2019): the project's classifier trained on
generated images only, then tested on the real test split. A conditional generator whose images
look right but miss the class, or cover only part of each class, makes a poor training set."""

from __future__ import annotations

import torch

import engine
from harness import Dataset, Loader, progress, to_unit
from losses.classify import SHIFT_NOISE, make_classifier_loss
from models.classifier import build_classifier

EPOCHS, BATCH, LR, WARMUP, MAX_SHIFT = 3, 128, 3e-3, 100, 2
COMPILE_FROM = 500  # steps (60,000 images: 1,404 steps; the tests' 2,000: 46)


def per_class_agreement(logits: torch.Tensor, requested: torch.Tensor, classes: int) -> list[float]:
    """For each class c: how often the classifier says c for the images asked to be c."""
    hits = logits.argmax(1).cpu() == requested.cpu()
    return [float(hits[requested.cpu() == c].double().mean()) for c in range(classes)]


def to_dataset(images: torch.Tensor, labels: torch.Tensor) -> Dataset:
    """Images (N, C, H, W) in [0, 1] as the loader's uint8 data set (N, H, W) for one channel."""
    pixels = (images * 255).round().clamp(0, 255).to(torch.uint8)
    return Dataset(pixels[:, 0] if pixels.shape[1] == 1 else pixels, labels.long())


@torch.no_grad()
def accuracy(model, params, buffers, test: Dataset, batch: int = 250) -> float:
    """Top-1 accuracy of the classifier on the test split, its conv weights in channels-last (3x the
    NCHW rate on a CPU, as evaluation.features runs them; the training stays NCHW)."""
    last = torch.channels_last
    params = {k: v.contiguous(memory_format=last) if v.dim() == 4 else v for k, v in params.items()}
    right = 0
    for i in range(0, len(test.labels), batch):
        logits, _ = engine.call_module(model, params, buffers, to_unit(test.images[i : i + batch]))
        right += int((logits.argmax(1) == test.labels[i : i + batch]).sum())
    return right / len(test.labels)


def classification_accuracy_score(
    train: Dataset, test: Dataset, seed: int = 0, epochs: int = EPOCHS
) -> float:
    """Test accuracy of a classifier trained from scratch on `train` (generated images and the labels
    they were asked for): experiments.classifier's network, loss and shift augmentation on a
    shorter schedule (epochs of AdamW, cosine decay after a warm-up), compiled from
    COMPILE_FROM steps on (below that the compilation costs more than it saves)."""
    torch.manual_seed(seed)
    device = train.images.device
    model = build_classifier().to(device)
    steps = epochs * (len(train.labels) // BATCH)
    optimizer = engine.adam(engine.cosine(LR, steps, WARMUP), weight_decay=0.01, decoupled=True)
    step = engine.make_train_step(
        make_classifier_loss(model, MAX_SHIFT), optimizer, engine.StepOptions(compile=steps >= COMPILE_FROM)
    )
    state = engine.init_state(model, optimizer)
    loader = Loader(train, BATCH, seed=seed, noise={SHIFT_NOISE: (2,)})
    with progress.bar(total=steps, desc="CAS: training on generated images", leave=False) as bar:
        for _ in range(epochs):
            for batch in loader:
                state, _ = step(state, batch)
                bar.update(1)
    return accuracy(model, state.params, state.buffers, test)
