"""The machine a benchmark ran on, described the same way by every script in benchmarks/.

Timings mean little without the machine: the CPU's model name, its widest vector extension (BLAS kernels,
and with them timings and the order of floating-point accumulation, differ between AVX2 and AVX-512
machines), the logical CPUs, torch's version, threads and BLAS, and the load average (these machines are
shared, and other processes slow a run).

The scripts run as ``python benchmarks/NAME.py`` (so ``benchmarks/`` is first on ``sys.path``) and import
it as ``from machine import ...``; tests import it as ``benchmarks.machine``. The parsers take the text of
``lscpu`` or ``/proc/cpuinfo`` as an argument; the functions without one read this machine's.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

# Widest first: the first whose flag the CPU lists is its widest vector extension.
_VECTOR_FLAGS: tuple[tuple[str, str], ...] = (
    ("avx512f", "AVX-512"),  # x86: AVX-512 Foundation, which every AVX-512 CPU has
    ("avx2", "AVX2"),
    ("avx", "AVX"),
    ("sse4_2", "SSE4.2"),
    ("sve", "SVE"),  # Arm: the scalable vector extension, then Advanced SIMD
    ("asimd", "NEON"),
)
VECTOR_EXTENSIONS: frozenset[str] = frozenset(name for _, name in _VECTOR_FLAGS)

_BLAS_NAMES = {"mkl": "MKL", "open": "OpenBLAS", "openblas": "OpenBLAS", "accelerate": "Accelerate",
               "blis": "BLIS", "eigen": "Eigen", "atlas": "ATLAS", "flame": "FLAME"}


def _field(text: str, keys: tuple[str, ...]) -> str | None:
    """The value of the first ``key: value`` line whose key (case-insensitive, spaces trimmed) is one of ``keys``."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in keys:
            return value.strip()
    return None


def parse_lscpu_model(text: str) -> str | None:
    """The "Model name" in ``lscpu``'s output, or None if it has none (or an empty one)."""
    return _field(text, ("model name",)) or None


def parse_cpuinfo_model(text: str) -> str | None:
    """The first "model name" in ``/proc/cpuinfo``, or None if it has none (Arm kernels list none)."""
    return _field(text, ("model name",)) or None


def parse_flags(text: str) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` ("flags" on x86, "Features" on Arm) or ``lscpu``
    ("Flags"), lower-cased; empty if the text lists none."""
    value = _field(text, ("flags", "features"))
    return frozenset(value.lower().split()) if value else frozenset()


def widest_vector_extension(flags: frozenset[str] | set[str]) -> str | None:
    """The widest vector extension among ``flags`` (one of ``VECTOR_EXTENSIONS``), or None if none is listed."""
    return next((name for flag, name in _VECTOR_FLAGS if flag in flags), None)


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """This machine's CPU model name: ``lscpu``'s "Model name", else ``/proc/cpuinfo``'s "model name", else
    ``platform.processor()`` (or the architecture, when even that is empty)."""
    return (parse_lscpu_model(_lscpu()) or parse_cpuinfo_model(_cpuinfo()) or platform.processor()
            or platform.machine() or "unknown CPU")


def vector_extension() -> str | None:
    """This machine's widest vector extension (see ``VECTOR_EXTENSIONS``), from ``/proc/cpuinfo``'s flags,
    else ``lscpu``'s; None when neither lists one."""
    flags = parse_flags(_cpuinfo()) or parse_flags(_lscpu())
    return widest_vector_extension(flags)


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension, e.g. "AMD EPYC 7763 64-Core Processor, AVX2"."""
    name, vec = cpu_name(), vector_extension()
    return f"{name}, {vec}" if vec else name


def logical_cpus() -> int | None:
    """The number of logical CPUs (``os.cpu_count()``; None if undetermined)."""
    return os.cpu_count()


def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (NaN where the system reports none)."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return math.nan, math.nan, math.nan
    return float(one), float(five), float(fifteen)


def format_load(load: tuple[float, ...]) -> str:
    """Load averages as "0.52 / 0.71 / 0.80"."""
    return " / ".join(f"{v:.2f}" for v in load)


def torch_blas() -> str:
    """The BLAS torch was built with, as its build configuration names it (``BLAS_INFO``), e.g. "MKL"."""
    import torch

    for item in torch.__config__.show().replace("\n", ",").split(","):
        key, sep, value = item.strip().partition("=")
        if sep and key == "BLAS_INFO" and value.strip():
            return _BLAS_NAMES.get(value.strip().lower(), value.strip())
    return "MKL" if torch.backends.mkl.is_available() else "unknown"


def torch_description() -> dict[str, object]:
    """torch's version, intra-op threads and BLAS, with ``OMP_NUM_THREADS`` as the environment sets it."""
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": torch_blas(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
