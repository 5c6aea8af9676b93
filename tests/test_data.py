"""lance_ref.data: loaders (bundled, IDX, CIFAR, npz), splits, transforms and batching."""

import gzip
import io as pyio
import pickle
import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lance_ref import data
from lance_ref.data import mnist

# ---- the bundled mnist5k -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k():
    return data.load_mnist5k()


def test_mnist5k_contents(mnist5k):
    assert mnist5k.images.shape == (5000, 1, 28, 28) and mnist5k.images.dtype == np.uint8
    assert mnist5k.labels.shape == (5000,) and mnist5k.labels.dtype == np.int64
    assert np.bincount(mnist5k.labels).tolist() == [500] * 10
    assert mnist5k.classes == tuple("0123456789") and mnist5k.name == "mnist5k"
    assert mnist5k.images.max() == 255 and len(mnist5k) == 5000


def row_keys(dataset):
    return [img.tobytes() + bytes([lab]) for img, lab in zip(dataset.images, dataset.labels)]


def test_mnist5k_split_is_fixed_stratified_and_disjoint(mnist5k):
    np.random.seed(123)  # the split must not depend on any seed
    train, test = data.load_dataset("mnist5k")
    train2, test2 = data.load_dataset("mnist5k")
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert np.array_equal(train.images, train2.images) and np.array_equal(test.labels, test2.labels)
    full = row_keys(mnist5k)
    assert len(set(full)) == 5000
    assert set(row_keys(train)).isdisjoint(row_keys(test))
    assert sorted(row_keys(train) + row_keys(test)) == sorted(full)
    # the rule: the last 100 digits of each class in file order
    for digit in range(10):
        members = np.flatnonzero(mnist5k.labels == digit)
        assert np.array_equal(test.images[test.labels == digit], mnist5k.images[members[-100:]])
    assert train.mean == data.MNIST_MEAN and test.std == data.MNIST_STD


def test_mnist5k_corrupt_bundle_is_detected(tmp_path, monkeypatch):
    raw = bytearray(mnist.MNIST5K_PATH.read_bytes())
    raw[-100] ^= 1
    (tmp_path / "mnist5k.npz").write_bytes(bytes(raw))
    monkeypatch.setattr(mnist, "MNIST5K_PATH", tmp_path / "mnist5k.npz")
    with pytest.raises(ValueError, match="sha256"):
        data.load_mnist5k()


# ---- MNIST IDX -----------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(directory, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 7)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 7)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    directory.mkdir(exist_ok=True)
    for name, array in arrays.items():
        raw = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path, gz):
    arrays = write_idx_dir(tmp_path / "mnist", gz=gz)
    train, test = data.load_mnist_idx(tmp_path / "mnist")
    assert train.images.shape == (6, 1, 5, 7) and train.images.dtype == np.uint8
    assert np.array_equal(train.images[:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert test.labels.dtype == np.int64
    assert train.name == "mnist" and train.mean == data.MNIST_MEAN
    same_train, _ = data.load_dataset(f"mnist:{tmp_path / 'mnist'}")
    assert np.array_equal(same_train.images, train.images)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("train-images-idx3-ubyte", lambda raw: raw[:-1], "truncated"),
        ("train-images-idx3-ubyte", lambda raw: raw + b"\0", "expected"),
        ("train-images-idx3-ubyte", lambda raw: b"\0\0\x08\x01" + raw[4:], "magic"),
        ("t10k-labels-idx1-ubyte", lambda raw: raw[:5], "too short"),
        ("t10k-labels-idx1-ubyte", lambda raw: raw[:8] + bytes([10]) + raw[9:], "not a digit"),
        ("t10k-labels-idx1-ubyte", lambda raw: idx_bytes(np.zeros(3)), "4 images but"),
    ],
)
def test_mnist_idx_corrupt_files_name_the_file(tmp_path, name, content, match):
    write_idx_dir(tmp_path)
    path = tmp_path / name
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(ValueError, match=match) as err:
        data.load_mnist_idx(tmp_path)
    assert str(path) in str(err.value)


