"""`edgevl doctor` on every GPU state it recognises, with the GPU facts faked, and the CUDA set-up's pure parts.

No test needs a GPU, a driver or the CUDA wheels: NVML, nvidia-smi, llama.cpp's build facts and the ONNX Runtime
provider library are stand-ins."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from edgevl import doctor, gpu_info, gpu_setup
from edgevl.gpu_info import Gpu, GpuFacts

H100 = Gpu("NVIDIA H100 80GB HBM3", "9.0", 80_000, 81_559)
RTX_3060 = Gpu("NVIDIA GeForce RTX 3060", "8.6", 11_000, 12_288)
NO_DRIVER = GpuFacts(problem="NVML: NVML Shared Library Not Found")
OLD_DRIVER = GpuFacts("535.183.01", "12.2", [RTX_3060])
CURRENT = GpuFacts("580.159.04", "13.0", [H100])


# ---- llama.cpp ---------------------------------------------------------------------------------------------------

def test_cpu_only_llama_cpp_with_a_gpu_says_how_to_build_for_it():
    offloads, detail = doctor.llama_cpp_offload(False, [], None, CURRENT)
    assert not offloads
    assert "CPU-only" in detail and "An NVIDIA GPU is present" in detail
    assert doctor.FIX_LLAMA_CUDA in detail


def test_cuda_build_without_a_gpu():
    offloads, detail = doctor.llama_cpp_offload(True, ["900"], None, NO_DRIVER)
    assert not offloads
    assert "CUDA build (architectures 900) present, no GPU found" in detail
    assert "NVML Shared Library Not Found" in detail


def test_cuda_build_with_an_old_driver():
    offloads, detail = doctor.llama_cpp_offload(True, ["860"], 0, OLD_DRIVER)
    assert not offloads
    assert "supports only CUDA 12.2" in detail and doctor.FIX_DRIVER in detail


def test_cuda_build_without_code_for_the_gpu():
    offloads, detail = doctor.llama_cpp_offload(True, ["900"], 1, GpuFacts("580.1", "13.0", [RTX_3060]))
    assert not offloads
    assert "no code for NVIDIA GeForce RTX 3060 (compute capability 8.6)" in detail
    assert doctor.FIX_LLAMA_CUDA in detail


@pytest.mark.parametrize("architectures, capability, runs", [
    (["900"], "9.0", True), (["750", "900"], "8.6", True), (["900"], "8.6", False), (["860", "890"], "12.0", True)])
def test_older_code_runs_on_newer_gpus(architectures, capability, runs):
    assert doctor._has_code_for(capability, architectures) is runs


def test_cuda_build_whose_backend_sees_no_device():
    offloads, detail = doctor.llama_cpp_offload(True, ["900"], 0, CURRENT)
    assert not offloads and "found no device" in detail


def test_cuda_build_on_a_gpu_offloads():
    offloads, detail = doctor.llama_cpp_offload(True, ["900"], 1, CURRENT)
    assert offloads and "all layers" in detail


def test_cuda_build_missing_its_runtime_libraries_gets_the_fix(monkeypatch):
    from edgevl import llamacpp_lib
    from edgevl.errors import BackendUnavailable

    def missing(purpose):
        raise BackendUnavailable(f"{purpose} needs llama-cpp-python (libcudart.so.13: cannot open shared object file)")

    monkeypatch.setattr(llamacpp_lib, "load_llama_cpp", missing)
    [(what, works, detail)] = doctor._llama_cpp(CURRENT)
    assert not works and doctor.FIX_CUDA_WHEELS in detail


def test_cuda_build_info_reads_ggml_features(tmp_path):
    fake = types.SimpleNamespace(
        __file__=str(tmp_path / "__init__.py"),  # no lib/ beside it: the device count cannot be asked
        llama_print_system_info=lambda: b"CUDA : ARCHS = 750,900 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 | ")
    from edgevl.llamacpp_lib import cuda_build_info

    assert cuda_build_info(fake) == (["750", "900"], None)
    cpu_only = types.SimpleNamespace(__file__=fake.__file__, llama_print_system_info=lambda: b"CPU : SSE3 = 1 | ")
    assert cuda_build_info(cpu_only) == ([], None)


def test_cuda_build_is_seen_where_no_driver_lets_its_backend_start(monkeypatch):
    # Seen on a machine without a GPU: ggml registers no CUDA backend there, so llama.cpp itself says it cannot
    # offload; the build is told apart from a CPU one by its libggml-cuda.
    from edgevl import llamacpp_lib

    no_backend = types.SimpleNamespace(llama_supports_gpu_offload=lambda: False)
    monkeypatch.setattr(llamacpp_lib, "load_llama_cpp", lambda purpose: no_backend)
    monkeypatch.setattr(llamacpp_lib, "cuda_build_info", lambda llama: ([], None))
    monkeypatch.setattr(llamacpp_lib, "has_cuda_backend", lambda: True)
    [_, (what, works, detail)] = doctor._llama_cpp(NO_DRIVER)
    assert not works and detail == "CUDA build present, no GPU found (NVML: NVML Shared Library Not Found)"


def test_engine_on_a_cuda_build_without_a_gpu_says_so_not_cpu_only_build(monkeypatch):
    from edgevl.engines import llamacpp

    no_backend = types.SimpleNamespace(llama_supports_gpu_offload=lambda: False)
    monkeypatch.setattr(llamacpp, "has_cuda_backend", lambda: True)
    assert llamacpp._gpu_decision(no_backend, True) == (
        False, "CPU only: CUDA build, but no usable NVIDIA GPU (`edgevl doctor` says why)")
    monkeypatch.setattr(llamacpp, "has_cuda_backend", lambda: False)
    offloads, reason = llamacpp._gpu_decision(no_backend, True)
    assert not offloads and "has no GPU backend" in reason and doctor.FIX_LLAMA_CUDA in reason


def test_missing_cuda_libraries_come_from_the_wheels_the_others_from_the_system(tmp_path, monkeypatch):
    # A system CUDA runtime without cuBLAS (as on a runtime-only install): cuBLAS and cuBLASLt from the wheels.
    from edgevl import llamacpp_lib

    (tmp_path / "lib").mkdir()
    for name in ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13"):
        (tmp_path / "lib" / name).write_bytes(b"")
    loaded = []

    def load(name, mode=0):
        if name.startswith("libcublas"):  # not on the loader's path
            raise OSError(f"{name}: cannot open shared object file")
        loaded.append(name)

    monkeypatch.setattr(llamacpp_lib, "has_cuda_backend", lambda: True)
    monkeypatch.setattr(gpu_setup, "wheel_toolkit", lambda need_compiler=True: tmp_path)
    monkeypatch.setattr(llamacpp_lib.ctypes, "CDLL", load)
    llamacpp_lib._preload_cuda_wheels()
    assert loaded == ["libcudart.so.13", str(tmp_path / "lib" / "libcublasLt.so.13"),
                      str(tmp_path / "lib" / "libcublas.so.13")]


def test_installing_the_built_wheel_also_brings_its_dependencies(tmp_path, monkeypatch):
    # `--no-deps` alone left a virtual environment without a CPU build lacking diskcache and jinja2.
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    installs = []
    monkeypatch.setattr(gpu_setup, "wheel_toolkit", lambda need_compiler=True: tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_bytes(b"")
    monkeypatch.setattr(gpu_setup, "build_llama_cpp", lambda *args: wheel)
    monkeypatch.setattr(gpu_setup, "pip_install", lambda *arguments: installs.append(arguments))
    gpu_setup.main(["--skip-onnx", "--arch", "90-real"])
    assert installs == [("--force-reinstall", "--no-deps", str(wheel)), (str(wheel),)]


# ---- ONNX Runtime ------------------------------------------------------------------------------------------------

def test_cpu_onnxruntime_says_how_to_get_the_gpu_one():
    offloads, detail = doctor.onnx_offload(False, None, CURRENT)
    assert not offloads and doctor.FIX_ONNX_GPU in detail


def test_provider_library_not_found():
    problem = "libcudnn.so.9: cannot open shared object file: No such file or directory"
    offloads, detail = doctor.onnx_offload(True, problem, CURRENT)
    assert not offloads
    assert problem in detail and doctor.FIX_ONNX_LIBRARIES in detail


def test_cuda_provider_without_the_driver_library():
    problem = "libcuda.so.1: cannot open shared object file: No such file or directory"  # seen on a GPU-less machine
    offloads, detail = doctor.onnx_offload(True, problem, NO_DRIVER)
    assert not offloads and detail.startswith("CUDA provider present, no GPU found") and problem in detail
    assert doctor.FIX_DRIVER in doctor.onnx_offload(True, problem, CURRENT)[1]


def test_cuda_provider_without_a_gpu_and_with_an_old_driver():
    assert doctor.onnx_offload(True, None, NO_DRIVER)[1].startswith("CUDA provider present, no GPU found")
    offloads, detail = doctor.onnx_offload(True, None, OLD_DRIVER)
    assert not offloads and doctor.FIX_DRIVER in detail


def test_cuda_provider_on_a_gpu():
    assert doctor.onnx_offload(True, None, CURRENT)[0]


def test_provider_problem_names_the_missing_library(tmp_path, monkeypatch):
    capi = tmp_path / "capi"
    capi.mkdir()
    (capi / "libonnxruntime_providers_cuda.so").write_bytes(b"not a library")
    fake_ort = types.SimpleNamespace(__file__=str(tmp_path / "__init__.py"))
    assert "libonnxruntime_providers_cuda.so" in doctor.cuda_provider_problem(fake_ort)
    (capi / "libonnxruntime_providers_cuda.so").unlink()
    assert "no onnxruntime_providers_cuda library" in doctor.cuda_provider_problem(fake_ort)


# ---- the driver and the GPUs -------------------------------------------------------------------------------------

def test_no_driver_line():
    [(what, works, detail)] = doctor._nvidia(NO_DRIVER)
    assert (what, works) == ("NVIDIA GPU", False)
    assert "both runtimes run on the CPU" in detail and doctor.FIX_DRIVER in detail


def test_driver_and_gpu_lines():
    lines = list(doctor._nvidia(CURRENT))
    assert lines[0] == ("NVIDIA driver", True, "580.159.04, supports CUDA 13.0")
    assert lines[1] == ("GPU 0", True, "NVIDIA H100 80GB HBM3, compute capability 9.0, 80,000 MiB free of 81,559")


def test_old_driver_line():
    what, works, detail = next(doctor._nvidia(OLD_DRIVER))
    assert not works and "too old" in detail and doctor.FIX_DRIVER in detail


def test_facts_from_nvml(monkeypatch):
    handle = object()
    memory = types.SimpleNamespace(free=5 * 2**30, total=8 * 2**30)
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlSystemGetCudaDriverVersion=lambda: 13000,
        nvmlSystemGetDriverVersion=lambda: b"580.159.04", nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: handle, nvmlDeviceGetCudaComputeCapability=lambda h: (8, 9),
        nvmlDeviceGetMemoryInfo=lambda h: memory, nvmlDeviceGetName=lambda h: "NVIDIA L4")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu_info.query_gpus() == GpuFacts("580.159.04", "13.0", [Gpu("NVIDIA L4", "8.9", 5120, 8192)])


def test_nvml_without_a_driver_is_a_problem_not_a_crash(monkeypatch):
    def no_library():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_library))
    facts = gpu_info.query_gpus()
    assert facts.driver_version is None and "NVML Shared Library Not Found" in facts.problem


def test_facts_from_nvidia_smi(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    monkeypatch.setattr(gpu_info.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def smi(command, **kwargs):
        if len(command) == 1:
            return subprocess.CompletedProcess(command, 0, "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04"
                                                            "   CUDA Version: 13.0     |\n", "")
        return subprocess.CompletedProcess(command, 0, "NVIDIA H100 80GB HBM3, 9.0, 80000, 81559, 580.159.04\n", "")

    monkeypatch.setattr(gpu_info.subprocess, "run", smi)
    assert gpu_info.query_gpus() == CURRENT


def test_no_nvml_and_no_nvidia_smi(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpu_info.shutil, "which", lambda name: None)
    assert gpu_info.query_gpus() == GpuFacts(problem="no nvidia-smi and no nvidia-ml-py")


# ---- the set-up step ---------------------------------------------------------------------------------------------

def test_architectures_from_the_gpus_found_or_the_fallback_list():
    assert gpu_setup.detected_architectures(["9.0", "8.6", "9.0"]) == "86-real;90-real"
    assert gpu_setup.detected_architectures([]) == gpu_setup.FALLBACK_ARCHITECTURES


def test_cmake_points_at_the_toolkit_tree(tmp_path):
    args = gpu_setup.cmake_args(tmp_path, "90-real")
    assert "-DGGML_CUDA=on" in args and "-DCMAKE_CUDA_ARCHITECTURES=90-real" in args
    assert "-DGGML_CUDA_NCCL=off" in args  # a system NCCL crashed Python on a GPU machine
    assert f"-DCMAKE_CUDA_COMPILER={tmp_path / 'bin' / 'nvcc'}" in args


def test_wheel_toolkit_gets_its_development_links(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13"):
        (lib / name).write_bytes(b"")
    gpu_setup.add_development_links(tmp_path)
    gpu_setup.add_development_links(tmp_path)  # idempotent
    assert (lib / "libcudart.so").resolve() == (lib / "libcudart.so.13").resolve()
    assert (tmp_path / "lib64" / "libcublasLt.so").exists()


def test_cache_folder_names_the_build(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_setup.platformdirs, "user_cache_path", lambda app: tmp_path / app)
    folder = gpu_setup.cached_wheel_dir("13.0", "86-real;90-real")
    assert folder == tmp_path / "edgevl" / "wheels" / "llama-cpp-python-0.3.36-cuda13.0-86-real_90-real"


def test_cached_wheel_is_reused_without_compiling(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_setup, "nvcc_version", lambda root: "13.0")
    monkeypatch.setattr(gpu_setup.platformdirs, "user_cache_path", lambda app: tmp_path)
    wheel = gpu_setup.cached_wheel_dir("13.0", "90-real") / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"")
    monkeypatch.setattr(gpu_setup.subprocess, "run", lambda *a, **k: pytest.fail("compiled although cached"))
    assert gpu_setup.build_llama_cpp(tmp_path, "90-real", 2, "llama-cpp-python==0.3.36", False, None, False) == wheel


def test_fix_without_the_cuda_wheels_is_one_clear_error(capsys, monkeypatch):
    from edgevl.cli import main

    monkeypatch.setattr(gpu_setup, "wheel_toolkit", lambda need_compiler=True: None)
    assert main(["doctor", "--fix", "--skip-onnx"]) == 1
    assert "pip install 'edgevl[cuda]' first" in capsys.readouterr().err


def test_doctor_runs_with_faked_gpu_facts(capsys, monkeypatch):
    from edgevl.cli import main

    monkeypatch.setattr(doctor, "query_gpus", lambda: CURRENT)
    assert main(["doctor"]) == 0
    err = capsys.readouterr().err
    assert "NVIDIA driver: 580.159.04, supports CUDA 13.0" in err
    assert "GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0" in err
