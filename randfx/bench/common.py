"""Timing, table and JSON helpers shared by every benchmark."""

import argparse
import json
import platform
import statistics
import time

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="OUT", help="write the rows and run facts as JSON")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def time_ms(fn, *, device, warmup: int = 3, repeat: int = 20, cuda_ms: int = 100) -> float:
    """Median milliseconds of fn(): CUDA events via triton.testing.do_bench on CUDA
    (calls filling about cuda_ms, after a quarter of that warming up), a synchronised
    wall clock elsewhere (warmup, then repeat calls)."""
    device = torch.device(device)
    if device.type == "cuda":
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=cuda_ms // 4, rep=cuda_ms, return_mode="median"))
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def graphed(fn, device):
    """fn captured in a CUDA graph (warmed up on a side stream first): replaying it costs
    GPU time only. Elsewhere fn itself."""
    if device.type != "cuda":
        return fn
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as error:  # not capturable: time it eagerly and say so
        print(f"  (eager timing: CUDA graph capture failed: {str(error)[:80]})", flush=True)
        torch.cuda.synchronize(device)
        return fn
    return graph.replay


def median_seconds(fn, repeat: int) -> float:
    """Median wall-clock seconds of fn() over `repeat` calls (host-side work: transforms,
    file I/O)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_facts(device) -> dict:
    device = torch.device(device)
    facts = {"torch": torch.__version__, "python": platform.python_version(),
             "device": str(device), "host": platform.machine()}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        try:
            import triton
            facts["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        facts["cpu_threads"] = torch.get_num_threads()
    return facts


def format_table(rows, columns) -> str:
    """Plain-text table of dict rows; floats get 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    text = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) if text else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(t, widths)) for t in text]
    return "\n".join(lines)


def emit(name: str, rows, columns, *, device, json_path=None, notes=None) -> None:
    print(format_table(rows, columns))
    if json_path:
        payload = {"benchmark": name, "facts": run_facts(device), "rows": rows}
        if notes:
            payload["notes"] = notes
        with open(json_path, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {json_path}")
