"""`edgevl doctor --fix` (also `python -m edgevl.gpu_setup`): the CUDA build of both runtimes from PyPI wheels alone.

`pip install 'edgevl[cuda]'` brings NVIDIA's CUDA 13 toolkit wheels (nvcc, runtime, cuBLAS, CCCL), which install
as one toolkit tree, `site-packages/nvidia/cu13/{bin,include,lib,nvvm}`. This step then
1. compiles llama-cpp-python with `GGML_CUDA=on` against that tree, for the compute capabilities of the GPUs found
   (or a short list when none is), and keeps the wheel in edgevl's cache: a second run, or another virtual
   environment, installs it without compiling;
2. swaps onnxruntime for onnxruntime-gpu (1.31 or newer: CUDA 13) with its CUDA and cuDNN wheels and cuBLAS.
No system CUDA toolkit is needed, only the NVIDIA driver at run time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Sequence

import platformdirs

from edgevl.errors import BackendUnavailable

LLAMA_CPP_VERSION = "0.3.36"
# Without a GPU to ask: PTX for Turing (JIT-compiled by the driver for any later GPU at first start) and machine
# code for the common Ampere, Ada, Hopper and Blackwell cards. CUDA 13 supports nothing older than Turing.
FALLBACK_ARCHITECTURES = "75-virtual;86-real;89-real;90-real;120a-real"
# The wheels ship versioned libraries only; CMake's FindCUDAToolkit looks for the development names.
_DEV_LINKS = {"libcudart.so": "libcudart.so.13", "libcublas.so": "libcublas.so.13",
              "libcublasLt.so": "libcublasLt.so.13"}


def wheel_toolkit(need_compiler: bool = True) -> Path | None:
    """The CUDA 13 tree of NVIDIA's wheels (site-packages/nvidia/cu13) - with nvcc unless `need_compiler` is
    false - or None when those wheels are not installed."""
    spec = importlib.util.find_spec("nvidia")
    for location in (spec.submodule_search_locations or []) if spec else []:
        root = Path(location) / "cu13"
        if (root / "bin" / "nvcc").is_file() or (root.is_dir() and not need_compiler):
            return root
    return None


def add_development_links(root: Path) -> None:
    """libcudart.so -> libcudart.so.13 etc., as a toolkit's -dev package has them, and lib64 -> lib, where nvcc
    looks for the runtime on 64-bit Linux (idempotent)."""
    lib = root / "lib"
    if not (root / "lib64").exists():
        (root / "lib64").symlink_to("lib")
    for name, target in _DEV_LINKS.items():
        if (lib / target).exists() and not (lib / name).exists():
            (lib / name).symlink_to(target)


def detected_architectures(compute_capabilities: Sequence[str]) -> str:
    """CMAKE_CUDA_ARCHITECTURES for the GPUs found ("8.6", "9.0" -> "86-real;90-real"), the fallback list if none."""
    found = sorted({capability.replace(".", "") for capability in compute_capabilities})
    return ";".join(f"{arch}-real" for arch in found) or FALLBACK_ARCHITECTURES


def cmake_args(root: Path, architectures: str) -> list[str]:
    # GGML_CUDA_NO_VMM: ggml then needs only the runtime and cuBLAS, not libcuda.so at link time (the wheels have
    # no driver stub), and the library still loads on a machine without a driver, where doctor can explain.
    # GGML_CUDA_NCCL off: NCCL only helps several GPUs, and a system libnccl that ggml picked up made Python crash
    # (segfault) when numpy or torch was loaded before llama.cpp, or onnxruntime after it (seen on an H200, CUDA 13.0).
    return ["-DGGML_CUDA=on", "-DGGML_CUDA_NO_VMM=on", "-DGGML_CUDA_NCCL=off",
            f"-DCMAKE_CUDA_ARCHITECTURES={architectures}", f"-DCMAKE_CUDA_COMPILER={root / 'bin' / 'nvcc'}",
            f"-DCUDAToolkit_ROOT={root}"]


def nvcc_version(root: Path) -> str:
    output = subprocess.run([str(root / "bin" / "nvcc"), "--version"], capture_output=True, text=True).stdout
    return output.strip().rsplit("release ", 1)[-1].split(",")[0] if "release " in output else "unknown"


def cached_wheel_dir(cuda_version: str, architectures: str) -> Path:
    """One cache folder per build: llama-cpp-python version, CUDA version and architectures."""
    key = f"llama-cpp-python-{LLAMA_CPP_VERSION}-cuda{cuda_version}-{architectures.replace(';', '_')}"
    return platformdirs.user_cache_path("edgevl") / "wheels" / key


def build_llama_cpp(root: Path, architectures: str, jobs: int, source: str, offline: bool,
                    build_dir: Path | None, verbose: bool) -> Path:
    """Compile llama-cpp-python with CUDA into the wheel cache (skipped when the wheel is there); its path."""
    cache = cached_wheel_dir(nvcc_version(root), architectures)
    found = sorted(cache.glob("llama_cpp_python-*.whl"))
    if found:
        print(f"llama-cpp-python CUDA wheel from the cache: {found[-1]}")
        return found[-1]
    add_development_links(root)
    env = dict(os.environ, CMAKE_ARGS=" ".join(cmake_args(root, architectures)), CMAKE_BUILD_PARALLEL_LEVEL=str(jobs),
               PATH=f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", CUDA_PATH=str(root))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", "llama-cpp-python", "-w", str(cache),
               source]
    if offline:  # a machine without a registry: the build tools (scikit-build-core, cmake, ninja) must be installed
        command[4:4] = ["--no-build-isolation", "--no-index"]
    if verbose:
        command.append("--verbose")
    if build_dir is not None:  # kept, so that llama-mtmd-cli can be built from the same configuration
        command += ["-C", f"build-dir={build_dir}"]
    print(f"compiling llama-cpp-python {LLAMA_CPP_VERSION} with CUDA for {architectures} ({jobs} jobs) ...", flush=True)
    started = time.monotonic()
    subprocess.run(command, env=env, check=True)
    print(f"compiled in {(time.monotonic() - started) / 60:.1f} min; wheel cached in {cache}")
    return next(cache.glob("llama_cpp_python-*.whl"))


def pip_install(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", *arguments], check=True)


# onnxruntime-gpu's releases follow onnxruntime's with a delay, so not pinned to the installed version; 1.31 is
# the first one checked against CUDA 13 (its `cuda` extra pulls the CUDA 13 wheels but not cuBLAS, added here)
ONNXRUNTIME_GPU = ("onnxruntime-gpu[cuda,cudnn]>=1.31", "nvidia-cublas==13.0.*", "nvidia-cuda-nvrtc==13.0.*")


def swap_onnxruntime() -> None:
    if _installed("onnxruntime"):  # both install the `onnxruntime` module: the CPU one must go first
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "onnxruntime"], check=True)
    pip_install(*ONNXRUNTIME_GPU)


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def add_arguments(parser) -> None:
    """The options of this step, on its own parser or on `edgevl doctor`'s."""
    parser.add_argument("--arch", help="CMAKE_CUDA_ARCHITECTURES, e.g. 89 or '86-real;90-real' "
                                       f"(default: the GPUs found, else {FALLBACK_ARCHITECTURES})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    parser.add_argument("--source", default=f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                        help="what pip builds: the PyPI release (default), or its sdist or unpacked sdist")
    parser.add_argument("--cuda-root", type=Path,
                        help="a CUDA 13 toolkit to build with instead of the wheels' (a folder with bin/nvcc)")
    parser.add_argument("--offline", action="store_true", help="no registry: the build tools are installed")
    parser.add_argument("--build-dir", type=Path, help="keep CMake's build folder here")
    parser.add_argument("--verbose-build", action="store_true", help="show the compiler's output")
    parser.add_argument("--skip-onnx", action="store_true", help="leave ONNX Runtime as it is")
    parser.add_argument("--skip-llama", action="store_true", help="leave llama-cpp-python as it is")


def fix(args: argparse.Namespace) -> None:
    """Build and install the CUDA llama-cpp-python (from the cache when it is there), then onnxruntime-gpu."""
    from edgevl.gpu_info import query_gpus

    if not args.skip_llama:
        root = args.cuda_root or wheel_toolkit()
        if root is None or not (root / "bin" / "nvcc").is_file():
            raise BackendUnavailable(f"no CUDA compiler {'in ' + str(root) if root else 'wheels'}: "
                                     "pip install 'edgevl[cuda]' first")
        architectures = args.arch or detected_architectures([gpu.compute_capability for gpu in query_gpus().gpus])
        wheel = build_llama_cpp(root, architectures, args.jobs, args.source, args.offline, args.build_dir,
                                args.verbose_build)
        pip_install("--force-reinstall", "--no-deps", str(wheel))  # replaces a CPU build of the same version
        pip_install(str(wheel))  # and adds its own dependencies where no CPU build brought them (diskcache, jinja2)
    if not args.skip_onnx:
        swap_onnxruntime()
    print("done: `edgevl doctor` shows what offloads now")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevl.gpu_setup", description=__doc__.splitlines()[0])
    add_arguments(parser)
    fix(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
