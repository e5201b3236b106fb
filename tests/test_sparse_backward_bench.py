"""The sparse_backward and mnist benchmarks run and write their JSON (tiny shapes; the
numbers are checked for sense, never for speed)."""

import json
import os

import pytest

from randfx.bench import mnist, sparse_backward


def test_sparse_backward_bench_writes_rows(tmp_path):
    out = tmp_path / "sb.json"
    assert sparse_backward.main(["--device", "cpu", "--tokens", "32", "--features", "128",
                                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["keep"] for r in rows] == ["1/64", "1/32", "1/16", "1/8", "1/4", "1/2"]
    assert [r["rows"] for r in rows] == [2, 4, 8, 16, 32, 64]
    assert all(r["sparse_ms"] > 0 and r["all_rows_ms"] > 0 and r["seeded_gx_ms"] > 0
               and r["sample_ms"] > 0 for r in rows)


@pytest.mark.skipif(not os.path.isdir(mnist.DEFAULT_DATA), reason="MNIST files not present")
@pytest.mark.parametrize("compiled", [False, True])
def test_mnist_bench_counts_row_updates(tmp_path, compiled):
    out = tmp_path / "mnist.json"
    assert mnist.main(["--device", "cpu", "--epochs", "1", "--train-limit", "512",
                       "--paths", "5", "--json", str(out)]
                      + (["--compile"] if compiled else [])) == 0
    full, sparse = json.loads(out.read_text())["rows"]
    assert full["steps"] == sparse["steps"] == 4
    # the first step (one batch shape) is timed apart: compilation under --compile
    assert full["compile_s"] > 0 and sparse["compile_s"] > 0 and sparse["ms_per_step"] > 0
    assert full["row_updates"] == 4 * (256 + 128 + 10)
    # 5 walks touch at most 5 rows per layer per step
    assert 4 * 3 <= sparse["row_updates"] <= 4 * 3 * 5
    assert 0 <= sparse["accuracy"] <= 100 and sparse["sample_ms"] > 0


def test_mnist_reader_refuses_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        mnist.load_mnist(str(tmp_path))
