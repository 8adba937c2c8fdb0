"""Data: the IDX and CIFAR parsers, the look-up order, the tutorial's split, and the real files where present."""
from __future__ import annotations

import gzip
import math
import pickle

import numpy as np
import pytest
import torch

from cnnlab import data
from cnnlab.errors import CnnlabError
from helpers import FASHION_SYSTEM, MNIST_SAMPLE, cifar_batch_bytes, idx_bytes, make_idx_dataset, write_idx


def test_idx_round_trip():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(data.parse_idx(idx_bytes(array)), array)


@pytest.mark.parametrize("raw, message", [
    (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "not unsigned bytes"),
    (b"\x00\x00\x08\x03\x00\x00", "cut short"),
    (idx_bytes(np.zeros((4, 2, 2)))[:-3], "header says"),
    (idx_bytes(np.zeros((4, 2, 2))) + b"\x00", "header says"),
])
def test_idx_rejects_damaged_files(raw, message):
    with pytest.raises(CnnlabError, match=message):
        data.parse_idx(raw, "some.idx")


def test_load_idx_dataset(fake_mnist):
    train, test = data.load_dataset("mnist", fake_mnist)
    assert train.images.shape == (240, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (60, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))


def test_truncated_gzip_names_the_file(fake_mnist):
    path = fake_mnist / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CnnlabError, match="train-images-idx3-ubyte.gz"):
        data.load_dataset("mnist", fake_mnist)


def test_label_count_mismatch(fake_mnist):
    write_idx(fake_mnist / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(CnnlabError, match="7 labels for 240 images"):
        data.load_dataset("mnist", fake_mnist)


def test_label_out_of_range(fake_mnist):
    write_idx(fake_mnist / "t10k-labels-idx1-ubyte.gz", np.full(60, 11, dtype=np.uint8))
    with pytest.raises(CnnlabError, match="label 11 out of range"):
        data.load_dataset("mnist", fake_mnist)


def test_wrong_image_shape(tmp_path):
    folder = make_idx_dataset(tmp_path / "m")
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((240, 32, 32), dtype=np.uint8))
    with pytest.raises(CnnlabError, match="right data set"):
        data.load_dataset("mnist", folder)


def test_uncompressed_files_are_found(fake_mnist):
    for path in list(fake_mnist.iterdir()):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    train, _ = data.load_dataset("mnist", fake_mnist)
    assert len(train) == 240


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
    explicit = make_idx_dataset(tmp_path / "explicit", n_train=30)
    env_root = tmp_path / "env"
    make_idx_dataset(env_root / "mnist", n_train=50)
    monkeypatch.setenv("CNNLAB_DATA", str(env_root))
    assert len(data.load_dataset("mnist", explicit)[0]) == 30
    assert len(data.load_dataset("mnist")[0]) == 50
    monkeypatch.delenv("CNNLAB_DATA")
    make_idx_dataset(data.cache_root() / "mnist", n_train=70)
    # files in the cache were written by a download, so they are checked against the published checksums
    with pytest.raises(CnnlabError, match="checksum mismatch.*delete it"):
        data.load_dataset("mnist")


def test_split_is_train_test_split_with_random_state_9():
    n = 103
    dataset = data.ImageSet(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n),
                           tuple(str(i) for i in range(n)))  # labels 0…n-1, one class each
    train, val = data.split(dataset, 0.2, 9)
    permutation = np.random.RandomState(9).permutation(n)
    n_val = math.ceil(0.2 * n)  # scikit-learn rounds the test share up
    assert val.labels.tolist() == permutation[:n_val].tolist()
    assert train.labels.tolist() == permutation[n_val:].tolist()


@pytest.mark.parametrize("n, seed", [(101, 9), (10, 9), (57, 0), (200, 123)])
def test_split_rounds_the_validation_share_up_and_draws_from_its_own_seed(n, seed):
    """0.2 · 101 = 20.2 validation images is 21, as scikit-learn's ceil gives it (rounding would give 20); the
    permutation is the one of the seed passed, not the course's 9."""
    dataset = data.ImageSet(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n), tuple(map(str, range(n))))
    train, val = data.split(dataset, 0.2, seed)
    permutation = np.random.RandomState(seed).permutation(n)
    assert val.labels.tolist() == permutation[:math.ceil(0.2 * n)].tolist()
    assert train.labels.tolist() == permutation[math.ceil(0.2 * n):].tolist()


