"""Bringing a torch model's weights (specs/nn.md#state-dict): a state_dict saved as a flat .npz,
an explicit cast between float32 and float64, and `--weights` for train, finetune and
continual. (torch writes such a file with `np.savez(path, **{k: v.numpy() for k, v in
model.state_dict().items()})`; the tests write it from lance-ref's own models, whose names are
torch's.)"""

import json

import numpy as np
import pytest

import lance_ref
from lance_ref import nn
from lance_ref.checkpoint import load_weights
from lance_ref.cli import main


def torch_style_npz(path, model, dtype=np.float32):
    """What a torch user saves: the state_dict, flat, float arrays in `dtype`."""
    np.savez(path, **{k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in model.state_dict().items()})
    return path


def test_float32_weights_into_a_float64_model_need_an_explicit_cast(tmp_path):
    lance_ref.manual_seed(0)
    source = nn.build_model("small-cnn", 10, 1, 28)
    path = torch_style_npz(tmp_path / "w.npz", source)
    oracle = nn.build_model("small-cnn", 10, 1, 28, dtype=np.float64)
    with pytest.raises(ValueError, match="expected float64, got float32; pass cast=True to convert"):
        load_weights(path, oracle)
    load_weights(path, oracle, cast=True)
    for name, value in source.state_dict().items():
        assert oracle.state_dict()[name].dtype == (np.float64 if value.dtype.kind == "f" else value.dtype)
        np.testing.assert_array_equal(oracle.state_dict()[name], value)


def test_a_classifier_for_other_classes_is_kept_and_named(tmp_path):
    lance_ref.manual_seed(0)
    path = torch_style_npz(tmp_path / "w.npz", nn.build_model("small-cnn", 1000, 1, 28))
    model = nn.build_model("small-cnn", 10, 1, 28)
    before = model.classifier.weight.data.copy()
    assert load_weights(path, model, keep=("classifier",)) == ["classifier.bias", "classifier.weight"]
    np.testing.assert_array_equal(model.classifier.weight.data, before)
    np.testing.assert_array_equal(model.features[0].weight.data, np.load(path)["features.0.weight"])
    with pytest.raises(ValueError, match="shape mismatch for 'classifier.weight'"):
        load_weights(path, model)  # without `keep`, every entry must fit


def test_missing_and_corrupt_weight_files_are_clear_errors(tmp_path):
    model = nn.build_model("small-cnn", 10, 1, 28)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "none.npz", model)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_weights(tmp_path / "bad.npz", model)
    np.savez(tmp_path / "other.npz", **nn.build_model("alexnet-gpm", 10, 1, 28).state_dict())
    with pytest.raises(ValueError, match="other.npz do not fit SmallCNN"):
        load_weights(tmp_path / "other.npz", model)


def test_train_and_finetune_start_from_torch_weights(tmp_path, tiny_digits, capsys):
    lance_ref.manual_seed(3)
    path = torch_style_npz(tmp_path / "w.npz", nn.build_model("small-cnn", 1000, 1, 28))
    data = ["--dataset", f"npz:{tiny_digits}", "--quiet", "--weights", str(path)]
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "t"), *data]) == 0
    assert "except classifier.bias, classifier.weight" not in capsys.readouterr().out  # --quiet
    assert main(["finetune", "--pretrain-epochs", "0", "--epochs", "1", "--method", "lance", "--calibration-batches", "2",
                 "--out", str(tmp_path / "f"), *data]) == 0
    results = json.loads((tmp_path / "f" / "results.json").read_text())
    assert results["config"]["weights"] == str(path) and not (tmp_path / "f" / "source_model.npz").exists()
    assert main(["finetune", "--dtype", "float64", "--pretrain-epochs", "0", "--epochs", "1", "--out", str(tmp_path / "g"), *data]) == 2
    assert "pass cast=True" in capsys.readouterr().err
    assert main(["finetune", "--dtype", "float64", "--cast-weights", "--pretrain-epochs", "0", "--epochs", "1", "--method", "full",
                 "--out", str(tmp_path / "g"), *data]) == 0


def test_torchvision_mobilenetv2_finetunes_from_its_weights_on_resized_digits(tmp_path, tiny_digits):
    lance_ref.manual_seed(0)
    model = nn.build_model("mobilenetv2-torchvision", 1000, 3, 224, width_mult=0.25)
    path = torch_style_npz(tmp_path / "mnv2.npz", model)
    options = ["--model", "mobilenetv2-torchvision", "--image-size", "32", "--channels", "3", "--weights", str(path),
               "--pretrain-epochs", "0", "--epochs", "1", "--method", "lance", "--last-n", "2", "--calibration-batches", "2",
               "--dataset", f"npz:{tiny_digits}", "--out", str(tmp_path / "m"), "--quiet"]
    # the zoo builds width 1.0: a width-0.25 file does not fit, and says so
    assert main(["finetune", *options]) == 2
    path = torch_style_npz(tmp_path / "mnv2.npz", nn.build_model("mobilenetv2-torchvision", 1000, 3, 224))
    assert main(["finetune", *options]) == 0


def test_continual_starts_from_weights_with_fresh_heads(tmp_path, capsys):
    lance_ref.manual_seed(0)
    path = torch_style_npz(tmp_path / "w.npz", nn.build_model("alexnet-gpm", 100, 1, 28))
    assert main(["continual", "--epochs", "1", "--weights", str(path), "--out", str(tmp_path / "c")]) == 0
    assert "except fc3.0.weight" in capsys.readouterr().out


@pytest.mark.parametrize("command, extra, message", [
    ("train", ["--weights", "/no/such.npz"], "--weights file /no/such.npz does not exist"),
    ("finetune", ["--weights", "/no/such.npz"], "--weights file /no/such.npz does not exist"),
    ("continual", ["--weights", "/no/such.npz"], "--weights file /no/such.npz does not exist"),
    ("finetune", ["--weights", "x", "--checkpoint", "y"], "give the source model as checkpoint or as weights, not both"),
    ("train", ["--image-size", "-1"], "--image-size must be >= 0"),
])
def test_weight_options_fail_before_any_work(tmp_path, capsys, command, extra, message):
    assert main([command, "--out", str(tmp_path / "x"), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
