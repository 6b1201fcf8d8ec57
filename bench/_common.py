"""Helpers shared by the benchmarks: CPU pressure (to tell a disturbed run) and a matmul peak."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_pressure() -> str:
    """The 'some avg10' figure of /proc/pressure/cpu, or the load average where PSI is missing."""
    psi = Path("/proc/pressure/cpu")
    if psi.is_file():
        first = psi.read_text().splitlines()[0]
        return first.split()[1]  # e.g. avg10=0.00
    return f"load={os.getloadavg()[0]:.2f}"


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, device: str = "cpu", dtype=None) -> float:
    """Best matmul GFLOP/s on this machine right now (fp32 on the CPU unless told): the ceiling to
    compare training against. On a GPU each timing waits for the card to finish."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    finish = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    a @ b  # warm up
    finish()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        finish()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
