"""Checkpoints round-trip exactly and fail clearly on bad files."""

import numpy as np
import pytest

import lance_ref
import lance_ref.functional as F
from lance_ref import Tensor
from lance_ref.checkpoint import load_checkpoint, save_checkpoint
from lance_ref.nn import build_model
from lance_ref.optim import SGD


def trained_model(seed=0):
    lance_ref.manual_seed(seed)
    model = build_model("small-cnn", num_classes=10, in_channels=1, image_size=28)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = Tensor(np.random.default_rng(seed).standard_normal((8, 1, 28, 28)).astype(np.float32))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), np.arange(8)).backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_restores_model_and_optimizer(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, meta={"epoch": 2})
    fresh, fresh_optimizer = trained_model(seed=1)
    meta = load_checkpoint(tmp_path / "ckpt.npz", fresh, fresh_optimizer)
    assert meta == {"epoch": 2}
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        np.testing.assert_array_equal(saved[key], loaded[key], err_msg=key)


def test_missing_file(tmp_path):
    model, _ = trained_model()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.npz", model)


def test_truncated_file(tmp_path):
    model, optimizer = trained_model()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, optimizer)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="ckpt.npz"):
        load_checkpoint(path, model)


def test_mismatched_model(tmp_path):
    model, _ = trained_model()
    save_checkpoint(tmp_path / "ckpt.npz", model)
    other = build_model("small-cnn", num_classes=5, in_channels=1, image_size=28)
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(tmp_path / "ckpt.npz", other)


def test_optimizer_state_required_when_asked(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path / "ckpt.npz", model)
    with pytest.raises(ValueError, match="optimizer"):
        load_checkpoint(tmp_path / "ckpt.npz", model, optimizer)


def test_interrupted_save_leaves_previous_file(tmp_path, monkeypatch):
    model, optimizer = trained_model()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model)
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, optimizer)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]
