"""`randfx inspect`: summarise an artifact without the model's code, or inspect a model.

    randfx inspect PATH [--json]
        format and randfx version, config, generator/distribution versions, every stored
        tensor (role, dtype, shape, bytes), every seed, every generated tensor with the
        bytes it would take dense, totals, and the verification result: file integrity
        (every byte against its sha256), stream versions available here, and the recorded
        generated values regenerated and compared. Exit 0 when everything verifies.

    randfx inspect --model module:factory [--batch-size B] [--seq-len T]
                   [--device H100] [--json] [--html OUT]
        imports `module`, calls `factory()` (a transformed model, or any nn.Module) and
        prints randfx.inspect(model) evaluated at the sizes given.

A refused artifact (corrupt, truncated, unknown stream version, regenerated values that
differ): its randfx.ArtifactError message on stderr, exit code 2.
"""

import argparse
import importlib
import json
import math
import sys

import torch

from . import roofline


def _parser():
    p = argparse.ArgumentParser(prog="randfx inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", help="a randfx artifact (.rfx, safetensors)")
    p.add_argument("--model", metavar="MODULE:FACTORY",
                   help="inspect the model FACTORY() from importable MODULE instead")
    p.add_argument("--batch-size", type=int, default=1, help="B for --model (default 1)")
    p.add_argument("--seq-len", type=int, default=1, help="T for --model (default 1)")
    p.add_argument("--device", default=roofline.DEFAULT_DEVICE,
                   help="roofline device preset for --model")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--html", metavar="OUT", help="also write the --model report as HTML")
    return p


def _described_bytes(description: str) -> int:
    """Bytes of a tensor the architecture fingerprint describes as "float32[32, 16]"."""
    dtype, _, shape = description.partition("[")
    numel = math.prod(json.loads("[" + shape))
    return numel * torch.empty((), dtype=getattr(torch, dtype)).element_size()


def _architecture_tensors(architecture: dict) -> dict:
    """{qualified name: description} of every parameter and persistent buffer of the
    untransformed architecture."""
    tensors = {}
    for module, _, params, buffers in architecture["modules"]:
        for name, description in {**params, **buffers}.items():
            tensors[f"{module}.{name}" if module else name] = description
    return tensors


def _regenerated_differences(header: dict) -> list:
    """Names of the generated tensors whose recorded values do not regenerate here."""
    from . import artifact

    different = []
    for name, record in header["generated"].items():
        values_sha256 = artifact.generated_values_sha256(
            record["key"], record["generator"], record["dist"], record["shape"],
            record["offset"])
        if values_sha256 != record["values_sha256"]:
            different.append(name)
    return different


def summarise_artifact(path) -> dict:
    """Everything `randfx inspect PATH` prints, as plain data; raises ArtifactError."""
    from . import artifact
    from .errors import ArtifactError

    tensors, header = artifact.read_artifact(path)
    where = f"artifact {str(path)!r}"
    artifact.check_header(header, where)
    different = _regenerated_differences(header)
    if different:
        raise ArtifactError(f"{where}: generated tensor(s) {different[:6]} regenerate with "
                            "values other than those recorded at save: the generator "
                            "stream changed")
    seeds = header["seeds"]
    original = _architecture_tensors(header["architecture"])
    stored = [{"name": name, "role": "seed" if name in seeds else "stored",
               "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
               "bytes": t.numel() * t.element_size()} for name, t in sorted(tensors.items())]
    generated = [{"name": name, "generator": r["generator"], "dist": r["dist"],
                  "shape": r["shape"], "offset": r["offset"], "scale": r["scale"],
                  "key": r["key"],
                  # a subspace basis replaces no tensor of the original: it has no dense size
                  "dense_bytes": _described_bytes(original[name]) if name in original else None}
                 for name, r in sorted(header["generated"].items())]
    stored_bytes = sum(t["bytes"] for t in stored)
    dense_model = sum(_described_bytes(d) for d in original.values())
    return {
        "path": str(path), "format": header["format"],
        "randfx_version": header["randfx_version"], "config": header["config"],
        "streams": header["streams"], "architecture_sha256": header["architecture"]["sha256"],
        "seeds": seeds, "aliases": header["aliases"], "tensors": stored,
        "generated": generated,
        "totals": {"stored_bytes": stored_bytes, "dense_model_bytes": dense_model,
                   "compression_ratio": dense_model / stored_bytes
                   if stored_bytes else float("inf")},
        "verification": {"integrity": f"ok: header and {len(tensors)} tensors match their "
                                      "sha256",
                         "streams": "ok: every generator and distribution version is "
                                    "available",
                         "generated_values": f"ok: {len(generated)} generated tensors "
                                             "regenerate their recorded values"},
    }


def _format_summary(summary: dict) -> str:
    from .bench.common import format_table

    config = summary["config"]
    streams = summary["streams"]
    totals = summary["totals"]
    lines = [
        f"randfx artifact {summary['path']}",
        f"  format {summary['format']['name']} v{summary['format']['version']}, written by "
        f"randfx {summary['randfx_version']}",
        "  config: " + ", ".join(f"{k}={v}" for k, v in config.items() if v is not None),
        "  generators: " + ", ".join(f"{k} v{v}" for k, v in streams["generators"].items())
        + "; distributions: " + ", ".join(f"{k} v{v}"
                                          for k, v in streams["distributions"].items()),
        f"  architecture sha256 {summary['architecture_sha256'][:16]}...", "",
        "stored tensors:",
        format_table(summary["tensors"], ("name", "role", "dtype", "shape", "bytes")), "",
        "generated tensors (regenerated from seeds, not stored):",
        format_table(summary["generated"], ("name", "shape", "generator", "dist", "key",
                                            "offset", "scale", "dense_bytes")), "",
        f"stored: {totals['stored_bytes']} bytes; the untransformed model holds "
        f"{totals['dense_model_bytes']} bytes (compression {totals['compression_ratio']:.1f}x)",
        "",
        "verification:"]
    lines += [f"  {check}: {result}" for check, result in summary["verification"].items()]
    return "\n".join(lines)


def _load_factory(spec: str):
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"--model {spec!r}: expected MODULE:FACTORY, e.g. "
                         "mypackage.models:build")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {module_name} has no callable {attribute!r}")
    return factory


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if (args.path is None) == (args.model is None):
        print("randfx inspect: give either an artifact PATH or --model MODULE:FACTORY",
              file=sys.stderr)
        return 2
    if args.model is not None:
        from .report import inspect
        try:
            report = inspect(_load_factory(args.model)(), batch_size=args.batch_size,
                             seq_len=args.seq_len, device=args.device)
        except ValueError as error:
            print(f"randfx inspect: {error}", file=sys.stderr)
            return 2
        print(json.dumps(report.to_dict(), indent=2) if args.json else report)
        if args.html:
            with open(args.html, "w") as f:
                f.write(report.to_html())
        return 0
    from .errors import ArtifactError
    try:
        summary = summarise_artifact(args.path)
    except (ArtifactError, FileNotFoundError) as error:
        print(f"randfx inspect: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else _format_summary(summary))
    return 0
