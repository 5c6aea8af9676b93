"""The main job (README's first command) on the bundled digits reaches the promised accuracy."""

import json

from lance_ref.cli import main


def test_main_job_reaches_97_percent(tmp_path):
    assert main(["train", "--out", str(tmp_path), "--quiet"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["model"] == "small-cnn" and results["test_size"] == 1000
    assert results["test_accuracy"] >= 97
