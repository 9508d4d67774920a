"""benchmarks/machine.py: the description of the machine every benchmark script writes with its results."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    # By path: benchmarks/ is a folder of scripts, not an installed package, and this keeps sys.path as it is.
    spec = importlib.util.spec_from_file_location("benchmarks_machine", ROOT / "benchmarks" / "machine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


machine = _load()

# Shortened from a real x86 /proc/cpuinfo: two processors, the first's lines are the ones that count.
CPUINFO_X86 = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512bw
bugs\t\t: spectre_v1 spectre_v2

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme
"""

# Shortened from a real Arm /proc/cpuinfo: no "model name", "Features" instead of "flags".
CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""

LSCPU = """Architecture:                            x86_64
CPU op-mode(s):                          32-bit, 64-bit
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC 7763 64-Core Processor
CPU family:                              25
Flags:                                   fpu vme sse4_2 avx avx2 fma
Virtualization features:
"""


def test_parse_lscpu_model_name() -> None:
    assert machine.parse_lscpu_model(LSCPU) == "AMD EPYC 7763 64-Core Processor"
    assert machine.parse_lscpu_model("Architecture: x86_64\nModel name:   \n") is None
    assert machine.parse_lscpu_model("") is None


def test_parse_cpuinfo_model_name() -> None:
    assert machine.parse_cpuinfo_model(CPUINFO_X86) == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert machine.parse_cpuinfo_model(CPUINFO_ARM) is None


def test_parse_flags_from_each_source() -> None:
    x86 = machine.parse_flags(CPUINFO_X86)
    assert x86 == {"fpu", "vme", "de", "pse", "tsc", "msr", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "f16c",
                   "avx2", "avx512f", "avx512dq", "avx512bw"}  # the first processor's line only
    assert machine.parse_flags(LSCPU) == {"fpu", "vme", "sse4_2", "avx", "avx2", "fma"}
    assert "sve" in machine.parse_flags(CPUINFO_ARM) and "asimd" in machine.parse_flags(CPUINFO_ARM)
    assert machine.parse_flags("processor\t: 0\n") == frozenset()


def test_widest_vector_extension() -> None:
    assert machine.widest_vector_extension(machine.parse_flags(CPUINFO_X86)) == "AVX-512"
    assert machine.widest_vector_extension(machine.parse_flags(LSCPU)) == "AVX2"
    assert machine.widest_vector_extension(machine.parse_flags(CPUINFO_ARM)) == "SVE"
    assert machine.widest_vector_extension({"sse2", "avx"}) == "AVX"
    assert machine.widest_vector_extension({"sse2", "sse4_2"}) == "SSE4.2"
    assert machine.widest_vector_extension({"fp", "asimd"}) == "NEON"
    assert machine.widest_vector_extension({"fpu", "sse2"}) is None
    assert machine.widest_vector_extension(frozenset()) is None


def test_this_machine_is_described() -> None:
    name = machine.cpu_name()
    assert isinstance(name, str) and name.strip() == name and name
    vec = machine.vector_extension()
    assert vec is None or vec in machine.VECTOR_EXTENSIONS
    assert machine.cpu_model() == (f"{name}, {vec}" if vec else name)
    cpus = machine.logical_cpus()
    assert cpus is None or (isinstance(cpus, int) and cpus >= 1)
    load = machine.load_average()
    assert len(load) == 3 and all(isinstance(v, float) for v in load)
    assert all(math.isnan(v) or v >= 0 for v in load)
    assert machine.format_load((0.5, 1.25, 10.0)) == "0.50 / 1.25 / 10.00"


def test_torch_description() -> None:
    import torch

    desc = machine.torch_description()
    assert desc["torch"] == torch.__version__
    assert desc["threads"] == torch.get_num_threads()
    assert isinstance(desc["blas"], str) and desc["blas"]
    if "BLAS_INFO=mkl" in torch.__config__.show():
        assert desc["blas"] == "MKL"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "machine.py"))
def test_no_script_describes_the_machine_by_itself(script: str) -> None:
    """Every script takes the machine's description from benchmarks/machine.py, so all describe it alike."""
    text = (ROOT / "benchmarks" / script).read_text()
    for own in ("lscpu", "/proc/cpuinfo", "getloadavg", "platform.processor", "platform.machine", "def cpu_model"):
        assert own not in text, f"benchmarks/{script} reads {own!r} itself; use benchmarks/machine.py"
    assert "from machine import " in text, f"benchmarks/{script} does not use benchmarks/machine.py"
