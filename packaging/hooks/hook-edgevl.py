"""edgevl's package data (model cards, the GUI's icon, the eval corpus) and its version metadata.

Its modules are found by import analysis; all of them are collected as well (but the test helpers, which need torch
or pytest) so that an engine or model family chosen by name at run time is never missing from the bundle."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata


def _not_test_code(module: str) -> bool:
    return not module.startswith(("edgevl.testing", "edgevl.gui.testing"))


hiddenimports = collect_submodules("edgevl", filter=_not_test_code)
datas = collect_data_files("edgevl") + copy_metadata("edgevl")
