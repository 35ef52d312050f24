"""Which precision and backend an engine runs at: the rules behind ``auto``.

``auto`` is the default everywhere (engine, node, launch, tools) because the fastest correct
path should not be opt-in. The rule, decided once per engine from what the hardware offers:

- torch on a CPU with native bf16 matrix instructions (AVX-512 BF16 or AMX) that oneDNN may
  use: **bf16**. Measured on such a CPU at 640×480, side by side: 2.2× faster than fp32
  (1.06 against 2.31 s per pair on 2 cores), at 0.65 GB instead of 1.04, within 57–61 dB
  PSNR of the authors' output (benchmarks/README.md). A CPU without them emulates
  bf16 and gains nothing, so it runs **fp32**; so does a CPU whose oneDNN is capped below
  its bf16 instructions (``ONEDNN_MAX_CPU_ISA``, e.g. ``AVX2``). Other architectures (ARM)
  stay fp32: their bf16 paths have not been measured here.
- torch on CUDA: **fp16** on devices with tensor cores (compute capability 7.0 and newer)
  and on the Tegra GPUs with double-rate fp16 (5.3, 6.2: Jetson Nano, TX1, TX2); **fp32** on
  other older GPUs, where fp16 arithmetic runs at a fraction of the fp32 rate. fp16 rather
  than bf16 even where both exist (8.0 and newer): they run at the same tensor-core rate, and
  fp16 keeps three more mantissa bits; this network's activations stay well inside fp16's
  range (the test suite runs it under fp16 autocast on every run: no inf or NaN, 74–78 dB
  against the authors' outputs).
- onnxruntime: **fp16** with the TensorRT provider (its fp16 kernels); otherwise **fp32**, the
  exported graph's own precision (the CPU provider has no bf16/fp16 path worth taking for
  this graph: benchmarks/README.md).
- classic_* backends: **fp32**, the only precision the rules have.

An explicit ``fp32``/``bf16``/``fp16`` is taken as asked; ``fp32`` is the exact mode the
reference tests pin.

``backend: auto`` (also the default) follows from the same facts and from the network. On an
x86 CPU without native bf16 (or with oneDNN capped below it) the network runs in fp32:

- GIFNet there runs in **torch**: its banded PyTorch path outran ONNX Runtime's graph side by
  side on a real AVX2 CPU (Zen 3, 640×480: 1.26× and 1.30× in two runs, 1.6× through
  ``fuse_batch``) and holds less memory (0.8 GB for a pair against 1.56 GB); ONNX Runtime led
  by 4–6 % only with oneDNN capped to AVX2 on an AVX-512 CPU, whose other libraries still used
  AVX-512 (benchmarks/README.md).
- TIM there runs in **onnxruntime** where it is installed: the two paths were as fast as each
  other (within 5–16 %, either way, in two runs) and ONNX Runtime's holds less (1.05 against
  1.71 GB for ``tim``, 0.51 against 0.66 GB for ``tim_light`` at 640×480).

Everywhere else (native bf16, CUDA, other architectures, an explicit precision, compile)
**torch**. The first onnxruntime engine exports the graph into the user cache (under a
minute), later ones reuse it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# /proc/cpuinfo flags of x86 instructions that compute bf16 products natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ONEDNN_MAX_CPU_ISA values that still let oneDNN use those instructions (oneDNN's names).
_BF16_ISA_CAPS = frozenset(
    {
        "ALL",
        "DEFAULT",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    }
)
# platform.machine() names of x86-64 CPUs, the architecture both rules were measured on.
_X86_64 = ("x86_64", "AMD64")
# CUDA compute capabilities with fast fp16 but no tensor cores: Tegra X1 and X2 (Jetson).
_TEGRA_FP16 = ((5, 3), (6, 2))


@dataclass(frozen=True)
class Capabilities:
    """What the automatic rule looks at; probe() reads it from the machine, tests build it."""

    cpu_flags: frozenset[str] = frozenset()
    machine: str = "x86_64"
    onednn_isa_cap: str | None = None  # ONEDNN_MAX_CPU_ISA as set, None when unset
    cuda_capability: tuple[int, int] | None = None
    cuda_name: str = ""


def probe(device: torch.device) -> Capabilities:
    """The capabilities of this machine (CPU flags, oneDNN cap) and of a CUDA `device`."""
    flags: frozenset[str] = frozenset()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = frozenset(line.partition(":")[2].split())
                break
    capability, name = None, ""
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
    return Capabilities(
        cpu_flags=flags,
        machine=platform.machine(),
        onednn_isa_cap=os.environ.get("ONEDNN_MAX_CPU_ISA"),
        cuda_capability=capability,
        cuda_name=name,
    )


# The x86 instruction sets a CPU engine's speed depends on, widest last: the FLOP floor of a
# pair differs about fivefold between AVX2 and AMX, so a figure means little without it.
INSTRUCTION_SETS = ("SSE4.1", "AVX2", "AVX-512", "AVX-512 BF16", "AMX")
# The /proc/cpuinfo flag that makes each of them available.
_ISA_FLAGS = {
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX-512 BF16": "avx512_bf16",
    "AMX": "amx_bf16",
}


def _onednn_cap_rank(cap: str) -> int:
    """How far ONEDNN_MAX_CPU_ISA (oneDNN's names) lets oneDNN go, as an INSTRUCTION_SETS index."""
    cap = cap.upper()
    if cap in ("", "ALL", "DEFAULT") or "AMX" in cap:
        return len(INSTRUCTION_SETS) - 1
    if cap in _BF16_ISA_CAPS:
        return INSTRUCTION_SETS.index("AVX-512 BF16")
    if cap.startswith("AVX512"):
        return INSTRUCTION_SETS.index("AVX-512")
    return INSTRUCTION_SETS.index("AVX2") if cap.startswith("AVX2") else 0


def instruction_set(caps: Capabilities, device_type: str, backend: str, precision: str) -> str:
    """The instruction set an engine's products run on, for its log line and /diagnostics.

    On an x86 CPU: the widest of INSTRUCTION_SETS that the CPU has and that the engine can
    use. AMX and AVX-512 BF16 compute bf16 products only, so fp32 (ONNX Runtime, the classical
    rules, torch fp32) runs on AVX-512 or AVX2 on the same CPU; ONEDNN_MAX_CPU_ISA caps what
    PyTorch's oneDNN may use. Elsewhere: the CUDA device's compute capability, or the CPU's
    architecture (bf16 and ONNX Runtime's lead are measured on x86 only).
    """
    if device_type == "cuda":
        major, minor = caps.cuda_capability or (0, 0)
        return f"CUDA compute capability {major}.{minor}"
    if caps.machine not in _X86_64:
        return caps.machine
    rank = max(
        (i for i, name in enumerate(INSTRUCTION_SETS) if _ISA_FLAGS.get(name) in caps.cpu_flags),
        default=0,
    )
    if precision != "bf16" or backend != "torch":
        rank = min(rank, INSTRUCTION_SETS.index("AVX-512"))
    if backend == "torch":
        rank = min(rank, _onednn_cap_rank(caps.onednn_isa_cap or ""))
    return INSTRUCTION_SETS[rank]


def _cpu_choice(caps: Capabilities) -> tuple[str, str]:
    if caps.machine not in _X86_64:
        return "fp32", f"auto: bf16 on {caps.machine} CPUs is not measured here"
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in caps.cpu_flags]
    if not native:
        return "fp32", "auto: this CPU has no native bf16 (avx512_bf16 or amx_bf16)"
    cap = (caps.onednn_isa_cap or "").upper()
    if cap and cap not in _BF16_ISA_CAPS:
        return "fp32", f"auto: ONEDNN_MAX_CPU_ISA={caps.onednn_isa_cap} keeps oneDNN off bf16"
    return "bf16", f"auto: the CPU computes bf16 natively ({', '.join(native)})"


