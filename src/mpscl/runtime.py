"""Where the code runs: device resolution, native-bf16 detection, a description of the machine.

One module for every command (train, evaluate, predict, the benchmarks), so they agree on
what ``--device cuda`` means on a machine without CUDA: a :class:`DeviceError`, which the
command line reports as a one-line error.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Dict, List, Union

import torch

Device = Union[str, torch.device, None]


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(name: Device = "auto") -> torch.device:
    """``"auto"``/None -> ``cuda`` when available, else ``cpu``; anything else as given,
    refused when it is a CUDA device and CUDA is not available."""
    if name is None or (isinstance(name, str) and name == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"--device {name}: not a device name (auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine")
    return dev


@lru_cache(maxsize=1)
def _cpuinfo() -> Dict[str, object]:
    """Model name and flags from /proc/cpuinfo (read once; empty where there is none)."""
    info: Dict[str, object] = {"model": None, "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and info["model"] is None:
            info["model"] = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not info["flags"]:
            info["flags"] = line.split(":", 1)[1].split()
    return info


def cpu_name() -> str:
    return str(_cpuinfo()["model"] or platform.processor() or platform.machine())


def cpu_flags(wanted=("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")) -> List[str]:
    flags = _cpuinfo()["flags"]
    return [f for f in wanted if f in flags]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (where autocast pays off).

    CUDA: Ampere and newer. CPU: AMX or AVX512-BF16; on CPUs without them (e.g. Cascade
    Lake) oneDNN emulates bf16 and autocast measured 2-3x *slower* than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(cpu_flags(("amx_bf16", "avx512_bf16")))


def use_bf16(mode: str, device: torch.device) -> bool:
    """``train.amp``: off, bf16 (forced where autocast exists) or auto (where native)."""
    if mode == "off":
        return False
    if mode == "bf16":
        return device.type in ("cpu", "cuda")
    return native_bf16(device)


def machine_info(device: torch.device) -> Dict:
    """What a benchmark result records about where it ran."""
    info: Dict = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(),
                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                  "python": platform.python_version(), "device": str(device),
                  "native_bf16": native_bf16(device)}
    if _cpuinfo()["flags"]:
        info["cpu_flags"] = cpu_flags()
    try:
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)  # other work on the machine
    except OSError:
        pass
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = info["cpu"]
    return info


def machine_line() -> str:
    """One line: CPU (with the vector and bf16 features that change speed and, through
    ``train.amp: auto``, the arithmetic), cores, GPU, torch (the method comparison's summaries)."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    flags = cpu_flags()
    cpu = f"{cpu_name()} ({', '.join(flags)})" if flags else cpu_name()
    return f"{cpu}, {os.cpu_count()} cores, {dev}, torch {torch.__version__}"
