"""The command-line tools as a user runs them: smoke runs, a train -> eval round trip, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Every runnable script of the project, with tiny arguments (paths filled in by the tests).
SCRIPTS = {
    "hw1_id_train.py": ["--list"],
    "hw1_id_eval.py": ["--help"],
    "benchmarks/svi_step.py": ["--rounds", "1", "--steps", "2"],
    "study/mnist.py": ["--help"],
}


def run(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, one line on stderr that names the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines, "no error message"
    message = lines[-1].lower()
    for fragment in fragments:
        assert fragment.lower() in message, message


def test_every_runnable_script_is_listed():
    runnable = set()
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0] in (".venv", "tests", "results", "data") or relative.parts[0].startswith("."):
            continue
        if re.search(r'^if __name__ == "__main__":', path.read_text(encoding="utf-8"), re.MULTILINE):
            runnable.add(relative.as_posix())
    assert runnable == set(SCRIPTS), f"scripts missing from SCRIPTS: {runnable - set(SCRIPTS)}"


@pytest.mark.parametrize("script", ["hw1_id_train.py", "hw1_id_eval.py", "study/mnist.py"])
def test_scripts_start(script):
    result = run(script, *SCRIPTS[script]) if not script.startswith("study/") else run(
        "-m", script[:-3].replace("/", "."), *SCRIPTS[script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_list_prints_the_whole_table():
    from study.experiments import EXPERIMENTS

    result = run("hw1_id_train.py", "--list")
    for name in EXPERIMENTS:
        assert name in result.stdout


def test_benchmark_runs_or_says_how_to_install():
    result = run(*(["benchmarks/svi_step.py"] + SCRIPTS["benchmarks/svi_step.py"]))
    try:
        import bayesian_torch  # noqa: F401
    except ImportError:
        assert_clean_error(result, "make bench")
        return
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"ratio vs bayesian-torch: \d+\.\d\d", result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """Two quick runs (VI on 200 random labels, MAP logistic regression on 1,000 images)."""
    out = tmp_path_factory.mktemp("results")
    result = run("hw1_id_train.py", "--experiment", "rl-random200-b1", "lr-map", "--quick", "--seeds", "0",
                 "--out", str(out), "--data-dir", str(mnist_dir), "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def test_train_writes_a_complete_run_folder(trained):
    folder = trained / "rl-random200-b1" / "seed0"
    for name in ("weights.pkl", "metrics.json", "history.csv", "convergence.png"):
        assert (folder / name).stat().st_size > 0, name
    assert not (folder / "checkpoint.pt").exists()
    assert not list(folder.glob("*.tmp"))
    payload = torch.load(folder / "weights.pkl", weights_only=True)
    assert payload["format"] == "bnn-kl-study/weights" and payload["method"] == "vi"
    assert payload["architecture"]["hidden"] == [400, 400] and payload["architecture"]["output_units"] == 1
    assert payload["run"]["selection"] == {"digits": None, "first_n": 200, "random_labels": True, "label_seed": 0}
    site = payload["sites"]["layers.0.weight"]
    assert site["loc"].shape == (400, 784) and bool((site["scale"] > 0).all())
    assert site["prior_scale"] == pytest.approx(0.1)
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    for key in ("test/accuracy", "kl/total", "kl/mean_per_param", "kl/l2_norm", "kl/per_n", "elbo/neg_per_n",
                "pac_bayes/bound", "training/converged"):
        assert key in metrics, key
    assert metrics["kl/per_n"] == pytest.approx(metrics["kl/total"] / 200)
    assert metrics["kl/mean_per_param"] == pytest.approx(metrics["kl/total"] / metrics["params/count"])


def test_rebuild_from_the_pkl_with_torch_alone(trained):
    """The README's recipe: KL and accuracy from the .pkl with torch only."""
    payload = torch.load(trained / "rl-random200-b1" / "seed0" / "weights.pkl", weights_only=True)
    kl = 0.0
    for name in payload["site_order"]:
        site = payload["sites"][name]
        q = torch.distributions.Normal(site["loc"].double(), site["scale"].double())
        p = torch.distributions.Normal(site["prior_loc"], site["prior_scale"])
        kl += torch.distributions.kl_divergence(q, p).sum().item()
    assert kl == pytest.approx(payload["metrics"]["kl/total"], rel=1e-5)


def test_existing_runs_are_not_silently_overwritten(trained, mnist_dir):
    before = (trained / "lr-map" / "seed0" / "metrics.json").stat().st_mtime_ns
    result = run("hw1_id_train.py", "--experiment", "lr-map", "--quick", "--seeds", "0", "--out", str(trained),
                 "--data-dir", str(mnist_dir), "--no-progress")
    assert_clean_error(result, "already holds a finished run")
    skipped = run("hw1_id_train.py", "--experiment", "lr-map", "--quick", "--seeds", "0", "--out", str(trained),
                  "--data-dir", str(mnist_dir), "--no-progress", "--skip-existing")
    assert skipped.returncode == 0 and "skipped" in skipped.stdout
    assert (trained / "lr-map" / "seed0" / "metrics.json").stat().st_mtime_ns == before


