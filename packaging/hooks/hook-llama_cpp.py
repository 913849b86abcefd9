"""llama-cpp-python loads llama.cpp with ctypes from `llama_cpp/lib/` (libllama, libggml*, libmtmd; the CUDA build
adds libggml-cuda), so PyInstaller's import analysis never sees them: collect every shared library of the package
at its own place, where `llama_cpp._ctypes_extensions` looks for them."""

from PyInstaller.utils.hooks import collect_dynamic_libs, copy_metadata

binaries = collect_dynamic_libs("llama_cpp")
datas = copy_metadata("llama-cpp-python")  # `edgevl doctor` reports its version
# Its OpenAI-compatible server (FastAPI) is not used: edgevl has its own.
excludedimports = ["llama_cpp.server"]
