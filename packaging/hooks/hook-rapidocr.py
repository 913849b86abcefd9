"""RapidOCR: its configuration files and the PP-OCR models shipped in the pinned wheel, its lazily imported entry
module, and only the ONNX Runtime inference engine (the others import torch, Paddle, OpenVINO, TensorRT, MNN)."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

OTHER_ENGINES = ("pytorch", "paddle", "openvino", "tensorrt", "mnn")


def _wanted(module: str) -> bool:
    parts = module.split(".")
    return not (len(parts) > 2 and parts[1] == "inference_engine" and parts[2] in OTHER_ENGINES)


# `from rapidocr import RapidOCR` goes through the package's __getattr__ and import_module(".main").
hiddenimports = collect_submodules("rapidocr", filter=_wanted)
excludedimports = [f"rapidocr.inference_engine.{engine}" for engine in OTHER_ENGINES]
datas = collect_data_files("rapidocr", excludes=["**/pytorch/**"]) + copy_metadata("rapidocr")
