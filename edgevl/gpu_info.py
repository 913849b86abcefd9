"""The NVIDIA GPUs of this machine: driver, the CUDA version it supports, and each GPU's name, compute capability
and free memory. Read through NVML (nvidia-ml-py, in the `cuda` extra), else from `nvidia-smi`, else nothing."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"
    free_mib: int
    total_mib: int


@dataclass(frozen=True)
class GpuFacts:
    driver_version: str | None = None  # "580.159.04"; None: no NVIDIA driver found
    cuda_version: str | None = None  # the newest CUDA the driver runs, "13.0"
    gpus: list[Gpu] = field(default_factory=list)
    problem: str = ""  # why nothing could be read, when that is known


def query_gpus() -> GpuFacts:
    try:
        return _from_nvml()
    except ImportError:
        return _from_nvidia_smi()
    except Exception as error:  # pynvml.NVMLError_LibraryNotFound, _DriverNotLoaded, ...: the driver's side
        return GpuFacts(problem=f"NVML: {error}")


def _from_nvml() -> GpuFacts:
    import pynvml

    pynvml.nvmlInit()
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # 13000 -> "13.0"
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(Gpu(_text(pynvml.nvmlDeviceGetName(handle)), f"{major}.{minor}", memory.free >> 20,
                            memory.total >> 20))
        return GpuFacts(_text(pynvml.nvmlSystemGetDriverVersion()), f"{cuda // 1000}.{cuda % 1000 // 10}", gpus)
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> GpuFacts:
    if shutil.which("nvidia-smi") is None:
        return GpuFacts(problem="no nvidia-smi and no nvidia-ml-py")
    query = ["nvidia-smi", "--query-gpu=name,compute_cap,memory.free,memory.total,driver_version",
             "--format=csv,noheader,nounits"]
    result = subprocess.run(query, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return GpuFacts(problem=f"nvidia-smi: {(result.stdout + result.stderr).strip().splitlines()[0]}")
    rows = [[cell.strip() for cell in line.split(",")] for line in result.stdout.strip().splitlines()]
    gpus = [Gpu(name, capability, int(free), int(total)) for name, capability, free, total, _ in rows]
    header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    cuda = header.split("CUDA Version:")[1].split()[0] if "CUDA Version:" in header else None
    return GpuFacts(rows[0][4] if rows else None, cuda, gpus)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
