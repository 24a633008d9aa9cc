"""Summaries of repeated measurements: medians, spread, paired ratios, and the table."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def save(name: str, results: dict) -> Path:
    """Write a run's results to bench/out/NAME.json (git-ignored) and say where."""
    out = REPO / "bench" / "out" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out.relative_to(REPO)}")
    return out


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    from corpusmill.model.hardware import cpu_supports_bf16

    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "bf16_native": cpu_supports_bf16(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
    }


def spread(values: list[float], digits: int = 1) -> dict:
    """Median with min and max: with other work on the machine, the spread is the news."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def paired_ratios(rounds: list[dict[str, float]], num: str, den: str) -> dict:
    """num/den within each round (both measured minutes apart under the same load)."""
    ratios = [r[num] / r[den] for r in rounds if r.get(num) and r.get(den)]
    return spread(ratios, digits=3)


def table(rows: list[tuple[str, dict, str]]) -> str:
    """rows: (label, spread of tokens/s, note)."""
    lines = [f"{'contender':<34} {'tokens/s median':>15} {'min':>8} {'max':>8} {'n':>2}  note"]
    for label, s, note in rows:
        if s.get("median") is None:
            lines.append(f"{label:<34} {'-':>15} {'-':>8} {'-':>8} {0:>2}  {note}")
        else:
            lines.append(
                f"{label:<34} {s['median']:>15,.0f} {s['min']:>8,.0f} {s['max']:>8,.0f} "
                f"{s['n']:>2}  {note}"
            )
    return "\n".join(lines)
