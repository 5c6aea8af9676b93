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
    from lance_ref import TORCH_SEMANTICS, __version__, kernels

    environment = results["environment"]
    assert environment["lance_ref"] == __version__ and environment["torch_semantics"] == TORCH_SEMANTICS == "2.15.0"
    assert (environment["backend"], environment["simd_isa"]) == (kernels.backend(), kernels.simd_isa())
    assert "" not in results["activation_bytes_by_layer"] and "(functional)" in results["activation_bytes_by_layer"]
    assert 0 <= results["test_accuracy"] <= 100 and results["test_accuracy"] == round(results["test_accuracy"], 10)


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
    assert main(["train", "--out", str(tmp_path / "x" / "y"), "--quiet", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # no empty output directory left behind


@pytest.mark.parametrize("command, arguments, message", [
    ("finetune", ["--last-n", "0"], "lance-ref finetune: error: --last-n must be an int in 1..3 (the model's conv layers), got 0\n"),
    ("finetune", ["--eps", "1.5"], "lance-ref finetune: error: --eps must be a real number in (0, 1], got 1.5\n"),
    ("continual", ["--strategy", "lance", "--lance-eps", "0"], "error: --lance-eps must be a real number in (0, 1], got 0.0\n"),
    ("continual", ["--strategy", "lightcl", "--lightcl-mask-ratio", "2"], "error: --lightcl-mask-ratio must lie in (0, 1], got 2.0\n"),
])
def test_errors_name_the_flag_and_come_before_any_training(tmp_path, capsys, command, arguments, message):
    import time

    start = time.perf_counter()
    assert main([command, "--out", str(tmp_path / "x"), "--quiet", *arguments]) == 2
    assert time.perf_counter() - start < 20  # before pretraining (about 10 s) or the first task
    assert capsys.readouterr().err.endswith(message) and not (tmp_path / "x").exists()


def test_an_output_path_that_is_a_file_or_unwritable_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").write_text("")
    assert main(["train", "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"lance-ref train: error: --out {tmp_path / 'taken'} is a file, not a directory\n"

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("lance_ref.io.tempfile.mkstemp", refuse)
    assert main(["continual", "--out", str(tmp_path / "ro"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"lance-ref continual: error: --out {tmp_path / 'ro'} cannot be written: Read-only file system\n"
    assert not (tmp_path / "ro").exists()


def test_flags_replace_field_names_only_where_they_are_names():
    from lance_ref.cli import flagged
    from lance_ref.experiments.finetune import FinetuneConfig

    assert flagged("velocity_samples (9) exceeds", FinetuneConfig) == "--velocity-samples (9) exceeds"
    assert flagged("budget 1 is a count", FinetuneConfig) == "--budget 1 is a count"
    assert flagged("a fractional budget must lie in (0, 1]", FinetuneConfig) == "a fractional budget must lie in (0, 1]"
    assert flagged("model 'x' has no defaults: give last_n", FinetuneConfig) == "--model 'x' has no defaults: give --last-n"
    assert flagged("epochs_total must", FinetuneConfig) == "epochs_total must"


def test_every_command_has_a_description_and_every_flag_says_what_it_does():
    from lance_ref.cli import COMMANDS, build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in COMMANDS:
        assert commands[name].description.startswith(f"`lance-ref {name}`")
        for action in commands[name]._actions:
            assert action.help and not action.help.startswith("(default"), (name, action.option_strings)
