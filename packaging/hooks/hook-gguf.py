"""gguf (the converter's file writer): `edgevl doctor` reports its version."""

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("gguf")