def test_mnist_idx_truncated_gzip(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        data.load_mnist_idx(tmp_path)


def test_mnist_idx_missing_files(tmp_path):
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist_idx(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_mnist_idx(tmp_path / "nowhere")


# ---- CIFAR ---------------------------------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Writes str/bytes as Python 2 strings (BINSTRING), as the real CIFAR python batches do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj) -> bytes:
    buffer = pyio.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_arrays(which, seed, n_files, per_file=3):
    rng = np.random.default_rng(seed)
    shape = (per_file, 3, 32, 32)
    return [
        (rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, which, per_file))
        for _ in range(n_files)
    ]


def write_cifar(root, which, binary, with_names=True, seed=0):
    """A miniature release in its official directory; returns (train parts, test part)."""
    n_train = 5 if which == 10 else 1
    parts = cifar_arrays(which, seed, n_train + 1)
    if which == 10:
        directory = root / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        label_key, names_key, names_file = "labels", "label_names", "batches.meta"
    else:
        directory = root / ("cifar-100-binary" if binary else "cifar-100-python")
        names = ["train", "test"]
        label_key, names_key, names_file = "fine_labels", "fine_label_names", "meta"
    directory.mkdir(parents=True)
    for name, (images, labels) in zip(names, parts):
        if binary:
            label_bytes = labels[:, None] if which == 10 else np.stack([labels // 5, labels], 1)
            pixels = images.reshape(len(images), -1)
            records = np.concatenate([label_bytes.astype(np.uint8), pixels], axis=1)
            (directory / f"{name}.bin").write_bytes(records.tobytes())
        else:
            batch = {"data": images.reshape(len(images), -1), label_key: labels.tolist()}
            batch["batch_label"] = name
            if which == 100:
                batch["coarse_labels"] = (labels // 5).tolist()
            (directory / name).write_bytes(py2_pickle(batch))
    class_names = [f"class{i}" for i in range(which)]
    if with_names and binary:
        (directory / ("batches.meta.txt" if which == 10 else "fine_label_names.txt")).write_text(
            "\n".join(class_names) + "\n\n")
    elif with_names:
        (directory / names_file).write_bytes(py2_pickle({names_key: class_names}))
    return parts[:-1], parts[-1], directory


@pytest.mark.parametrize("which", [10, 100])
@pytest.mark.parametrize("binary", [True, False])
def test_cifar_formats(tmp_path, which, binary):
    train_parts, (test_images, test_labels), directory = write_cifar(tmp_path, which, binary)
    for path in (tmp_path, directory):  # the parent or the batch directory itself
        train, test = data.load_cifar(path, which)
        assert train.images.shape == (3 * len(train_parts), 3, 32, 32)
        assert train.images.dtype == np.uint8
        assert np.array_equal(train.images, np.concatenate([p[0] for p in train_parts]))
        assert np.array_equal(train.labels, np.concatenate([p[1] for p in train_parts]))
        assert np.array_equal(test.images, test_images) and np.array_equal(test.labels, test_labels)
        assert test.labels.dtype == np.int64 and train.classes[-1] == f"class{which - 1}"
        assert train.name == f"cifar{which}" and len(train.mean) == 3
    spec_train, _ = data.load_dataset(f"cifar{which}:{tmp_path}")
    assert np.array_equal(spec_train.images, train.images)


def test_cifar_without_meta_uses_numbers_as_names(tmp_path):
    write_cifar(tmp_path, 10, binary=True, with_names=False)
    train, _ = data.load_cifar(tmp_path, 10)
    assert train.classes == tuple(str(i) for i in range(10))
    assert train.mean == data.CIFAR10_MEAN and train.std == data.CIFAR10_STD


def test_cifar_python_accepts_old_numpy_module_name(tmp_path):
    *_, directory = write_cifar(tmp_path, 10, binary=False)
    path = directory / "test_batch"
    old = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    path.write_bytes(old)
    _, test = data.load_cifar(tmp_path, 10)
    assert test.images.shape == (3, 3, 32, 32)


class Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("payload", ["global", "nested", "numpy"])
def test_malicious_pickle_is_refused(tmp_path, payload):
    *_, directory = write_cifar(tmp_path, 10, binary=False)
    target = tmp_path / "pwned"
    if payload == "global":
        evil = pickle.dumps(Exploit(target), protocol=2)
    elif payload == "nested":
        evil = pickle.dumps({b"data": [Exploit(target)], b"labels": [0]}, protocol=4)
    else:  # a numpy function outside the whitelist
        evil = b"cnumpy\nload\n(S'" + str(target).encode() + b"'\ntR."
    (directory / "data_batch_3").write_bytes(evil)
    with pytest.raises(ValueError, match="data_batch_3.*refusing"):
        data.load_cifar(tmp_path, 10)
    assert not target.exists()


@pytest.mark.parametrize("binary", [True, False])
def test_cifar_truncated_batch_names_the_file(tmp_path, binary):
    *_, directory = write_cifar(tmp_path, 100, binary=binary)
    path = directory / ("test.bin" if binary else "test")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError) as err:
        data.load_cifar(tmp_path, 100)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "batch, match",
    [
        ({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}, "'data'"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "'data'"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "'labels'"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [[0], [1]]}, "'labels'"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": "ab"}, "'labels'"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "integers"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"\[0, 10\)"),
        ([1, 2], "dict"),
    ],
)
def test_cifar_python_bad_contents(tmp_path, batch, match):
    *_, directory = write_cifar(tmp_path, 10, binary=False)
    (directory / "data_batch_2").write_bytes(py2_pickle(batch))
    with pytest.raises(ValueError, match=match):
        data.load_cifar(tmp_path, 10)


def test_cifar_bad_meta_and_labels(tmp_path):
    *_, directory = write_cifar(tmp_path, 10, binary=True)
    (directory / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="batches.meta.txt.*10 class names"):
        data.load_cifar(tmp_path, 10)
    (directory / "batches.meta.txt").unlink()
    record = bytes([10]) + bytes(3072)
    (directory / "test_batch.bin").write_bytes(record)
    with pytest.raises(ValueError, match="test_batch.bin"):
        data.load_cifar(tmp_path, 10)


def test_cifar_missing_files_and_bad_which(tmp_path):
    *_, directory = write_cifar(tmp_path, 10, binary=True)
    (directory / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        data.load_cifar(tmp_path, 10)
    with pytest.raises(FileNotFoundError, match="CIFAR-100"):
        data.load_cifar(tmp_path, 100)
    with pytest.raises(ValueError, match="which"):
        data.load_cifar(tmp_path, 20)


# ---- user npz ------------------------------------------------------------------------------

def test_npz_dataset_grey_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (20, 6, 6))
    np.savez(tmp_path / "grey.npz", images=grey, labels=np.repeat(np.arange(4), 5))
    ds = data.load_npz(tmp_path / "grey.npz")
    assert ds.images.shape == (20, 1, 6, 6) and ds.images.dtype == np.uint8
    assert np.array_equal(ds.images[:, 0], grey) and ds.classes == ("0", "1", "2", "3")
    assert ds.name == "grey" and np.isclose(ds.mean[0], grey.mean() / 255)

    colour = rng.random((10, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "colour.npz", images=colour, labels=np.arange(10) % 2)
    ds = data.load_npz(tmp_path / "colour.npz")
    assert ds.images.dtype == np.float32 and np.allclose(ds.std, colour.std(axis=(0, 2, 3)))


def test_npz_spec_splits_per_class_with_training_statistics(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 2, 3, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.repeat(np.arange(5), 10))
    train, test = data.load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert np.bincount(test.labels).tolist() == [2] * 5 and len(train) == 40
    assert train.mean == test.mean == data.channel_stats(train.images)[0]


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((4, 3, 3))}, "labels"),
        ({"images": np.zeros((4, 3)), "labels": np.zeros(4, int)}, "shape"),
        ({"images": np.full((4, 3, 3), 256), "labels": np.zeros(4, int)}, "0..255"),
        ({"images": np.full((4, 3, 3), 2.0), "labels": np.zeros(4, int)}, r"\[0, 1\]"),
        ({"images": np.zeros((4, 3, 3), np.float16), "labels": np.zeros(4, int)}, "float16"),
        ({"images": np.zeros((4, 3, 3)), "labels": np.zeros(3, int)}, "labels"),
        ({"images": np.zeros((4, 3, 3)), "labels": -np.ones(4, int)}, "labels"),
        ({"images": np.zeros((4, 3, 3)), "labels": np.zeros(4)}, "labels"),
    ],
)
def test_npz_dataset_bad_contents_name_the_file(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match) as err:
        data.load_npz(tmp_path / "bad.npz")
    assert "bad.npz" in str(err.value)


