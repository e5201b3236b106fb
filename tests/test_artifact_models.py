"""Issue 4 item 8 through the artifact: on real third-party architectures (Hugging Face
GPT-2, Llama, BERT, a ResNet-style convnet with BatchNorm, an MLP; built by
tests/test_models.py from small configs), transform -> train step -> randfx.save ->
randfx.load into a freshly, differently initialised model -> identical outputs."""

import pytest
import torch

import randfx

pytest.importorskip("transformers")
from test_models import CASES, DEVICES, output_of  # noqa: E402


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_save_load_round_trip_on_real_architectures(case, device, tmp_path):
    build, make_inputs = CASES[case]
    config = randfx.Config("random_base_lora", rank=2, lora_alpha=4, seed=11)
    torch.manual_seed(0)
    model = randfx.transform(build(), config).to(device)
    inputs = make_inputs(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    output_of(model, inputs).float().pow(2).mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        reference = output_of(model, inputs)

    path = tmp_path / f"{case}.rfx"
    randfx.save(model, path)

    def fresh():
        torch.manual_seed(1)  # a differently initialised twin: load must overwrite it all
        return build()

    loaded = randfx.load(path, like=fresh).to(device).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(output_of(loaded, inputs), reference)


def test_artifact_bench_writes_sizes(tmp_path):
    """`python -m randfx.bench artifact` on a 1-layer GPT-2: the artifact it measures
    is smaller than the dense checkpoint it measures beside it."""
    import json

    from randfx.bench import artifact as bench

    out = tmp_path / "artifact.json"
    assert bench.main(["--n-layer", "1", "--n-embd", "48", "--repeat", "1", "--device", "cpu",
                       "--json", str(out)]) == 0
    rows = {row["case"]: row for row in json.loads(out.read_text())["rows"]}
    dense, saved = rows["dense safetensors save (baseline)"], rows["randfx.save"]
    assert 0 < saved["bytes"] < dense["bytes"]
    assert saved["bytes_ratio"] == saved["bytes"] / dense["bytes"]