def test_eval_round_trip_reproduces_training_metrics(trained, mnist_dir, tmp_path):
    # --quick evaluates on the first 2,000 test images, as quick training runs do
    result = run("hw1_id_eval.py", str(trained), "--data-dir", str(mnist_dir), "--out", str(tmp_path), "--quick")
    assert result.returncode == 0, result.stderr
    rows = {row["run"]: row for row in json.loads((tmp_path / "evaluation.json").read_text())}
    assert set(rows) == {"rl-random200-b1/seed0", "lr-map/seed0"}
    trained_metrics = json.loads((trained / "lr-map" / "seed0" / "metrics.json").read_text())["metrics"]
    assert rows["lr-map/seed0"]["test/accuracy"] == pytest.approx(trained_metrics["test/accuracy"], abs=1e-12)
    vi = json.loads((trained / "rl-random200-b1" / "seed0" / "metrics.json").read_text())["metrics"]
    assert rows["rl-random200-b1/seed0"]["kl/total"] == pytest.approx(vi["kl/total"], rel=1e-5)
    assert rows["rl-random200-b1/seed0"]["test/num_examples"] == vi["test/num_examples"] == 2_000
    for name in ("evaluation.md", "evaluation.csv", "kl_per_layer.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_eval_on_another_selection(trained, mnist_dir, tmp_path):
    result = run("hw1_id_eval.py", str(trained / "lr-map" / "seed0" / "weights.pkl"), "--data-dir", str(mnist_dir),
                 "--num-test", "300", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "evaluation.json").read_text())[0]
    assert row["test/num_examples"] == 300


@pytest.mark.parametrize("args, fragment", [
    (["--experiment", "no-such-experiment"], "unknown experiment"),
    (["--experiment", "lr-map", "--beta", "-1"], "beta"),
    (["--experiment", "lr-map", "--hidden", "abc"], "hidden"),
    (["--experiment", "lr-map", "--digits", "3,12"], "digits"),
    (["--experiment", "lr-map", "--num-train", "0"], "positive"),
    (["--experiment", "lr-map", "--seeds", "-3"], "non-negative"),
    (["--experiment", "lr-map", "--prior-scale", "0"], "positive"),
    ([], "nothing to do"),
])
def test_train_bad_input(args, fragment, tmp_path):
    assert_clean_error(run("hw1_id_train.py", *args, "--out", str(tmp_path)), fragment)


def test_train_missing_data_folder(tmp_path):
    result = run("hw1_id_train.py", "--experiment", "lr-map", "--quick", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "out"))
    assert_clean_error(result, "does not exist", "make data")


def test_train_too_many_images_for_the_selection(tmp_path, mnist_dir):
    result = run("hw1_id_train.py", "--experiment", "rl-38-all-b1", "--num-train", "20000", "--quick",
                 "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    # quick caps the training set at 1,000 images, so ask without --quick but with one epoch
    result = run("hw1_id_train.py", "--experiment", "rl-38-all-b1", "--num-train", "20000", "--max-epochs", "1",
                 "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert_clean_error(result, "20000", "11982")


def test_eval_bad_files(tmp_path, mnist_dir, trained):
    missing = run("hw1_id_eval.py", str(tmp_path / "none.pkl"), "--data-dir", str(mnist_dir))
    assert_clean_error(missing, "no such file")
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04 this is not a torch file")
    assert_clean_error(run("hw1_id_eval.py", str(corrupt), "--data-dir", str(mnist_dir)), "not a readable")
    foreign = tmp_path / "foreign.pkl"
    torch.save({"w1": torch.zeros(3)}, foreign)
    assert_clean_error(run("hw1_id_eval.py", str(foreign), "--data-dir", str(mnist_dir)),
                       "not a weights file of this project")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run("hw1_id_eval.py", str(empty), "--data-dir", str(mnist_dir)), "no weights.pkl")


def test_eval_mismatched_selection(trained, mnist_dir, tmp_path):
    """A 10-class model on a binary (3 vs 8) selection, and a binary model on 10 classes."""
    ten = trained / "lr-map" / "seed0" / "weights.pkl"
    result = run("hw1_id_eval.py", str(ten), "--data-dir", str(mnist_dir), "--digits", "3,8", "--out", str(tmp_path))
    assert_clean_error(result, "10 classes", "has 2")
    binary = trained / "rl-random200-b1" / "seed0" / "weights.pkl"
    result = run("hw1_id_eval.py", str(binary), "--data-dir", str(mnist_dir), "--digits", "1,2,3",
                 "--out", str(tmp_path))
    assert_clean_error(result, "2 classes", "has 3")


def test_eval_on_a_non_mnist_idx_folder(trained, tmp_path):
    """Another MNIST-format data set loads through the same path, with checksums skipped."""
    from study.idx import write_idx

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 28, 28), generator=generator, dtype=torch.uint8).numpy()
    labels = torch.randint(0, 10, (50,), generator=generator, dtype=torch.uint8).numpy()
    folder = tmp_path / "fashion" / "MNIST" / "raw"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    result = run("hw1_id_eval.py", str(trained / "lr-map" / "seed0" / "weights.pkl"), "--data-dir",
                 str(tmp_path / "fashion"), "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "eval" / "evaluation.json").read_text())[0]
    assert row["test/num_examples"] == 50 and "checksums skipped" in row["data"]


def test_eval_uses_the_whole_matching_test_selection(trained, mnist_dir, tmp_path):
    """Without --quick or --num-test: every test image of the matching selection (all 10,000)."""
    result = run("hw1_id_eval.py", str(trained / "lr-map"), "--data-dir", str(mnist_dir), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "evaluation.json").read_text())[0]
    assert row["test/num_examples"] == 10_000 and row["selection"] == "all images"
