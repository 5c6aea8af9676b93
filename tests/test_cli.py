"""The `lance-ref train` command: results, determinism, dtypes and errors."""

import json

import numpy as np
import pytest

from lance_ref.cli import main
from lance_ref.data import load_mnist5k


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """200 real digits (20 per class) as a user npz dataset."""
    digits = load_mnist5k()
    keep = np.concatenate([np.flatnonzero(digits.labels == c)[:20] for c in range(10)])
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=digits.images[keep, 0], labels=digits.labels[keep])
    return path


def train(tmp_path, dataset, name, *extra):
    out = tmp_path / name
    code = main(["train", "--dataset", f"npz:{dataset}", "--epochs", "2", "--batch-size", "32", "--out", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "results.json").read_text()), out


def test_train_writes_results(tmp_path, tiny_dataset):
    results, out = train(tmp_path, tiny_dataset, "run")
    for key in ("test_accuracy", "epochs", "wall_seconds", "activation_bytes_per_step", "config"):
        assert key in results
    assert len(results["epochs"]) == 2
    assert {"loss", "train_accuracy", "test_accuracy", "seconds"} <= set(results["epochs"][0])
    assert results["activation_bytes_per_step"] > 0
    assert (out / "model.npz").is_file() and (out / "history.csv").is_file()


def test_same_seed_same_losses_bit_for_bit(tmp_path, tiny_dataset):
    first, _ = train(tmp_path, tiny_dataset, "a", "--seed", "3")
    second, _ = train(tmp_path, tiny_dataset, "b", "--seed", "3")
    assert [e["loss"] for e in first["epochs"]] == [e["loss"] for e in second["epochs"]]


def test_float64_run(tmp_path, tiny_dataset):
    results, _ = train(tmp_path, tiny_dataset, "f64", "--dtype", "float64")
    f32, _ = train(tmp_path, tiny_dataset, "f32")
    assert results["config"]["dtype"] == "float64"
    # float arrays double; integer ones (max-pool taps, targets) do not
    assert 1.9 < results["activation_bytes_per_step"] / f32["activation_bytes_per_step"] < 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--dataset", "npz:/no/such/file.npz"], "does not exist"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--epochs", "0"], "epochs"),
        (["--dtype", "float16"], "dtype"),
        (["--model", "vgg"], "unknown model"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(tmp_path, capsys, arguments, message):
    assert main(["train", "--out", str(tmp_path / "x"), "--quiet", *arguments]) == 2
    assert message in capsys.readouterr().err