# ---- load_dataset specs --------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["mnist", "cifar10", "npz:", "mnist5k:x", "imagenet:/data"])
def test_unknown_spec_lists_the_valid_ones(spec):
    valid = "mnist5k, mnist:DIR, cifar10:PATH, cifar100:PATH, npz:PATH"
    with pytest.raises(ValueError, match=valid):
        data.load_dataset(spec)


def test_missing_path_names_path_and_spec(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*'cifar10:{missing}'"):
        data.load_dataset(f"cifar10:{missing}")
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match=f"train-images.*'mnist:{missing}'"):
        data.load_dataset(f"mnist:{missing}")
    with pytest.raises(TypeError, match="spec"):
        data.load_dataset(None)


# ---- Dataset, subsets, splits --------------------------------------------------------------

def tiny(n=12, classes=4, channels=1):
    images = np.arange(n * channels * 4, dtype=np.uint8).reshape(n, channels, 2, 2)
    return data.Dataset(images, np.arange(n, dtype=np.int64) % classes, tuple("abcdefgh"[:classes]),
                        "tiny", (0.5,) * channels, (0.25,) * channels)


def test_subset_by_classes():
    ds = tiny()
    sub = data.subset_by_classes(ds, [3, 1])
    assert sub.classes == ("d", "b") and sub.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert np.array_equal(sub.images, ds.images[[1, 3, 5, 7, 9, 11]])
    kept = data.subset_by_classes(ds, np.array([3, 1]), relabel=False)
    assert kept.classes == ds.classes and kept.labels.tolist() == [1, 3, 1, 3, 1, 3]
    for bad in ([], [1, 1], [4], [-1]):
        with pytest.raises(ValueError, match="classes"):
            data.subset_by_classes(ds, bad)


