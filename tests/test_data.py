"""Tensor-resident data against torchvision's readers, and its failure messages."""

import shutil

import pytest
import torch
import torchvision
from torchvision.transforms.functional import to_tensor

import harness
from harness.data import DataError, epoch_permutation, to_unit
from harness.loader import Loader, eval_batches


@pytest.mark.parametrize(
    "name,cls", [("mnist", torchvision.datasets.MNIST), ("fashion-mnist", torchvision.datasets.FashionMNIST)]
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_matches_torchvision(data_root, name, cls, split):
    ours = harness.load_dataset(name, split, root=data_root)
    ref = cls(str(data_root), train=split == "train", download=False)
    assert ours.images.dtype == torch.uint8 and ours.images.shape == ref.data.shape
    assert torch.equal(ours.images, ref.data)
    assert torch.equal(ours.labels, ref.targets)
    for i in (0, 1, len(ref) - 1):  # and the [0, 1] scaling equals ToTensor() on the PIL image
        image, label = ref[i]
        assert torch.equal(to_unit(ours.images[i : i + 1])[0], to_tensor(image))
        assert int(ours.labels[i]) == label


def _copy_raw(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    return raw


def test_missing_files_name_data_dir_and_files(tmp_path):
    with pytest.raises(DataError) as e:
        harness.load_mnist(tmp_path, "train")
    msg = str(e.value)
    assert "DATA_DIR" in msg and str(tmp_path) in msg and "train-images-idx3-ubyte" in msg
    assert "\n" not in msg


def test_corrupt_files_are_reported(data_root, tmp_path):
    raw = _copy_raw(data_root, tmp_path)
    images = raw / "t10k-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        harness.load_mnist(tmp_path, "test")
    images.write_bytes(b"\x00\x00\x08\x01" + data[4:])  # a label file's magic
    with pytest.raises(DataError, match="magic"):
        harness.load_mnist(tmp_path, "test")
    images.write_bytes(data)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:8] + bytes(5000))  # header says 10,000 labels
    with pytest.raises(DataError, match="truncated"):
        harness.load_mnist(tmp_path, "test")


def test_epochs_are_seeded_permutations_with_fixed_shape_batches():
    images = torch.arange(1000, dtype=torch.uint8).reshape(1000, 1, 1).repeat(1, 2, 2)
    data = harness.Dataset(images, torch.arange(1000))
    loader = Loader(data, batch_size=64, seed=3, noise={"eps": (5,)})
    batches = list(loader)
    assert len(batches) == 1000 // 64 == loader.steps_per_epoch  # last partial batch dropped
    assert all(b["x"].shape == (64, 1, 2, 2) and b["eps"].shape == (64, 5) for b in batches)
    seen = torch.cat([b["y"] for b in batches])
    assert seen.unique().numel() == len(seen)  # no repeats within an epoch
    perm = epoch_permutation(1000, 3, 0, "cpu")
    assert torch.equal(seen, perm[: len(seen)])
    assert torch.equal(batches[0]["x"], to_unit(images[perm[:64]]))  # gather + scaling
    assert loader.epoch == 1 and loader.batch == 0
    assert not torch.equal(torch.cat([b["y"] for b in loader]), seen)  # a new order next epoch
    assert torch.equal(epoch_permutation(1000, 3, 0, "cpu"), perm)


def test_loader_cursor_resumes_mid_epoch():
    data = harness.Dataset(torch.randint(0, 256, (500, 4, 4), dtype=torch.uint8), torch.arange(500))
    straight = Loader(data, 32, seed=1, noise={"z": (3,)}, dynamic_binarize=True)
    want = [b for _ in range(2) for b in straight]
    first = Loader(data, 32, seed=1, noise={"z": (3,)}, dynamic_binarize=True)
    got = list(first)  # epoch 1: 15 batches
    it = iter(first)
    got += [next(it) for _ in range(5)]  # stop inside epoch 2
    saved = first.state_dict()
    second = Loader(data, 32, seed=1, noise={"z": (3,)}, dynamic_binarize=True)
    second.load_state_dict(saved)
    got += [b for _ in range(2) for b in second][: len(want) - len(got)]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_dynamic_binarization_draws_fresh_pixels_and_fixed_test_set():
    data = harness.Dataset(torch.full((256, 8, 8), 128, dtype=torch.uint8), torch.zeros(256))
    loader = Loader(data, 256, seed=0, dynamic_binarize=True)
    a, b = next(iter(loader))["x"], next(iter(loader))["x"]
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)
    assert abs(a.mean().item() - 128 / 255) < 0.02  # Bernoulli with the pixel intensity as p
    t1 = torch.cat([x["x"] for x in eval_batches(data, 100, 7, dynamic_binarize=True)])
    t2 = torch.cat([x["x"] for x in eval_batches(data, 100, 7, dynamic_binarize=True)])
    assert torch.equal(t1, t2) and len(t1) == 256  # evaluation keeps the last short batch
