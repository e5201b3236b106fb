"""Contract 5: randfx.save / randfx.load round-trip a transformed model exactly, write
atomically, never unpickle, and refuse every bad artifact with an ArtifactError that
names what differs."""

import json
import os
import pickle

import pytest
import torch
from torch import nn

import randfx
from randfx import ArtifactError
from randfx.artifact import (FORMAT_VERSION, architecture_fingerprint, read_artifact,
                             write_artifact)


class TinyConvNet(nn.Module):
    """Conv + BatchNorm (an int64 buffer that is not a seed) + Linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


class TiedLM(nn.Module):
    """An embedding tied to the output head, both kept dense: stored once, aliased."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.hidden(self.embed(tokens))))


def mlp(hidden=16):
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


CASES = {
    "frozen": (mlp, randfx.Config(scheme="frozen", seed=3), lambda: torch.randn(5, 8)),
    "random_base_lora": (mlp, randfx.Config(scheme="random_base_lora", rank=2, seed=7),
                         lambda: torch.randn(5, 8)),
    "subspace": (mlp, randfx.Config(scheme="subspace", dim=5, seed=1),
                 lambda: torch.randn(5, 8)),
    "subspace_global": (mlp, randfx.Config(scheme="subspace", dim=6, scope="global", seed=2),
                        lambda: torch.randn(5, 8)),
    "conv_batchnorm": (TinyConvNet, randfx.Config(scheme="random_base_lora", rank=2),
                       lambda: torch.randn(2, 1, 6, 6)),
    "sparse_backward": (mlp, randfx.Config(scheme="random_base_lora", rank=2,
                                           sparse_backward=randfx.SparseBackward(num_paths=3)),
                        lambda: torch.randn(5, 8)),
    "tied_dense": (TiedLM, randfx.Config(scheme="random_base_lora", rank=2,
                                         exclude_modules=("head",)),
                   lambda: torch.randint(0, 11, (2, 5))),
}


def trained(factory, config, inputs):
    """A transformed model whose coefficients and kept tensors moved away from their init
    (so a load that kept fresh values would be caught)."""
    torch.manual_seed(0)
    model = randfx.transform(factory(), config)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(inputs()).float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    """(path, model, inputs) of a small saved random_base_lora MLP."""
    factory, config, inputs = CASES["random_base_lora"]
    model = trained(factory, config, inputs)
    path = tmp_path / "model.rfx"
    randfx.save(model, path)
    return path, model, inputs


def rewrite(path, edit):
    """Apply edit(tensors, header) and write the artifact again with valid digests: what a
    newer randfx, or someone who edits and re-signs a file, would produce."""
    tensors, header = read_artifact(path)
    edit(tensors, header)
    header = {k: v for k, v in header.items() if k not in ("tensors", "sha256")}
    write_artifact(path, tensors, header)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_gives_identical_outputs(case, tmp_path):
    factory, config, inputs = CASES[case]
    model = trained(factory, config, inputs)
    path = tmp_path / f"{case}.rfx"
    randfx.save(model, path)

    loaded = randfx.load(path, like=factory).eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert loaded.randfx_config == config


@pytest.mark.parametrize("case", ["random_base_lora", "tied_dense", "conv_batchnorm"])
def test_a_model_cast_after_transform_loads_in_its_dtype(case, tmp_path):
    """Floating precision is no part of the architecture: a model cast after transform
    loads from an fp32 `like` (or an fp64 one) in the dtype it was saved in."""
    factory, config, inputs = CASES[case]
    model = trained(factory, config, inputs).to(torch.bfloat16)
    path = tmp_path / "bf16.rfx"
    randfx.save(model, path)
    x = inputs()
    x = x.to(torch.bfloat16) if x.is_floating_point() else x
    for like in (factory, lambda: factory().double()):
        loaded = randfx.load(path, like=like).eval()
        assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))



