"""Let glibc keep freed memory for reuse while a model trains on the CPU.

Every training step allocates and frees the same few activations of several megabytes (the
first block of the Fashion-MNIST convnet: 64 x 16 x 28 x 28 floats, 3.2 MB, five times over).
glibc serves blocks that large with fresh ``mmap`` pages, or trims them off the heap when they
are freed, so each step pays page faults to zero them again: with the default settings the
first block's BatchNorm, ReLU and pooling took about 70 % of a step (torch.profiler). Raising
the mmap and trim thresholds keeps those blocks in the heap: on 2 cores a loop of training steps
ran 1.2-1.3x faster, a whole Fashion-MNIST training 6-11 % (bench/README.md). The cost: up to ``TRIM_BYTES`` of freed memory stays with the process.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger("convlens")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 * 1024 * 1024  # glibc's upper limit for the mmap threshold on 64-bit systems
TRIM_BYTES = 256 * 1024 * 1024

_kept: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where that is not possible.

    Process-wide and harmless elsewhere: other allocators (macOS, musl, jemalloc preloaded)
    are left alone, and the call is a no-op after the first.
    """
    global _kept
    if _kept is None:
        _kept = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
                _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
                    libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)
                )
            except (OSError, AttributeError):
                _kept = False
        log.debug("glibc malloc thresholds raised for CPU training: %s", _kept)
    return _kept