def test_split_per_class():
    train, test = data.split_per_class(tiny(20, 2), 0.3)
    assert test.labels.tolist() == [0, 1, 0, 1, 0, 1] and len(train) == 14
    assert np.array_equal(test.images, tiny(20, 2).images[14:])
    for fraction in (0, 1, -0.5):
        with pytest.raises(ValueError, match="test_fraction"):
            data.split_per_class(tiny(), fraction)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"images": np.zeros((12, 2, 2), np.uint8)}, ValueError, "images"),
        ({"images": np.zeros((12, 1, 2, 2), np.int32)}, TypeError, "uint8"),
        ({"images": np.full((12, 1, 2, 2), 1.5)}, ValueError, r"\[0, 1\]"),
        ({"images": np.full((12, 1, 2, 2), np.nan)}, ValueError, "finite"),
        ({"labels": np.zeros(12, np.int32)}, ValueError, "int64"),
        ({"labels": np.zeros(11, np.int64)}, ValueError, r"\(12,\)"),
        ({"labels": np.full(12, 4, np.int64)}, ValueError, r"\[0, 4\)"),
        ({"classes": ["a", "b", "c", "d"]}, TypeError, "tuple"),
        ({"std": (0.0,)}, ValueError, "std"),
        ({"mean": (0.1, 0.2)}, ValueError, "per channel"),
    ],
)
def test_dataset_validation(change, error, match):
    with pytest.raises(error, match=match):
        replace(tiny(), **change)


