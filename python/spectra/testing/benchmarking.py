"""Measuring helpers for the scripts in benchmarks/: peak memory of a call, in-process.

CPU peak memory is the maximum of glibc's bytes-in-use (``mallinfo2``: small chunks plus mmapped
large ones — what torch's CPU allocator holds), sampled on a thread every 0.2 ms; resident set size
would mostly measure glibc's reluctance to return pages. CUDA uses the caching allocator's peak.
"""

from __future__ import annotations

import ctypes
import threading
import time

import torch


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def malloc_in_use() -> int:
    """Bytes currently allocated through malloc."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.peak``: bytes above the level at entry.

    Example:
        >>> import torch
        >>> with PeakMemory(torch.device("cpu")) as m:
        ...     x = torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
        >>> m.peak > 48 << 20
        True
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = malloc_in_use()
            self.top = self.base
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.top = max(self.top, malloc_in_use())
            time.sleep(0.0002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.top, malloc_in_use()) - self.base


def timed(fn, device: torch.device | str = "cpu") -> tuple[float, int, object]:
    """(seconds, peak bytes, result) of one call."""
    device = torch.device(device)
    with PeakMemory(device) as mem:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, mem.peak, result