class VersionedNet(nn.Module):
    """Checks its state's module version on load, as torchvision's MNASNet does."""
    _version = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") != 2:
            raise ValueError(f"version should be 2, got {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_modules_that_check_their_state_version_load(tmp_path):
    model = randfx.transform(VersionedNet(), randfx.Config("random_base_lora", rank=2))
    path = tmp_path / "versioned.rfx"
    randfx.save(model, path)
    loaded = randfx.load(path, like=VersionedNet)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

def test_tied_tensor_is_stored_once_and_stays_tied(tmp_path):
    factory, config, inputs = CASES["tied_dense"]
    model = trained(factory, config, inputs)
    path = tmp_path / "tied.rfx"
    randfx.save(model, path)
    tensors, header = read_artifact(path)
    assert header["aliases"] == {"head.weight": "embed.weight"}
    assert "head.weight" not in tensors
    loaded = randfx.load(path, like=factory)
    assert loaded.head.weight is loaded.embed.weight


def test_save_is_deterministic_and_load_then_save_reproduces_the_file(saved, tmp_path):
    path, model, _ = saved
    again = tmp_path / "again.rfx"
    randfx.save(model, again)
    assert again.read_bytes() == path.read_bytes()
    resaved = tmp_path / "resaved.rfx"
    randfx.save(randfx.load(path, like=mlp), resaved)
    assert resaved.read_bytes() == path.read_bytes()


def test_header_records_config_streams_seeds_and_fingerprint(saved):
    path, model, _ = saved
    tensors, header = read_artifact(path)
    assert header["format"] == {"name": "randfx-artifact", "version": FORMAT_VERSION}
    assert header["randfx_version"] == randfx.__version__
    assert header["config"] == model.randfx_config.to_dict()
    assert header["streams"] == {"generators": {"pcg": 1}, "distributions": {"rademacher32": 1}}
    assert header["seeds"] == {name: int(model.state_dict()[name])
                               for name in ("0.seed", "2.seed")}
    assert header["architecture"] == architecture_fingerprint(mlp())
    assert set(header["generated"]) == {"0.weight", "2.weight"}
    # only seeds, coefficients and kept tensors are stored (contract 4)
    assert set(tensors) == set(model.state_dict())


def test_load_leaves_the_like_instance_untouched(saved):
    path, model, inputs = saved
    like = mlp()
    before = {k: v.clone() for k, v in like.state_dict().items()}
    loaded = randfx.load(path, like=like)
    assert not hasattr(like, "randfx_config")
    assert all(isinstance(m, (nn.Sequential, nn.Linear, nn.ReLU)) for m in like.modules())
    for name, tensor in like.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_never_unpickles(saved, monkeypatch):
    path, _, _ = saved

    def refuse(*args, **kwargs):
        raise AssertionError("load used pickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    randfx.load(path, like=mlp)


@pytest.mark.cuda
def test_a_model_on_cuda_round_trips(tmp_path):
    factory, config, inputs = CASES["random_base_lora"]
    model = trained(factory, config, inputs).cuda()
    path = tmp_path / "cuda.rfx"
    randfx.save(model, path)
    loaded = randfx.load(path, like=factory).cuda().eval()
    x = inputs().cuda()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------- atomic writes


def test_failed_save_leaves_the_old_file_and_no_temporary(saved, monkeypatch):
    path, model, _ = saved
    good = path.read_bytes()

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with torch.no_grad():
        model[0].lora_B.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        randfx.save(model, path)
    assert path.read_bytes() == good
    assert os.listdir(path.parent) == [path.name]


# ---------------------------------------------------------------- refusals


def test_every_flipped_byte_is_refused(saved):
    path, _, _ = saved
    data = path.read_bytes()
    copy = path.with_name("flipped.rfx")
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        copy.write_bytes(bytes(flipped))
        with pytest.raises(ArtifactError, match="corrupt|truncated|malformed|format"):
            randfx.load(copy, like=mlp)


def test_a_flipped_tensor_byte_names_the_tensor(saved):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    header_length = int.from_bytes(data[:8], "little")
    layout = json.loads(data[8:8 + header_length])
    start, _ = layout["2.lora_A"]["data_offsets"]
    data[8 + header_length + start + 1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"corrupt: the bytes of tensor '2\.lora_A'"):
        randfx.load(path, like=mlp)


def test_truncated_files_are_refused(saved):
    path, _, _ = saved
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    for length in (0, 5, 8, 8 + header_length // 2, 8 + header_length, len(data) - 1):
        path.write_bytes(data[:length])
        with pytest.raises(ArtifactError, match="truncated"):
            randfx.load(path, like=mlp)


def test_trailing_bytes_are_refused(saved):
    path, _, _ = saved
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="1 unexpected bytes after the last tensor"):
        randfx.load(path, like=mlp)


def test_other_architecture_is_refused_naming_the_difference(saved):
    path, _, _ = saved
    with pytest.raises(ArtifactError, match=r"another architecture.*parameter 0\.weight is "
                                            r"float\[16, 8\] in the artifact, "
                                            r"float\[32, 8\] in `like`"):
        randfx.load(path, like=lambda: mlp(hidden=32))
    with pytest.raises(ArtifactError, match=r"module '1' is ReLU in the artifact, Tanh"):
        randfx.load(path, like=lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(),
                                                     nn.Linear(16, 4)))
    with pytest.raises(ArtifactError, match=r"module '2' \(Linear\) is missing from `like`"):
        randfx.load(path, like=lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU()))


def test_a_changed_seed_is_refused(tmp_path):
    factory, config, inputs = CASES["random_base_lora"]
    model = trained(factory, config, inputs)
    with torch.no_grad():
        model[2].seed.fill_(12345)  # no longer the key its config derives
    path = tmp_path / "edited.rfx"
    randfx.save(model, path)
    with pytest.raises(ArtifactError, match=r"seed '2\.seed' is 12345 in the artifact, but "
                                            r"re-applying its config \(seed=7\) to `like` gives"):
        randfx.load(path, like=mlp)


def test_a_seed_tensor_disagreeing_with_the_header_is_refused(saved):
    path, _, _ = saved
    rewrite(path, lambda tensors, header: tensors["0.seed"].fill_(99))
    with pytest.raises(ArtifactError, match=r"seed '0\.seed' is 99 in the stored tensors"):
        randfx.load(path, like=mlp)


