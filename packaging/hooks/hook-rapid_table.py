"""rapid-table: the SLANet-plus model shipped in the pinned wheel and its configuration files."""

from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("rapid_table") + copy_metadata("rapid-table")
