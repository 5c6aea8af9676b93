"""The `lance-ref train` command: results, determinism, dtypes and errors."""

import json

import pytest

from lance_ref.cli import main


def train(tmp_path, dataset, name, *extra):
    out = tmp_path / name
    code = main(["train", "--dataset", f"npz:{dataset}", "--epochs", "2", "--batch-size", "32", "--out", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "results.json").read_text()), out


def test_train_writes_results(tmp_path, tiny_digits):
    results, out = train(tmp_path, tiny_digits, "run")
    for key in ("test_accuracy", "epochs", "wall_seconds", "activation_bytes_per_step", "config"):
        assert key in results
    assert len(results["epochs"]) == 2
    assert {"loss", "train_accuracy", "test_accuracy", "seconds"} <= set(results["epochs"][0])
    assert results["activation_bytes_per_step"] > 0
    # the measured step holds the model, its gradients and what backward keeps, at least
    assert results["peak_step_bytes"] > results["persistent_bytes"] + results["activation_bytes_per_step"]
    assert (out / "model.npz").is_file() and (out / "history.csv").is_file()


def test_same_seed_same_losses_bit_for_bit(tmp_path, tiny_digits):
    first, _ = train(tmp_path, tiny_digits, "a", "--seed", "3")
    second, _ = train(tmp_path, tiny_digits, "b", "--seed", "3")
    assert [e["loss"] for e in first["epochs"]] == [e["loss"] for e in second["epochs"]]


def test_float64_run(tmp_path, tiny_digits):
    results, _ = train(tmp_path, tiny_digits, "f64", "--dtype", "float64")
    f32, _ = train(tmp_path, tiny_digits, "f32")
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
