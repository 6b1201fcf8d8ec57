"""How fast `convlens --help` answers (torch must be imported lazily). Median of 7 runs.

    python bench/cli_startup.py

Baseline in the same run: `python -c pass`, the interpreter's own start-up.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_pressure, median


def timed(command: list[str], runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return median(samples)


def main() -> None:
    print(f"CPU pressure before: {cpu_pressure()}")
    bare = timed([sys.executable, "-c", "pass"])
    help_time = timed([sys.executable, "-m", "convlens", "--help"])
    torch_time = timed([sys.executable, "-c", "import torch"])
    print(f"python -c pass:        {1000 * bare:.0f} ms")
    print(f"convlens --help:       {1000 * help_time:.0f} ms  ({help_time / bare:.1f}x bare python)")
    print(
        f"python -c 'import torch': {1000 * torch_time:.0f} ms  (what --help would cost without lazy imports)"
    )
    print(f"CPU pressure after: {cpu_pressure()}")


if __name__ == "__main__":
    main()