def test_empty_datasets_are_valid():
    empty = replace(tiny(), images=np.zeros((0, 1, 2, 2)), labels=np.zeros(0, np.int64))
    assert len(empty) == 0 and len(data.subset_by_classes(tiny(4, 4), [0])) == 1


def test_channel_stats_bad_input():
    with pytest.raises(ValueError, match="images"):
        data.channel_stats(np.zeros((0, 1, 2, 2)))


# ---- transforms ----------------------------------------------------------------------------

def uint8_batches():
    return hnp.arrays(np.uint8, hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=6))


@given(uint8_batches(), st.integers(0, 4), st.integers(0, 2**32))
def test_random_crop_matches_a_per_sample_reference(batch, padding, seed):
    out = data.random_crop(batch, padding, np.random.default_rng(seed))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    rng = np.random.default_rng(seed)
    n, _, h, w = batch.shape
    top, left = rng.integers(0, 2 * padding + 1, n), rng.integers(0, 2 * padding + 1, n)
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    for i in range(n):
        assert np.array_equal(out[i], padded[i, :, top[i]:top[i] + h, left[i]:left[i] + w])


@given(uint8_batches(), st.integers(0, 2**32))
def test_random_crop_without_padding_is_identity(batch, seed):
    out = data.random_crop(batch, 0, np.random.default_rng(seed))
    assert np.array_equal(out, batch)
    out[...] = 0  # a fresh array, not a view of the input
    assert out.size == 0 or not np.shares_memory(out, batch)


@given(uint8_batches(), st.integers(0, 2**32), st.floats(0, 1))
def test_random_flip_twice_with_the_same_draws_is_identity(batch, seed, p):
    once = data.random_flip(batch, np.random.default_rng(seed), p)
    assert once.shape == batch.shape and once.dtype == batch.dtype
    assert np.array_equal(data.random_flip(once, np.random.default_rng(seed), p), batch)
    flipped = np.random.default_rng(seed).random(len(batch)) < p
    assert np.array_equal(once[flipped], batch[flipped][..., ::-1])
    assert np.array_equal(once[~flipped], batch[~flipped])


def test_random_flip_extremes():
    batch = np.arange(24, dtype=np.uint8).reshape(2, 1, 3, 4)
    rng = np.random.default_rng(0)
    assert np.array_equal(data.random_flip(batch, rng, p=1.0), batch[..., ::-1])
    assert np.array_equal(data.random_flip(batch, rng, p=0.0), batch)


