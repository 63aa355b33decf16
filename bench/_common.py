"""Shared by the benchmarks: machine facts, percentiles, and writing the JSON result.

Every benchmark prints one JSON object (keys name their units) and writes it to
``bench/results/NAME.json`` (``NAME.quick.json`` in ``--quick`` mode, so smoke runs never
overwrite measured figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))  # run as `python bench/NAME.py` from a checkout


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke mode (CI)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/NAME[.quick].json)")
    return p


def machine() -> dict:
    import torch

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def percentiles_us(samples_ns: np.ndarray) -> dict[str, float]:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "p999_us": float(np.percentile(us, 99.9)), "mean_us": float(us.mean()), "max_us": float(us.max())}


def emit(name: str, result: dict, quick: bool, out: Path | None = None) -> None:
    record = {"benchmark": name, "quick": quick, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join(["python", f"bench/{name}.py", *sys.argv[1:]]),
              "machine": machine(), **result}
    path = out or RESULTS / f"{name}{'.quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
