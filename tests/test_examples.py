"""Smoke tests of the seed examples (examples/random_base_lora_shakespeare.py,
examples/pranc_mnist.py, examples/sparse_backward_mnist.py): each runs end to end with
tiny settings when its data set is present (skipped, with the reason, when it is not),
and without data it stops with a message that says what to pass."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RANDFX_DATA") or ROOT.parent / "shared" / "data")

EXAMPLES = {
    "random_base_lora_shakespeare.py": (
        "tinyshakespeare/input.txt",
        ["--steps", "3", "--layers", "1", "--width", "32", "--heads", "2", "--block", "16",
         "--rank", "2", "--batch-size", "4", "--sample", "5"]),
    "pranc_mnist.py": (
        "mnist/t10k-labels-idx1-ubyte.gz",
        ["--steps", "3", "--hidden", "8", "--dim", "8", "--size", "7"]),
}


def run_example(name, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def skip_without(needed: str, name: str) -> None:
    """Skip, saying what is missing, when the data file `needed` is not under DATA."""
    if not (DATA / needed).exists():
        pytest.skip(f"{name} needs {DATA / needed} (set RANDFX_DATA to the data folder)")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_and_reloads_identically(name, tmp_path):
    needed, tiny = EXAMPLES[name]
    skip_without(needed, name)
    out = tmp_path / "example.rfx"
    result = run_example(name, "--data", str(DATA), "--out", str(out), *tiny)
    assert result.returncode == 0, result.stderr
    assert "outputs identical: True" in result.stdout, result.stdout
    assert out.stat().st_size > 0


@pytest.mark.parametrize("compiled", [False, True])
def test_sparse_backward_example_trains_along_the_walks(compiled):
    skip_without("mnist/t10k-labels-idx1-ubyte.gz", "sparse_backward_mnist.py")
    result = run_example("sparse_backward_mnist.py", "--data", str(DATA), "--epochs", "1",
                         "--train-limit", "640", "--paths", "7",
                         *(["--compile"] if compiled else []))
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("epoch 1: test accuracy")
    # 7 walks update at most 7 rows of each of the three layers, and at least one
    counts = [int(n) for n in re.findall(r"'\d+': (\d+)", line)]
    assert len(counts) == 3 and all(1 <= n <= 7 for n in counts), line


@pytest.mark.parametrize("name", sorted(EXAMPLES) + ["sparse_backward_mnist.py"])
def test_example_without_data_says_what_to_pass(name, tmp_path):
    result = run_example(name, "--data", str(tmp_path))
    assert result.returncode == 1
    assert "not found" in result.stderr and "--data DIR" in result.stderr
    assert "Traceback" not in result.stderr
