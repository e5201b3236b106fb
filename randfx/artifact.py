"""Save a transformed model as seeds + coefficients; load it back verified (contract 5).

    save(model, path)         one safetensors file: the model's state_dict (seeds,
                              coefficients, kept-dense tensors) + a JSON header in its metadata
    load(path, like=...)      re-applies the stored config to `like` (the untransformed
                              architecture), fills the stored tensors, verifies everything

An artifact is refused with `ArtifactError`, naming what differs, when it is truncated or
corrupt (any changed byte), was written by a newer format version, needs a generator or
distribution version this randfx does not have, was made for another architecture, holds
a seed that re-applying its config does not give, or when the regenerated values differ
from those recorded at save. Loading reads JSON and raw tensor bytes only: never pickle.

The header (safetensors metadata key "randfx", canonical JSON) holds:

    format            {"name": "randfx-artifact", "version": FORMAT_VERSION}
    randfx_version    the writer's randfx.__version__
    config            Config.to_dict() of the transform that made the model
    streams           {"generators": {name: version}, "distributions": {name: version}}
                      of every stream the model's seeded tensors use
    architecture      fingerprint of the untransformed architecture (see
                      `architecture_fingerprint`) and its sha256
    seeds             {state_dict name: value} of every seed buffer
    generated         per seeded tensor: stream, shape, offset, scale and the sha256 of a
                      few generated values (start, middle and end of its counter range)
    aliases           {state_dict name: stored name} for tied tensors, stored once
    tensors           {stored name: sha256 of name, dtype, shape and bytes}
    sha256            of the canonical header without this field; since the header holds
                      every tensor's digest, it covers every stored byte
"""

import hashlib
import json
import math
import os
import uuid
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .errors import ArtifactError

FORMAT_NAME = "randfx-artifact"
FORMAT_VERSION = 1
METADATA_KEY = "randfx"
# counters checked per seeded tensor, at the start, middle and end of its range
_CHECK_WINDOW = 4


# ---------------------------------------------------------------- canonical bytes