def _cuda_choice(caps: Capabilities) -> tuple[str, str]:
    capability = caps.cuda_capability or (0, 0)
    where = (
        f"{caps.cuda_name or 'CUDA device'} (compute capability {capability[0]}.{capability[1]})"
    )
    if capability >= (7, 0):
        return "fp16", f"auto: tensor cores on {where}"
    if capability in _TEGRA_FP16:
        return "fp16", f"auto: double-rate fp16 on {where}"
    return "fp32", f"auto: fp16 is slow on {where}"


def choose_precision(
    backend: str, device_type: str, caps: Capabilities, providers: Sequence[str] | None = None
) -> tuple[str, str]:
    """(precision, one-line reason) that ``auto`` means for this backend on this device."""
    if backend.startswith("classic_"):
        return "fp32", "auto: the classical rules compute in fp32 only"
    if backend == "onnxruntime":
        if device_type == "cuda" and any(p.lower().startswith("tensorrt") for p in providers or ()):
            return "fp16", "auto: TensorRT's fp16 kernels"
        return "fp32", "auto: ONNX Runtime runs the exported fp32 graph"
    if device_type == "cuda":
        return _cuda_choice(caps)
    return _cpu_choice(caps)


def choose_backend(
    device_type: str,
    caps: Capabilities,
    precision: str,
    compile: bool,
    onnxruntime: bool,
    network: str = "gifnet",
) -> tuple[str, str]:
    """(backend, one-line reason) that ``auto`` means here for `network`; `onnxruntime`:
    whether the onnxruntime package can be imported. The reason does not repeat the
    precision's."""
    if device_type == "cuda":
        return "torch", "auto: PyTorch on CUDA"
    if compile:
        return "torch", "auto: compile runs in PyTorch"
    if precision != "auto":  # fp32 asked for is the exact mode the references pin, in PyTorch
        return "torch", "auto: an explicit precision runs in PyTorch"
    if caps.machine not in _X86_64:
        return "torch", f"auto: ONNX Runtime is measured on x86 only, not {caps.machine}"
    if _cpu_choice(caps)[0] == "bf16":
        return "torch", "auto: bf16 runs fastest in PyTorch"
    if network == "gifnet":
        return "torch", "auto: GIFNet's fp32 runs fastest in PyTorch, in less memory"
    if not onnxruntime:
        return "torch", "auto: onnxruntime (TIM's fp32 takes less memory in it) is not installed"
    return "onnxruntime", "auto: TIM's fp32 runs as fast in ONNX Runtime, in less memory"
