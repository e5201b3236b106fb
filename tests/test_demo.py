"""`randfx demo`: trains on the bundled digits well above chance, saves, reloads into a
freshly built MLP with identical predictions, and reports the sizes."""

import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("sklearn", reason="the demo's digits data ships with scikit-learn")

from randfx import demo  # noqa: E402


def run_demo(capsys, *args):
    code = demo.main(["--no-progress", *args])
    return code, capsys.readouterr().out


def test_demo_trains_saves_reloads_and_reports(capsys, tmp_path):
    out_path = tmp_path / "digits.rfx"
    threads = torch.get_num_threads()
    rng = torch.random.get_rng_state()
    code, out = run_demo(capsys, "--epochs", "4", "--out", str(out_path))
    assert code == 0, out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert accuracy > 70.0, out  # chance is 10%
    assert "predictions identical (max |logit difference| 0)" in out
    sizes = re.search(r"artifact: ([\d,]+) bytes .*dense checkpoint: ([\d,]+) bytes", out)
    artifact_bytes, dense_bytes = (int(s.replace(",", "")) for s in sizes.groups())
    assert artifact_bytes == out_path.stat().st_size
    assert artifact_bytes * 5 < dense_bytes
    assert "randfx.inspect: 3 rewritten weights" in out
    # main() leaves the caller's torch as it found it
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_demo_is_deterministic(capsys, tmp_path):
    first, second = tmp_path / "a.rfx", tmp_path / "b.rfx"
    for path in (first, second):
        code, _ = run_demo(capsys, "--epochs", "1", "--hidden", "32", "--out", str(path))
        assert code == 0
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("scheme", ["frozen", "subspace"])
def test_demo_other_schemes(capsys, tmp_path, scheme):
    code, out = run_demo(capsys, "--scheme", scheme, "--epochs", "2", "--hidden", "64",
                         "--dim", "16", "--out", str(tmp_path / "d.rfx"))
    assert code == 0, out
    assert f"'scheme': '{scheme}'" in out
    assert "predictions identical" in out


@pytest.mark.cuda
def test_demo_on_cuda(capsys, tmp_path):
    code, out = run_demo(capsys, "--device", "cuda", "--epochs", "3",
                         "--out", str(tmp_path / "d.rfx"))
    assert code == 0, out
    assert float(re.search(r"test accuracy: ([\d.]+)%", out).group(1)) > 70.0, out
    assert "predictions identical" in out


@pytest.mark.parametrize("argv, message", [
    (["--rank", "0"], "--rank must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--scheme", "magic"], "invalid choice: 'magic'"),
    (["--device", "toaster"], "--device 'toaster' is not a torch device"),
])
def test_demo_rejects_bad_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_runs_as_a_command():
    """`python -m randfx demo` dispatches to randfx.demo.main through the CLI."""
    result = subprocess.run([sys.executable, "-m", "randfx", "demo", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--scheme" in result.stdout and "--out" in result.stdout