def test_transform_bad_arguments():
    batch = np.zeros((2, 1, 3, 3), np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="padding"):
        data.random_crop(batch, -1, rng)
    with pytest.raises(TypeError, match="padding"):
        data.random_crop(batch, 1.5, rng)
    with pytest.raises(TypeError, match="rng"):
        data.random_crop(batch, 1, 0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        data.random_flip(batch[0], rng)
    with pytest.raises(ValueError, match="p must"):
        data.random_flip(batch, rng, p=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_per_channel(dtype):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = data.normalize(images, mean, std, dtype=dtype)
    assert out.dtype == dtype and out.shape == images.shape
    reference = (images / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, reference, rtol=rtol, atol=rtol)
    floats = (images / 255.0).astype(dtype)
    np.testing.assert_allclose(data.normalize(floats, 0.5, 0.5, dtype), (floats - 0.5) / 0.5)


def test_normalize_bad_arguments():
    images = np.zeros((2, 3, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="mean needs 1 or 3"):
        data.normalize(images, (0.1, 0.2), 1.0)
    with pytest.raises(ValueError, match="std must be positive"):
        data.normalize(images, 0.0, (1.0, 0.0, 1.0))
    with pytest.raises(TypeError, match="dtype"):
        data.normalize(images, 0.0, 1.0, dtype=np.float16)
    with pytest.raises(TypeError, match="uint8"):
        data.normalize(images.astype(np.int64), 0.0, 1.0)


# ---- batching ------------------------------------------------------------------------------

def collect(iterator):
    return [(x.copy(), y.copy()) for x, y in iterator]


def same_batches(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b)
    )


def test_batches_are_deterministic_and_cover_every_sample_once():
    images = np.arange(23 * 2).reshape(23, 2)
    labels = np.arange(23)
    first = collect(data.batches(images, labels, 5, shuffle=True, seed=7))
    assert same_batches(first, collect(data.batches(images, labels, 5, shuffle=True, seed=7)))
    assert not same_batches(first, collect(data.batches(images, labels, 5, shuffle=True, seed=8)))
    assert [len(y) for _, y in first] == [5, 5, 5, 5, 3]
    seen = np.concatenate([y for _, y in first])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    assert all(np.array_equal(x, images[y]) for x, y in first)


def test_batches_without_shuffle_and_with_drop_last():
    images, labels = np.arange(10)[:, None], np.arange(10)
    plain = collect(data.batches(images, labels, 4))
    assert [y.tolist() for _, y in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = collect(data.batches(images, labels, 4, drop_last=True))
    assert [y.tolist() for _, y in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert collect(data.batches(images, labels, 11, drop_last=True)) == []


def test_batches_transform_draws_from_the_seeded_generator(mnist5k):
    def augment(x, rng):
        x = data.random_flip(data.random_crop(x, 2, rng), rng)
        return data.normalize(x, mnist5k.mean, mnist5k.std)

    images, labels = mnist5k.images[:64], mnist5k.labels[:64]
    run1 = collect(data.batches(images, labels, 16, shuffle=True, seed=3, transform=augment))
    rng = np.random.default_rng(3)  # a Generator works as the seed too
    run2 = collect(data.batches(images, labels, 16, shuffle=True, seed=rng, transform=augment))
    assert same_batches(run1, run2)
    assert run1[0][0].dtype == np.float32 and run1[0][0].shape == (16, 1, 28, 28)


def test_data_loader_reshuffles_each_epoch_reproducibly():
    images, labels = np.arange(30)[:, None], np.arange(30)
    loader = data.DataLoader(images, labels, 8, shuffle=True, seed=5)
    assert len(loader) == 4 and len(data.DataLoader(images, labels, 8, drop_last=True)) == 3
    epochs = [collect(loader) for _ in range(3)]
    assert loader.epoch == 3
    assert not same_batches(epochs[0], epochs[1])
    again = data.DataLoader(images, labels, 8, shuffle=True, seed=5)
    assert all(same_batches(epoch, collect(again)) for epoch in epochs)
    again.epoch = 1  # replay epoch 1 alone, as after resuming from a checkpoint
    assert same_batches(collect(again), epochs[1])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"labels": np.arange(9)}, ValueError, "agree"),
        ({"labels": [0] * 10}, TypeError, "ndarrays"),
        ({"transform": 3}, TypeError, "transform"),
    ],
)
def test_batching_bad_arguments(kwargs, error, match):
    arguments = {"images": np.zeros((10, 2)), "labels": np.arange(10), "batch_size": 3} | kwargs
    with pytest.raises(error, match=match):
        data.batches(**arguments)
    with pytest.raises(error, match=match):
        data.DataLoader(**arguments)
    with pytest.raises(ValueError, match="seed"):
        data.DataLoader(np.zeros((10, 2)), np.arange(10), 3, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        data.DataLoader(np.zeros((10, 2)), np.arange(10), 3, seed=None)


def test_resize_matches_torch_bilinear_on_a_known_case():
    from lance_ref.data import resize

    x = (np.arange(16, dtype=np.uint8) * 10).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(resize(x, 4), x)
    np.testing.assert_array_equal(resize(x, 2)[0, 0], [[25, 45], [105, 125]])  # 2x2 means
    grey_as_rgb = resize(x, 8, channels=3)
    assert grey_as_rgb.shape == (1, 3, 8, 8) and (grey_as_rgb[:, 0] == grey_as_rgb[:, 2]).all()
    with pytest.raises(ValueError, match="size"):
        resize(x, 0)