def test_an_artifact_of_another_root_seed_is_refused_when_edited(saved):
    path, _, _ = saved

    def other_seed(tensors, header):
        header["config"]["seed"] = 8

    rewrite(path, other_seed)
    with pytest.raises(ArtifactError, match=r"seed '0\.seed' is \d+ in the artifact, but "
                                            r"re-applying its config \(seed=8\)"):
        randfx.load(path, like=mlp)


def test_a_newer_generator_version_is_refused(saved):
    path, _, _ = saved
    rewrite(path, lambda t, header: header["streams"]["generators"].update(pcg=2))
    with pytest.raises(ArtifactError, match=r"needs generator 'pcg' version 2, newer than "
                                            r"this randfx's version 1.*upgrade randfx"):
        randfx.load(path, like=mlp)


def test_a_newer_distribution_or_unknown_generator_is_refused(saved):
    path, _, _ = saved
    rewrite(path, lambda t, header: header["streams"]["distributions"].update(uniform=3))
    with pytest.raises(ArtifactError, match=r"needs distribution 'uniform' version 3, newer"):
        randfx.load(path, like=mlp)
    rewrite(path, lambda t, header: header["streams"]["generators"].update(philox=1))
    with pytest.raises(ArtifactError, match=r"needs generator 'philox' version 1, which this "
                                            r"randfx does not have"):
        randfx.load(path, like=mlp)


def test_an_older_generator_version_is_refused(saved, monkeypatch):
    from dataclasses import replace

    from randfx.generators import GENERATORS

    path, _, _ = saved
    monkeypatch.setitem(GENERATORS, "pcg", replace(GENERATORS["pcg"], version=2))
    with pytest.raises(ArtifactError, match=r"needs generator 'pcg' version 1, older than "
                                            r"this randfx's version 2"):
        randfx.load(path, like=mlp)


def test_a_changed_stream_is_caught_by_the_value_checksums(saved, monkeypatch):
    """Same name and version but different bits (a stream edited in place): the values
    recorded at save no longer regenerate."""
    from randfx.generators import reference

    path, _, _ = saved
    monkeypatch.setitem(reference._HASHES, "pcg", reference.squirrel5_u32)
    with pytest.raises(ArtifactError, match=r"seeded tensor '0\.weight' regenerates with "
                                            r"different values"):
        randfx.load(path, like=mlp)


def test_a_newer_format_version_is_refused(saved):
    path, _, _ = saved
    rewrite(path, lambda t, header: header["format"].update(version=FORMAT_VERSION + 1))
    with pytest.raises(ArtifactError, match=rf"format version {FORMAT_VERSION + 1} .*reads "
                                            rf"versions up to {FORMAT_VERSION}: upgrade"):
        randfx.load(path, like=mlp)


def test_a_newer_config_version_is_refused(saved):
    path, _, _ = saved
    rewrite(path, lambda t, header: header["config"].update(version=99))
    with pytest.raises(ArtifactError, match=r"config this randfx cannot use: Config version "
                                            r"99 is newer"):
        randfx.load(path, like=mlp)


def test_a_header_missing_fields_is_refused(saved):
    path, _, _ = saved
    rewrite(path, lambda t, header: header.pop("seeds"))
    with pytest.raises(ArtifactError, match=r"malformed: header field\(s\) \['seeds'\]"):
        randfx.load(path, like=mlp)
    rewrite(path, lambda t, header: header.update(seeds={}, architecture={"modules": 3}))
    with pytest.raises(ArtifactError, match=r"header field\(s\) \['architecture'\]"):
        randfx.load(path, like=mlp)


def test_files_that_are_not_randfx_artifacts_are_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, plain)
    with pytest.raises(ArtifactError, match="not a randfx artifact"):
        randfx.load(plain, like=mlp)
    garbage = tmp_path / "garbage.rfx"
    garbage.write_bytes(b"\x10\0\0\0\0\0\0\0not json at all!")
    with pytest.raises(ArtifactError, match="corrupt: its safetensors header is not valid"):
        randfx.load(garbage, like=mlp)
    with pytest.raises(FileNotFoundError, match="missing.rfx' does not exist"):
        randfx.load(tmp_path / "missing.rfx", like=mlp)


# ---------------------------------------------------------------- bad arguments


def test_save_rejects_bad_arguments(saved, tmp_path):
    _, model, _ = saved
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        randfx.save({}, tmp_path / "x.rfx")
    with pytest.raises(ValueError, match="has no `randfx_config`.*randfx.transform"):
        randfx.save(mlp(), tmp_path / "x.rfx")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        randfx.save(model, 3)
    with pytest.raises(ValueError, match="is a folder"):
        randfx.save(model, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        randfx.save(model, tmp_path / "no" / "x.rfx")


def test_load_rejects_bad_like(saved):
    path, model, _ = saved
    with pytest.raises(TypeError, match="like must be the untransformed model"):
        randfx.load(path, like=42)
    with pytest.raises(TypeError, match=r"like\(\) must return a torch.nn.Module, got str"):
        randfx.load(path, like=lambda: "model")
    with pytest.raises(ValueError, match="like .* is already transformed"):
        randfx.load(path, like=model)
