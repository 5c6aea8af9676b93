"""lance_ref.io: atomic writes, pickle-free reads, nested state."""

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lance_ref import io


def arrays_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def leftovers(directory) -> list:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# ---- save_npz / load_npz -------------------------------------------------------------------

def test_npz_round_trip_keeps_dtypes_shapes_and_slashed_names(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "model/layer.1/weight": rng.standard_normal((2, 3, 3, 3)),
        "step": np.asarray(7),
        "mask": rng.random(5) < 0.5,
        "name": np.asarray("resnet"),
        "empty": np.zeros((0, 3), dtype=np.int16),
    }
    path = tmp_path / "a.npz"
    io.save_npz(path, arrays)
    assert arrays_equal(io.load_npz(path, required=["w", "step"]), arrays)
    assert leftovers(tmp_path) == []


def test_save_npz_replaces_an_existing_file(tmp_path):
    path = tmp_path / "a.npz"
    io.save_npz(path, {"x": np.ones(3)})
    io.save_npz(str(path), {"y": np.zeros(2)})
    assert list(io.load_npz(path)) == ["y"]


def test_saved_file_mode_follows_umask(tmp_path):
    path = tmp_path / "a.npz"
    io.save_npz(path, {"x": np.ones(1)})
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        io.load_npz(tmp_path / "nope.npz")


def test_load_npz_missing_required_key(tmp_path):
    path = tmp_path / "a.npz"
    io.save_npz(path, {"x": np.ones(1)})
    with pytest.raises(ValueError, match=r"a\.npz.*\['y'\]"):
        io.load_npz(path, required=["x", "y"])


def corruptions(raw: bytes) -> dict:
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    return {
        "half": raw[: len(raw) // 2],
        "tail_cut": raw[:-10],
        "empty": b"",
        "garbage": b"not an archive at all" * 4,
        "flipped": bytes(flipped),
    }


@pytest.mark.parametrize("kind", ["half", "tail_cut", "empty", "garbage", "flipped"])
def test_load_npz_corrupt_files_raise_value_error_naming_the_file(tmp_path, kind):
    good = tmp_path / "good.npz"
    io.save_npz(good, {"x": np.arange(1000.0)})
    bad = tmp_path / f"{kind}.npz"
    bad.write_bytes(corruptions(good.read_bytes())[kind])
    with pytest.raises(ValueError, match=f"{kind}.npz"):
        io.load_npz(bad)


def test_a_file_that_is_no_zip_is_said_to_be_no_npz_archive_without_pickle_advice(tmp_path):
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"PK? no, just text")
    with pytest.raises(ValueError) as raised:
        io.load_npz(bad)
    assert str(raised.value).startswith(f"{bad} is not an .npz archive") and "pickle" not in str(raised.value)


def test_prepare_output_dir_makes_it_proves_it_writable_and_removes_stale_temporaries(tmp_path, monkeypatch):
    out = tmp_path / "a" / "b"
    assert io.prepare_output_dir(out) == out and out.is_dir() and not list(out.iterdir())
    (out / ".model.npz.k3x_9a0q.tmp").write_bytes(b"a killed write")
    kept = [out / ".model.npz.short.tmp", out / "model.npz", out / ".hidden"]
    for path in kept:
        path.write_bytes(b"")
    io.prepare_output_dir(out)
    assert sorted(out.iterdir()) == sorted(kept)
    with pytest.raises(NotADirectoryError, match="out .*model.npz is a file, not a directory"):
        io.prepare_output_dir(out / "model.npz")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="out .* cannot be written: Permission denied"):
        io.prepare_output_dir(out)