def canonical_json(value) -> str:
    """The one JSON spelling of `value` that is hashed and stored: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _sha256(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def tensor_digest(name: str, tensor: torch.Tensor) -> str:
    """sha256 of a stored tensor: its name, dtype, shape and raw (little-endian) bytes."""
    data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    described = f"{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode()
    return _sha256(described, data)


def header_digest(header: dict) -> str:
    """sha256 of the canonical header without its own "sha256" field."""
    return _sha256(canonical_json({k: v for k, v in header.items() if k != "sha256"}).encode())


# ---------------------------------------------------------------- architecture fingerprint


def _describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).replace('torch.', '')}{list(tensor.shape)}"


def _comparable(description: str) -> str:
    """A description with any floating dtype spelled "float": floating precision is not
    part of the architecture (a model cast after transform keeps meta templates in the
    dtype it was transformed in; load casts the rebuilt model to the stored dtype)."""
    dtype, bracket, shape = description.partition("[")
    known = getattr(torch, dtype, None)
    if isinstance(known, torch.dtype) and known.is_floating_point:
        dtype = "float"
    return dtype + bracket + shape


def _comparable_modules(modules: list) -> list:
    return [[name, kind, {k: _comparable(v) for k, v in params.items()},
             {k: _comparable(v) for k, v in buffers.items()}]
            for name, kind, params, buffers in modules]


def _is_randfx(module: nn.Module) -> bool:
    return type(module).__module__.startswith("randfx.")


def _source_modules(model: nn.Module):
    """(name, module) of the untransformed architecture, in registration order. A layer
    randfx put in place of an original one keeps that original (class, hyper-parameters,
    parameters on the meta device) as `_template` and is described by it; modules randfx
    added (the global subspace, a child of a seeded layer) are not part of it. Each module
    is listed once, at its first path, as in nn.Module.named_modules."""
    seen, found = set(), []

    def walk(module, name):
        if _is_randfx(module) and isinstance(getattr(module, "_template", None), nn.Module):
            module = module._template
        if id(module) in seen:
            return
        seen.add(id(module))
        found.append((name, module))
        for child_name, child in module._modules.items():
            if child is not None:
                walk(child, f"{name}.{child_name}" if name else child_name)

    walk(model, "")
    return found


def architecture_fingerprint(model: nn.Module) -> dict:
    """What an artifact must be loaded into: for every module of the untransformed
    architecture (by name) its class name and its own parameters and persistent buffers
    as "dtype[shape]", and the sha256 of that list with floating dtypes spelled "float".
    A transformed model gives the fingerprint of the model it was made from, so save and
    load compute the same. Values are not included: two instances of one architecture
    have one fingerprint whatever their weights."""
    modules = []
    for name, module in _source_modules(model):
        skipped = getattr(module, "_non_persistent_buffers_set", set())
        params = {p: _describe(t) for p, t in module._parameters.items() if t is not None}
        buffers = {b: _describe(t) for b, t in module._buffers.items()
                   if t is not None and b not in skipped}
        modules.append([name, type(module).__qualname__, params, buffers])
    return {"sha256": _sha256(canonical_json(_comparable_modules(modules)).encode()),
            "modules": modules}


def _fingerprint_differences(stored: dict, actual: dict, limit: int = 6) -> list:
    """Readable lines naming how `actual` differs from `stored` (at most `limit`)."""
    stored_modules = {m[0]: m for m in _comparable_modules(stored["modules"])}
    actual_modules = {m[0]: m for m in _comparable_modules(actual["modules"])}
    lines = []
    for name, (_, kind, params, buffers) in stored_modules.items():
        shown = repr(name) if name else "the root module"
        if name not in actual_modules:
            lines.append(f"module {shown} ({kind}) is missing from `like`")
            continue
        _, other_kind, other_params, other_buffers = actual_modules[name]
        if kind != other_kind:
            lines.append(f"module {shown} is {kind} in the artifact, {other_kind} in `like`")
        for what, mine, theirs in (("parameter", params, other_params),
                                   ("buffer", buffers, other_buffers)):
            for tensor in sorted(mine.keys() | theirs.keys()):
                if mine.get(tensor) != theirs.get(tensor):
                    lines.append(f"{what} {name + '.' if name else ''}{tensor} is "
                                 f"{mine.get(tensor, 'absent')} in the artifact, "
                                 f"{theirs.get(tensor, 'absent')} in `like`")
    extra = [name for name in actual_modules if name not in stored_modules]
    if extra:
        lines.append(f"`like` has modules the artifact does not: {extra[:limit]}")
    if not lines:  # same content, different module order
        lines.append("the modules are registered in a different order")
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


# ---------------------------------------------------------------- what a model contributes


def _config_of(model: nn.Module):
    config = getattr(model, "randfx_config", None)
    if config is None:
        raise ValueError(
            f"save: model ({type(model).__name__}) has no `randfx_config`; only a model "
            "returned by randfx.transform (or randfx.load) can be saved as an artifact")
    return config


def _randfx_modules(model: nn.Module):
    """(name, module) of the modules randfx put into the model (seeded layers, the global
    subspace): by contract 4 their only int64 buffers are seeds."""
    return [(name, module) for name, module in model.named_modules() if _is_randfx(module)]


def _seeds(model: nn.Module) -> dict:
    """{state_dict name: value} of every seed buffer."""
    seeds = {}
    for name, module in _randfx_modules(model):
        for buffer_name, buffer in module.named_buffers(recurse=False):
            persistent = buffer_name not in module._non_persistent_buffers_set
            if buffer.dtype == torch.int64 and persistent:
                seeds[f"{name}.{buffer_name}" if name else buffer_name] = buffer.tolist()
    return seeds


def generated_values_sha256(key: int, generator: str, dist: str, shape, offset: int) -> str:
    """sha256 of the stream values of a seeded tensor at a few counters (windows at the
    start, middle and end of its range), from the CPU reference: recorded at save,
    compared at load and by `randfx inspect`."""
    from .generators import generate

    numel = math.prod(shape)
    starts = sorted({0, max(0, numel // 2 - _CHECK_WINDOW // 2), max(0, numel - _CHECK_WINDOW)})
    values = [generate((min(_CHECK_WINDOW, numel - start),), key=int(key), generator=generator,
                       dist=dist, offset=int(offset) + start)
              for start in starts]
    return _sha256(*(v.numpy().tobytes() for v in values))


def _generated_checks(model: nn.Module) -> dict:
    """Per seeded tensor (by its name): key, stream, shape, offset, scale and the sha256
    of a few of its generated values."""
    checks = {}
    for _, module in _randfx_modules(model):
        if not callable(getattr(module, "seeded_tensors", None)):
            continue
        for record in module.seeded_tensors():
            if record.name in checks:  # a tied weight: one seeded tensor, several layers
                continue
            checks[record.name] = {
                "key": int(record.key), "generator": record.generator, "dist": record.dist,
                "shape": [int(s) for s in record.shape], "offset": int(record.offset),
                "scale": float(record.scale),
                "values_sha256": generated_values_sha256(record.key, record.generator,
                                                         record.dist, record.shape,
                                                         record.offset),
            }
    return checks


def _streams(checks: dict) -> dict:
    """Name -> version of every generator and distribution the seeded tensors use."""
    from .generators import stream_versions

    versions = stream_versions()
    return {
        "generators": {c["generator"]: versions["generators"][c["generator"]]
                       for c in checks.values()},
        "distributions": {c["dist"]: versions["distributions"][c["dist"]]
                          for c in checks.values()},
    }


def _stored_tensors(model: nn.Module):
    """(tensors, aliases): the state_dict as contiguous CPU copies, each tied tensor
    (same storage, offset, shape, stride) stored once and its other names as aliases."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        identity = (tensor.device, tensor.untyped_storage().data_ptr(),
                    tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and identity in seen:
            aliases[name] = seen[identity]
            continue
        seen[identity] = name
        tensors[name] = torch.empty(tensor.shape, dtype=tensor.dtype).copy_(tensor)
    return tensors, aliases


