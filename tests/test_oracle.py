"""`lance-ref oracle` (specs/oracle.md): reference arrays, the report, and bad case files."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import lance_ref as L
from lance_ref import functional as F
from lance_ref.cli import main
from lance_ref.compress import hosvd
from lance_ref.experiments import oracle
from lance_ref.kernels import gram
from lance_ref.nn import build_model


def write_case(path, op, params=None, **arrays):
    np.savez(path, op=op, params=json.dumps(params or {}), **arrays)
    return path


def run_oracle(tmp_path, case, *flags):
    out = tmp_path / "reference.npz"
    return main(["oracle", str(case), "--out", str(out), *flags]), out


def conv_arrays(rng):
    x, w, b = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    return dict(input=x, weight=w, bias=b, grad_output=rng.standard_normal((2, 4, 3, 3)))


def test_conv2d_case_writes_the_engines_arrays_and_passes_them(tmp_path, capsys):
    arrays = conv_arrays(np.random.default_rng(0))
    params = dict(stride=2, padding=[1, 1], dilation=1)
    ts = [L.tensor(arrays[k], requires_grad=True) for k in ("input", "weight", "bias")]
    y = F.conv2d(*ts, **params)
    y.backward(arrays["grad_output"])
    own = {"user/output": y.data, "user/grad_input": ts[0].grad, "user/grad_weight": ts[1].grad, "user/grad_bias": ts[2].grad}
    code, out = run_oracle(tmp_path, write_case(tmp_path / "case.npz", "conv2d", params, **arrays, **own))
    assert code == 0
    reference = np.load(out)
    assert sorted(reference.files) == ["grad_bias", "grad_input", "grad_weight", "output"]
    np.testing.assert_array_equal(reference["grad_weight"], ts[1].grad)
    text = capsys.readouterr().out
    assert "4 of 4 arrays within rtol 1e-10, atol 1e-12" in text and text.count(" pass ") == 4


def test_a_wrong_array_fails_at_its_worst_index(tmp_path, capsys):
    arrays = conv_arrays(np.random.default_rng(1))
    y = F.conv2d(L.tensor(arrays["input"]), L.tensor(arrays["weight"]), L.tensor(arrays["bias"]))
    wrong = y.data.copy()
    wrong[1, 2, 3, 0] += 1e-3
    del arrays["grad_output"]
    code, _ = run_oracle(tmp_path, write_case(tmp_path / "case.npz", "conv2d", **arrays, **{"user/output": wrong}))
    text = capsys.readouterr().out
    assert code == 1
    assert "output" in text and "FAIL" in text and "worst at (1, 2, 3, 0)" in text and "max abs 1.000e-03" in text
    code, _ = run_oracle(tmp_path, tmp_path / "case.npz", "--atol", "2e-3")
    assert code == 0


def test_hand_computed_linear_and_float32_defaults(tmp_path, capsys):
    x, w, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 4.0]], np.float32), np.array([5.0], np.float32)
    user = {"user/output": np.array([[16.0]]), "user/grad_input": np.array([[6.0, 8.0]]),
            "user/grad_weight": np.array([[2.0, 4.0]]), "user/grad_bias": np.array([2.0])}
    case = write_case(tmp_path / "case.npz", "linear", input=x, weight=w, bias=b, grad_output=np.array([[2.0]], np.float32), **user)
    assert run_oracle(tmp_path, case)[0] == 0
    assert "rtol 0.0001, atol 1e-05" in capsys.readouterr().out


def test_cross_entropy_with_minus_infinity_logits_by_hand(tmp_path):
    logits = np.array([[1, 2, -np.inf, 0.5], [0.3, -np.inf, -np.inf, 2]])
    case = write_case(tmp_path / "case.npz", "cross_entropy", input=logits, target=np.array([1, 3]),
                      **{"user/output": np.array(0.31607740674710544)})  # torch 2.15's value
    code, out = run_oracle(tmp_path, case)
    assert code == 0
    assert np.load(out)["grad_input"].shape == (2, 4)  # the scalar loss gets gradient 1


def test_batch_norm_eval_by_hand_and_training_updates_the_running_statistics(tmp_path):
    x = np.arange(8.0).reshape(2, 2, 2, 1)
    stats = dict(running_mean=np.array([1.0, 2.0]), running_var=np.array([4.0, 9.0]))
    case = write_case(tmp_path / "eval.npz", "batch_norm", dict(eps=0.0), input=x, **stats)
    np.testing.assert_allclose(np.load(run_oracle(tmp_path, case)[1])["output"][0, :, 0, 0], [(0 - 1) / 2, (2 - 2) / 3])
    case = write_case(tmp_path / "train.npz", "batch_norm", dict(training=True, momentum=0.5), input=x, **stats)
    reference = np.load(run_oracle(tmp_path, case)[1])
    mean0 = x[:, 0].mean()
    np.testing.assert_allclose(reference["running_mean"][0], 0.5 * 1.0 + 0.5 * mean0)
    np.testing.assert_allclose(reference["running_var"][0], 0.5 * 4.0 + 0.5 * x[:, 0].var(ddof=1))


def test_max_pool_indices_are_written(tmp_path):
    case = write_case(tmp_path / "case.npz", "max_pool2d", dict(kernel_size=2, return_indices=True),
                      input=np.arange(16.0).reshape(1, 1, 4, 4), **{"user/indices": np.array([[[[5, 7], [13, 15]]]])})
    code, out = run_oracle(tmp_path, case)
    assert code == 0 and "indices" in np.load(out).files


def test_model_step_matches_the_engine(tmp_path):
    rng = np.random.default_rng(2)
    L.manual_seed(5)
    model = build_model("small-cnn", 3, 1, 8, dtype=np.float64)
    x, target = rng.standard_normal((4, 1, 8, 8)), np.array([0, 2, 1, 2])
    state = {f"state/{k}": v for k, v in model.state_dict().items()}
    loss = F.cross_entropy(model(L.tensor(x)), target)
    loss.backward()
    own = {f"user/grad/{k}": p.grad for k, p in model.named_parameters()}
    own.update({"user/loss": loss.data, **{f"user/state/{k}": b for k, b in model.named_buffers()}})
    case = write_case(tmp_path / "case.npz", "model", dict(name="small-cnn", num_classes=3), input=x, target=target, **state, **own)
    code, out = run_oracle(tmp_path, case)
    assert code == 0
    names = np.load(out).files
    assert {"logits", "loss"} <= set(names) and sum(n.startswith("grad/") for n in names) == len(list(model.parameters()))


def test_hosvd_calibration_and_compressed_weight_gradient(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 5))
    reference = np.load(run_oracle(tmp_path, write_case(tmp_path / "h.npz", "hosvd", dict(eps=1.0), input=x))[1])
    np.testing.assert_allclose(reference["reconstruction"], x, atol=1e-12)
    small = np.load(run_oracle(tmp_path, write_case(tmp_path / "s.npz", "hosvd", dict(eps=0.8), input=x))[1])
    assert small["core"].shape < x.shape and small["reconstruction"].shape == x.shape
    core, factors = hosvd(x, 1.0)
    np.testing.assert_array_equal(reference["core"], core)

    batches = {f"batch_{i}": rng.standard_normal((4, 3, 5, 5)) for i in range(3)}
    reference = np.load(run_oracle(tmp_path, write_case(tmp_path / "c.npz", "lance_calibration", dict(eps=0.9), **batches))[1])
    np.testing.assert_allclose(reference["gram_0"], sum(gram(b, 0) for b in batches.values()), rtol=1e-14)  # a plain sum

    w_shape, g = (2, 3, 3, 3), rng.standard_normal((4, 2, 5, 5))
    case = write_case(tmp_path / "w.npz", "conv2d_weight_grad", dict(weight_shape=w_shape, padding=1),
                      core=core, grad_output=g, **{f"factor_{n}": u for n, u in enumerate(factors)})
    w = L.tensor(np.zeros(w_shape), requires_grad=True)
    F.conv2d(L.tensor(x), w, padding=1).backward(g)
    np.testing.assert_allclose(np.load(run_oracle(tmp_path, case)[1])["grad_weight"], w.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make, message", [
    (lambda p: np.savez(p, params="{}"), "lacks the arrays \\['op'\\]"),
    (lambda p: write_case(p, "conv3d", input=np.ones(2)), "unknown op 'conv3d'; the cases are"),
    (lambda p: write_case(p, "conv2d", input=np.ones((1, 1, 3, 3))), "case 'conv2d' lacks \\['weight'\\]"),
    (lambda p: write_case(p, "linear", input=np.ones((1, 2)), weight=np.ones((1, 2)), wieght=np.ones(1)), "does not take: \\['wieght'\\]"),
    (lambda p: np.savez(p, op="linear", params="{stride: 1}", input=np.ones((1, 2)), weight=np.ones((1, 2))), "params must be a JSON object"),
    (lambda p: write_case(p, "conv2d", input=np.ones((1, 2, 3, 3)), weight=np.ones((1, 3, 3, 3))), "case 'conv2d'.*groups=1"),
    (lambda p: write_case(p, "linear", input=np.ones((1, 2)), weight=np.ones((1, 2)), grad_output=np.ones(3)), "grad_output must have"),
    (lambda p: write_case(p, "model", dict(name="tiny"), input=np.ones((1, 1, 4, 4)), target=np.zeros(1, int)), "num_classes"),
    (lambda p: p.write_bytes(b"not a zip"), "is not an .npz archive"),
])
def test_bad_case_files_exit_2_with_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "case.npz"
    make(path)
    code, out = run_oracle(tmp_path, path)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("lance-ref oracle: error:") and err.count("\n") == 1
    assert re.search(message, err), err


def test_missing_case_file(tmp_path, capsys):
    assert run_oracle(tmp_path, tmp_path / "none.npz")[0] == 2
    assert "no such file" in capsys.readouterr().err


def test_every_case_is_documented():
    text = open(Path(__file__).parent.parent / "specs" / "oracle.md").read()
    assert all(f"`{name}`" in text for name in oracle.CASES)
