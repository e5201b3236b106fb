"""`randfx inspect PATH`, `randfx inspect --model module:factory`, and the console script."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import randfx
from randfx import artifact
from randfx.inspect_cli import main


def _build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 8))


@pytest.fixture
def saved(tmp_path):
    model = randfx.transform(_build(), randfx.Config(scheme="random_base_lora", rank=2, seed=1))
    path = tmp_path / "model.rfx"
    randfx.save(model, path)
    return path


def test_artifact_summary_without_the_model(saved, capsys):
    assert main([str(saved), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["scheme"] == "random_base_lora"
    assert summary["streams"] == {"generators": {"pcg": 1}, "distributions": {"rademacher32": 1}}
    assert set(summary["seeds"]) == {"0.seed", "2.seed"}
    roles = {t["name"]: t["role"] for t in summary["tensors"]}
    assert roles["0.seed"] == "seed" and roles["0.lora_A"] == "stored"
    generated = {g["name"]: g for g in summary["generated"]}
    assert generated["0.weight"]["shape"] == [32, 16]
    assert generated["0.weight"]["dense_bytes"] == 32 * 16 * 4
    dense = sum(p.numel() * 4 for p in _build().parameters())
    assert summary["totals"]["dense_model_bytes"] == dense
    assert summary["totals"]["stored_bytes"] == sum(t["bytes"] for t in summary["tensors"])
    assert all(v.startswith("ok") for v in summary["verification"].values())

    assert main([str(saved)]) == 0
    text = capsys.readouterr().out
    assert "generated tensors" in text and "0.weight" in text and "compression" in text


def _rewrite_header(path: Path, change):
    tensors, header = artifact.read_artifact(path)
    change(header)
    artifact.write_artifact(path, tensors, header)


@pytest.mark.parametrize("change,message", [
    (lambda h: h["streams"]["generators"].update(pcg=99), "generator 'pcg' version 99"),
    (lambda h: h["generated"]["0.weight"].update(key=h["generated"]["0.weight"]["key"] ^ 1),
     "'0.weight'"),
])
def test_refused_artifact_exits_2_with_the_message(saved, capsys, change, message):
    _rewrite_header(saved, change)
    assert main([str(saved)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_corrupt_artifact_through_the_console_script(saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF
    saved.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "randfx", "inspect", str(saved)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "is corrupt" in result.stderr and result.stdout == ""


def test_model_factory(tmp_path, monkeypatch, capsys):
    (tmp_path / "factory_for_cli.py").write_text(textwrap.dedent("""
        import torch, randfx
        def build():
            model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                        torch.nn.Linear(8, 4))
            return randfx.transform(model, randfx.Config(scheme="frozen", seed=3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    html = tmp_path / "report.html"
    assert main(["--model", "factory_for_cli:build", "--batch-size", "2", "--json",
                 "--html", str(html)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w["module"] for w in report["weights"]] == ["0", "2"]
    assert report["sizes"] == {"B": 2, "T": 1}
    assert "<table>" in html.read_text()
    assert main(["--model", "factory_for_cli"]) == 2
    assert "MODULE:FACTORY" in capsys.readouterr().err


def test_needs_exactly_one_source(capsys):
    assert main([]) == 2
    assert "either an artifact PATH or --model" in capsys.readouterr().err
