"""llguidance (JSON token masks for the ONNX engine) reads its own version from its metadata when imported."""

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("llguidance")