def test_load_npz_refuses_npy_and_object_arrays(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(ValueError, match="x.npy"):
        io.load_npz(tmp_path / "x.npy")
    np.savez(tmp_path / "obj.npz", o=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        io.load_npz(tmp_path / "obj.npz")


def test_save_npz_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="mapping"):
        io.save_npz(tmp_path / "a.npz", [np.ones(1)])
    with pytest.raises(TypeError, match="names"):
        io.save_npz(tmp_path / "a.npz", {1: np.ones(1)})
    with pytest.raises(TypeError, match="pickle"):
        io.save_npz(tmp_path / "a.npz", {"o": np.array([None], dtype=object)})
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        io.save_npz(tmp_path / "missing_dir" / "a.npz", {"x": np.ones(1)})
    assert list(tmp_path.iterdir()) == []


# ---- atomicity -----------------------------------------------------------------------------

@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_save_npz_leaves_target_untouched(tmp_path, monkeypatch, error):
    path = tmp_path / "ckpt.npz"
    io.save_npz(path, {"x": np.arange(3)})
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **arrays)  # the temporary file now holds a full archive...
        file.write(b"partial")
        raise error("interrupted mid-write")  # ...but the write never completes

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(error):
        io.save_npz(path, {"x": np.arange(10**5)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failure_in_fsync_or_rename_removes_the_temporary_file(tmp_path, monkeypatch, step):
    path = tmp_path / "out.json"
    io.save_json(path, {"old": True})

    def fail(*args):
        raise OSError(f"{step} failed")

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(OSError, match=step):
        io.save_json(path, {"new": True})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}
    assert leftovers(tmp_path) == []


# ---- save_json -----------------------------------------------------------------------------

def test_save_json_converts_numpy_values(tmp_path):
    path = tmp_path / "r.json"
    io.save_json(path, {"acc": np.float32(0.5), "n": np.int64(3), "m": np.eye(2), "ok": [1, "a"]})
    expected = {"acc": 0.5, "n": 3, "m": [[1.0, 0.0], [0.0, 1.0]], "ok": [1, "a"]}
    assert json.loads(path.read_text()) == expected


def test_save_json_unserialisable_leaves_nothing(tmp_path):
    with pytest.raises(TypeError, match="object"):
        io.save_json(tmp_path / "r.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


# ---- flatten / unflatten -------------------------------------------------------------------

def test_checkpoint_round_trip_through_one_npz(tmp_path):
    state = {
        "model": {
            "conv1.weight": np.ones((2, 1, 3, 3), np.float32),
            "bn.num_batches_tracked": np.int64(4),
        },
        "optimizer": {
            "lr": 0.05, "step": 12, "nesterov": False,
            "state": {"conv1.weight": {"momentum": np.zeros(3)}},
        },
        "epoch": 3,
    }
    io.save_npz(tmp_path / "ckpt.npz", io.flatten(state))
    back = io.unflatten(io.load_npz(tmp_path / "ckpt.npz"))
    assert back["model"]["conv1.weight"].dtype == np.float32
    assert np.array_equal(back["model"]["conv1.weight"], state["model"]["conv1.weight"])
    assert back["optimizer"]["lr"].shape == () and back["optimizer"]["lr"].item() == 0.05
    assert back["optimizer"]["step"].item() == 12 and back["optimizer"]["nesterov"].item() is False
    assert np.array_equal(back["optimizer"]["state"]["conv1.weight"]["momentum"], np.zeros(3))
    assert back["epoch"].item() == 3


keys = st.text(alphabet="abc.xyz_1", min_size=1, max_size=4)
leaves = st.one_of(
    st.integers(-(2**62), 2**62), st.floats(allow_nan=False), st.booleans(),
    st.lists(st.floats(-1e3, 1e3), max_size=4).map(np.asarray),
)
nested_states = st.recursive(
    st.dictionaries(keys, leaves, min_size=1, max_size=3),
    lambda children: st.dictionaries(keys, st.one_of(leaves, children), min_size=1, max_size=3),
    max_leaves=12,
)


@given(nested_states, st.sampled_from(["/", "::"]))
def test_unflatten_inverts_flatten(state, sep):
    def normalised(tree):
        return {
            k: normalised(v) if isinstance(v, dict) else np.asarray(v).tolist()
            for k, v in tree.items()
        }

    flat = io.flatten(state, sep=sep)
    assert all(isinstance(v, np.ndarray) for v in flat.values())
    assert normalised(io.unflatten(flat, sep=sep)) == normalised(state)


@pytest.mark.parametrize(
    "state, error, match",
    [
        ({"a/b": 1}, ValueError, "without '/'"),
        ({"a": {"b/": 1}}, ValueError, "'b/' under 'a/'"),
        ({"": 1}, ValueError, "non-empty"),
        ({1: 1}, TypeError, "string"),
        ({"a": {}}, ValueError, "empty mapping at 'a'"),
        ({"a": {"b": None}}, TypeError, "'a/b'"),
        ({"a": [1, 2]}, TypeError, "list"),
        ({"a": np.array([None], dtype=object)}, TypeError, "pickle"),
        ({"a": 2**70}, TypeError, "pickle"),
    ],
)
def test_flatten_refuses_what_it_cannot_restore(state, error, match):
    with pytest.raises(error, match=match):
        io.flatten(state)


def test_flatten_and_unflatten_bad_arguments():
    with pytest.raises(TypeError, match="mapping"):
        io.flatten([1])
    with pytest.raises(ValueError, match="sep"):
        io.flatten({"a": 1}, sep="")
    with pytest.raises(ValueError, match="sep"):
        io.unflatten({"a": np.ones(1)}, sep="")
    with pytest.raises(ValueError, match="'a/b'"):
        io.unflatten({"a": np.ones(1), "a/b": np.ones(1)})
    with pytest.raises(ValueError, match="empty component"):
        io.unflatten({"a//b": np.ones(1)})
