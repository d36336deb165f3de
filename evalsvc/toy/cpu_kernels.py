"""Pin the CPU kernels torch chooses, so that the toy world's figures are the same on every x86-64 CPU.

Tiny models trained hard are numerically chaotic. torch picks its ATen and oneDNN kernels by the CPU's
vector width when it is first imported, and the summation order changes with it: the demo's overcooked
LoRA scored a mean overcook z of 1.77 with AVX2 kernels and 0.70 with AVX-512 ones (same code, seeds
and packages), so whether the demo flags it depended on the machine. `pin_cpu_kernels` makes that choice
AVX2 on every x86-64 CPU that has it. It must run before torch is imported; a variable the user has
set is kept. Only the demo and the tests call it: real evaluations keep the fastest kernels.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPU_KERNEL_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _has_avx2() -> bool:
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text()} ".replace("\n", " ")
    except OSError:
        return True  # not Linux: torch falls back to what the CPU has


def pin_cpu_kernels(environ=os.environ) -> None:
    """Set CPU_KERNEL_PINS in `environ` (defaults only) on an x86-64 machine with AVX2."""
    if platform.machine().lower() in ("x86_64", "amd64") and _has_avx2():
        for name, value in CPU_KERNEL_PINS.items():
            environ.setdefault(name, value)