def test_split_of_tensors_holds_out_the_same_images_as_of_arrays():
    images, labels = torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1), torch.arange(30)
    (x_train, y_train), (x_val, y_val) = data.split((images, labels), 0.2, 9)
    permutation = np.random.RandomState(9).permutation(30)
    assert y_val.tolist() == x_val.flatten().tolist() == permutation[:6].tolist()
    assert y_train.tolist() == x_train.flatten().tolist() == permutation[6:].tolist()


def test_a_fraction_that_leaves_no_training_image_is_refused():
    dataset = data.ImageSet(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10), tuple("0123456789"))
    with pytest.raises(CnnlabError, match="^validation fraction 0.95 leaves no training images out of 10$"):
        data.split(dataset, 0.95)  # ceil(9.5) = 10 validation images



@pytest.mark.parametrize("label, bad", [(10, 10), (-1, -1)])
def test_an_image_set_refuses_a_label_one_past_either_end(label, bad):
    labels = torch.tensor([0, 9, label])
    with pytest.raises(CnnlabError, match=f"^ImageSet label {bad} is out of range for 10 classes"):
        data.ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), labels, tuple("0123456789"))

@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(fraction):
    dataset = data.ImageSet(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10), tuple("0123456789"))
    with pytest.raises(CnnlabError, match="validation fraction"):
        data.split(dataset, fraction)


@pytest.mark.skipif(not (FASHION_SYSTEM / "train-labels-idx1-ubyte.gz").exists(),
                    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_split_labels():
    train_all, test = data.load_dataset("fashion-mnist")
    assert train_all.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    train, val = data.split(train_all)
    assert (len(train), len(val)) == (48000, 12000)
    assert train.labels[:10].tolist() == [3, 1, 2, 6, 7, 3, 5, 1, 1, 5]
    assert val.labels[:10].tolist() == [7, 7, 6, 5, 0, 8, 1, 7, 1, 3]


@pytest.mark.skipif(not MNIST_SAMPLE.exists(), reason="../shared/datasets/mnist-sample not present")
def test_real_mnist_sample_loads():
    train, test = data.load_dataset("mnist", MNIST_SAMPLE)
    assert (len(train), len(test)) == (7996, 2004)
    assert train.images.float().mean() > 20  # real digits: dark background, bright ink


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10's pickled batches
# ---------------------------------------------------------------------------------------------------------
def test_cifar_dataset(fake_cifar):
    train, test = data.load_dataset("cifar10", fake_cifar)
    assert train.images.shape == (200, 3, 32, 32) and test.images.shape == (40, 3, 32, 32)
    assert train.classes[0] == "airplane"


def test_cifar_batch_keeps_channel_order():
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    images[1, 2] = 255  # blue plane of the second image
    parsed, labels = data.parse_cifar_batch(cifar_batch_bytes(images, np.array([4, 7])))
    assert parsed[1, 2].min() == 255 and parsed[1, :2].max() == 0 and labels.tolist() == [4, 7]


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload, message", [
    (pickle.dumps({"data": _RunsCode(), "labels": []}), "not allowed"),
    (pickle.dumps({"data": np.array([object()], dtype=object), "labels": [1]}), "not allowed|object"),
    (pickle.dumps([1, 2, 3]), "no 'data'"),
    (b"not a pickle at all", "not a CIFAR-10 batch"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}), "1 labels for 2 images"),
    (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]}), "3072"),
])
def test_cifar_reader_refuses_bad_batches(payload, message):
    with pytest.raises(CnnlabError, match=message):
        data.parse_cifar_batch(payload, "data_batch_1")


def test_test_images_alone_match_the_test_part(fake_mnist):
    _, test = data.load_dataset("mnist", fake_mnist)
    alone = data.load_test_images("mnist", fake_mnist)
    assert torch.equal(alone.images, test.images) and torch.equal(alone.labels, test.labels)