# ---------------------------------------------------------------- save


def save(model: nn.Module, path) -> None:
    """Write `model` (made by randfx.transform or randfx.load) to `path` as a randfx
    artifact: its state_dict (seeds, coefficients, kept-dense tensors) in safetensors and
    the verification header described in this module's docstring.

    The file is written to a temporary name beside `path` and renamed over it, so a
    failure never leaves a half-written file where a good one was.
    """
    from . import __version__

    if not isinstance(model, nn.Module):
        raise TypeError(f"save: model must be a torch.nn.Module, got {type(model).__name__}")
    path = _check_path(path, "save")
    if path.is_dir():
        raise ValueError(f"save: path {str(path)!r} is a folder; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save: folder {str(path.parent)!r} does not exist")

    config = _config_of(model)
    tensors, aliases = _stored_tensors(model)
    generated = _generated_checks(model)
    header = {
        "format": {"name": FORMAT_NAME, "version": FORMAT_VERSION},
        "randfx_version": __version__,
        "config": config.to_dict(),
        "streams": _streams(generated),
        "architecture": architecture_fingerprint(model),
        "seeds": _seeds(model),
        "generated": generated,
        "aliases": aliases,
    }
    write_artifact(path, tensors, header)


def _check_path(path, caller: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{caller}: path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def write_artifact(path, tensors: dict, header: dict) -> None:
    """Write `tensors` (contiguous CPU) and `header` as an artifact at `path`: adds the
    per-tensor digests and the header's sha256, then writes atomically."""
    from safetensors.torch import save as safetensors_bytes

    path = Path(path)
    header = dict(header, tensors={name: tensor_digest(name, t) for name, t in tensors.items()})
    header["sha256"] = header_digest(header)
    data = safetensors_bytes(tensors, metadata={METADATA_KEY: canonical_json(header)})
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open applies the umask, so the artifact gets the usual permissions of a new file
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- load


def read_artifact(path):
    """(tensors, header) of the artifact at `path`, after checking that the file is whole,
    is a randfx artifact of a format version this randfx reads, and that every byte
    matches its recorded sha256. Nothing is unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    path = _check_path(path, "load")
    where = f"artifact {str(path)!r}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"load: {where} does not exist") from None
    if len(data) < 8:
        raise ArtifactError(f"{where} is truncated: {len(data)} bytes, fewer than the "
                            "8-byte header length every safetensors file starts with")
    header_length = int.from_bytes(data[:8], "little")
    if 8 + header_length > len(data):
        raise ArtifactError(f"{where} is truncated or corrupt: its header claims "
                            f"{header_length} bytes but only {len(data) - 8} follow")
    try:
        layout = json.loads(data[8:8 + header_length].decode("utf-8"))
        metadata = layout.pop("__metadata__", None) or {}
        data_end = max((info["data_offsets"][1] for info in layout.values()), default=0)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ArtifactError(f"{where} is corrupt: its safetensors header is not valid "
                            "JSON of the expected layout") from None
    stored_data = len(data) - 8 - header_length
    if not isinstance(data_end, int) or data_end > stored_data:
        raise ArtifactError(f"{where} is truncated: its tensors need {data_end} bytes of "
                            f"data, the file holds {stored_data}")
    if data_end < stored_data:
        raise ArtifactError(f"{where} is corrupt: {stored_data - data_end} unexpected bytes "
                            "after the last tensor")
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise ArtifactError(f"{where} is a safetensors file but not a randfx artifact (its "
                            f"metadata has no {METADATA_KEY!r} header)")
    try:
        header = json.loads(metadata[METADATA_KEY])
        format_name, version = header["format"]["name"], header["format"]["version"]
    except (ValueError, TypeError, KeyError):
        raise ArtifactError(f"{where} is corrupt: its randfx header is not valid JSON with "
                            "a 'format' entry") from None
    if format_name != FORMAT_NAME:
        raise ArtifactError(f"{where} has format {format_name!r}, expected {FORMAT_NAME!r}")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where} was written in randfx artifact format version {version} (by randfx "
            f"{header.get('randfx_version', '?')}); this randfx reads versions up to "
            f"{FORMAT_VERSION}: upgrade randfx to load it")
    if header.get("sha256") != header_digest(header):
        raise ArtifactError(f"{where} is corrupt: its header does not match its recorded "
                            "sha256 (the file was changed after it was written)")
    try:
        tensors = safetensors_load(data)
    except SafetensorError as error:
        raise ArtifactError(f"{where} is corrupt: safetensors cannot read it ({error})") from None
    if set(tensors) != set(header["tensors"]):
        raise ArtifactError(f"{where} is corrupt: it stores tensors "
                            f"{sorted(set(tensors) ^ set(header['tensors']))[:6]} that its "
                            "header does not list, or lacks some it lists")
    for name, tensor in tensors.items():
        if tensor_digest(name, tensor) != header["tensors"][name]:
            raise ArtifactError(f"{where} is corrupt: the bytes of tensor {name!r} do not "
                                "match their recorded sha256")
    return tensors, header


_HEADER_FIELDS = {"randfx_version": str, "config": dict, "streams": dict,
                  "architecture": dict, "seeds": dict, "generated": dict, "aliases": dict}


def check_header(header: dict, where: str) -> None:
    """Refuse (ArtifactError) a header that lacks a field, or that needs a generator or
    distribution version this randfx does not have."""
    from .generators import stream_versions

    wrong = [name for name, kind in _HEADER_FIELDS.items()
             if not isinstance(header.get(name), kind)]
    streams, architecture = header.get("streams"), header.get("architecture")
    if isinstance(streams, dict) and not all(
            isinstance(streams.get(kind), dict) for kind in ("generators", "distributions")):
        wrong.append("streams")
    if isinstance(architecture, dict) and not (
            isinstance(architecture.get("sha256"), str)
            and isinstance(architecture.get("modules"), list)
            and all(isinstance(m, list) and len(m) == 4 for m in architecture["modules"])):
        wrong.append("architecture")
    if wrong:
        raise ArtifactError(f"{where} is malformed: header field(s) {wrong} are missing or "
                            "of the wrong type")
    available = stream_versions()
    for kind, singular in (("generators", "generator"), ("distributions", "distribution")):
        for name, version in header["streams"][kind].items():
            have = available[kind].get(name)
            if have is None:
                raise ArtifactError(f"{where} needs {singular} {name!r} version {version}, "
                                    f"which this randfx does not have (it has "
                                    f"{sorted(available[kind])}): upgrade randfx")
            if have != version:
                newer = version > have
                raise ArtifactError(
                    f"{where} needs {singular} {name!r} version {version}, "
                    f"{'newer' if newer else 'older'} than this randfx's version {have}: "
                    "its weights cannot be regenerated here"
                    + ("; upgrade randfx" if newer else ""))


def _build_like(like) -> nn.Module:
    if isinstance(like, nn.Module):
        built = like  # transform copies it: the caller's instance is never modified
    elif callable(like):
        built = like()
        if not isinstance(built, nn.Module):
            raise TypeError(f"load: like() must return a torch.nn.Module, got "
                            f"{type(built).__name__}")
    else:
        raise TypeError("load: like must be the untransformed model (an nn.Module) or a "
                        f"zero-argument function that builds it, got {type(like).__name__}")
    if hasattr(built, "randfx_config"):
        raise ValueError(f"load: like ({type(built).__name__}) is already transformed; give "
                         "the untransformed architecture (or a function that builds it)")
    return built


def load(path, like, *, example_inputs=None) -> nn.Module:
    """The model saved at `path`, rebuilt on `like`: the untransformed architecture, as an
    nn.Module (copied by transform, never modified) or a zero-argument function returning
    one. `example_inputs` are passed to randfx.transform, for models it can capture only
    with inputs.

    The stored config is re-applied with randfx.transform, the stored seeds, coefficients
    and kept-dense tensors are loaded, and everything the header records is checked;
    any difference raises ArtifactError naming it.
    """
    from .config import Config
    from .pipeline import transform

    tensors, header = read_artifact(path)
    where = f"artifact {str(path)!r}"
    check_header(header, where)

    source = _build_like(like)
    architecture = architecture_fingerprint(source)
    if architecture["sha256"] != header["architecture"].get("sha256"):
        raise ArtifactError(
            f"{where} was saved for another architecture than `like` "
            f"({type(source).__name__}): "
            + "; ".join(_fingerprint_differences(header["architecture"], architecture)))
    try:
        config = Config.from_dict(header["config"])
    except (ValueError, TypeError) as error:
        raise ArtifactError(f"{where} holds a config this randfx cannot use: {error}") from None
    try:
        model = transform(source, config, example_inputs)
    except (ValueError, TypeError) as error:
        raise ArtifactError(f"{where}: re-applying its config to `like` failed: {error}") from None

    _check_seeds(model, header, tensors, where)
    state = dict(tensors)
    for name, target in header["aliases"].items():
        if target not in tensors:
            raise ArtifactError(f"{where} is malformed: alias {name!r} points at "
                                f"{target!r}, which it does not store")
        state[name] = tensors[target]
    _cast_as_stored(model, state)
    _check_state_layout(model, state, where)
    load_whole_state(model, state)
    _check_generated(model, header, where)
    return model


def load_whole_state(model: nn.Module, state: dict) -> None:
    """model.load_state_dict(state, strict=True) for a state saved from a model of this
    very architecture. A state read from a file lacks the `_metadata` a state_dict() carries
    (each module's version), and modules that check it refuse to load without it
    (torchvision's MNASNet); the versions are the built model's own."""
    with_versions = OrderedDict(state)
    with_versions._metadata = model.state_dict()._metadata
    model.load_state_dict(with_versions, strict=True)


def _check_seeds(model: nn.Module, header: dict, tensors: dict, where: str) -> None:
    """Seeds agree three ways: header, stored tensors, and re-applying the config."""
    derived = _seeds(model)
    recorded = header["seeds"]
    aliases = header["aliases"]
    for name in sorted(derived.keys() | recorded.keys()):
        if name not in recorded:
            raise ArtifactError(f"{where}: re-applying its config to `like` creates seed "
                                f"{name!r}, which the artifact does not record")
        if name not in derived:
            raise ArtifactError(f"{where} records seed {name!r}, which re-applying its "
                                "config to `like` does not create")
        stored = tensors.get(aliases.get(name, name))
        stored = None if stored is None else stored.tolist()
        if stored != recorded[name]:
            raise ArtifactError(f"{where}: seed {name!r} is {stored} in the stored tensors "
                                f"but {recorded[name]} in the header")
        if recorded[name] != derived[name]:
            raise ArtifactError(
                f"{where}: seed {name!r} is {recorded[name]} in the artifact, but re-applying "
                f"its config (seed={header['config'].get('seed')!r}) to `like` gives "
                f"{derived[name]}: the artifact was made with another seed or edited")


def _cast_as_stored(model: nn.Module, state: dict) -> None:
    """A model cast after transform (`model.to(torch.bfloat16)`) stored every floating
    tensor in that one dtype, while `like` rebuilds it in its own: cast it the same way."""
    stored = {t.dtype for t in state.values() if t.is_floating_point()}
    built = {t.dtype for t in model.state_dict().values() if t.is_floating_point()}
    if len(stored) == 1 and built and stored != built:
        model.to(stored.pop())


def _check_state_layout(model: nn.Module, state: dict, where: str) -> None:
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ArtifactError(
            f"{where} does not fit the model its config builds from `like`: missing tensors "
            f"{missing[:6]}, unexpected tensors {unexpected[:6]}")
    for name, tensor in expected.items():
        stored = state[name]
        if stored.shape != tensor.shape or stored.dtype != tensor.dtype:
            raise ArtifactError(
                f"{where}: tensor {name!r} is {_describe(stored)} in the artifact but "
                f"{_describe(tensor)} in the model its config builds from `like`")


def _check_generated(model: nn.Module, header: dict, where: str) -> None:
    regenerated = _generated_checks(model)
    recorded = header["generated"]
    if regenerated.keys() != recorded.keys():
        raise ArtifactError(
            f"{where}: the seeded tensors differ: the artifact has "
            f"{sorted(recorded.keys() - regenerated.keys())[:6]} that the rebuilt model "
            f"lacks, the rebuilt model has {sorted(regenerated.keys() - recorded.keys())[:6]}")
    for name, check in recorded.items():
        now = regenerated[name]
        for field in ("key", "generator", "dist", "shape", "offset", "scale", "values_sha256"):
            if now[field] != check.get(field):
                what = ("values" if field == "values_sha256"
                        else f"{field} ({check.get(field)!r} saved, {now[field]!r} now)")
                raise ArtifactError(
                    f"{where}: seeded tensor {name!r} regenerates with different {what}: "
                    "the generator stream or the transform changed since it was saved")
