"""packaging/shrink_icu_data.py: which items of ICU's data the desktop download leaves out, and Qt sorting, casing and
decoding on the rebuilt library as on the original; packaging/fetch_sdist.py: which file of the index it downloads;
packaging/constraints.txt: the versions the download is built from still satisfy what edgevl asks for."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # requires-python is 3.10, which has no tomllib
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _packaging_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "packaging" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shrink_icu_data = _packaging_script("shrink_icu_data")
fetch_sdist = _packaging_script("fetch_sdist")


@pytest.mark.parametrize("item", ["de.res", "fr_CA.res", "sr_Latn_BA.res", "zone/de.res", "unit/ja.res", "curr/fr.res",
                                  "brkitr/cjdict.dict", "brkitr/root.res", "translit/root.res", "rbnf/en.res",
                                  "unames.icu", "rfc3491.spp", "uts46.nrm"])
def test_shrink_icu_data_removes_other_languages_and_unused_services(item: str) -> None:
    assert shrink_icu_data.removed(item)


@pytest.mark.parametrize("item", ["root.res", "pool.res", "res_index.res", "supplementalData.res", "zoneinfo64.res",
                                  "en.res", "en_US.res", "zh_Hans_CN.res", "zone/zh.res", "zone/root.res",
                                  "curr/pool.res", "coll/de__PHONEBOOK.res", "coll/sv.res", "coll/ucadata.icu",
                                  "cnvalias.icu", "ibm-943_P15A-2003.cnv", "nfkc.nrm"])
def test_shrink_icu_data_keeps_what_qt_uses(item: str) -> None:
    assert not shrink_icu_data.removed(item)


# what QtCore asks ICU for: collation (QCollator, the file dialog's order), casing, converters, time-zone names
QT_PROBE = """
from PySide6.QtCore import QCollator, QLocale, QStringConverter, QStringDecoder, QTimeZone
words = ["zebra", "Äpfel", "apple", "éclair", "中文", "北京", "阿里", "上海", "10", "9", "ß"]
for name in ["en_US", "zh_CN", "sv_SE", "de_DE"]:
    collator = QCollator(QLocale(name))
    collator.setNumericMode(True)
    print(name, sorted(words, key=collator.sortKey), QLocale(name).toUpper("straße"))
print([QStringDecoder(name).isValid() for name in ["Shift_JIS", "GB18030", "Big5", "EUC-KR", "KOI8-R"]])
print(len(QStringConverter.availableCodecs()))
berlin = QTimeZone(b"Europe/Berlin")
for name in ["en_US", "zh_CN"]:
    print(berlin.displayName(QTimeZone.TimeType.StandardTime, QTimeZone.NameType.LongName, QLocale(name)))
"""


def test_qt_works_on_the_shrunk_icu_data(tmp_path: Path) -> None:
    pyside = pytest.importorskip("PySide6")
    libraries = sorted((Path(pyside.__file__).parent / "Qt" / "lib").glob("libicudata.so.*"))
    if not libraries or not all(shutil.which(tool) for tool in ("icupkg", "genccode", "objcopy", "gcc")):
        pytest.skip("needs a PySide6 wheel with its own ICU, icu-devtools, binutils and gcc")
    library = Path(shutil.copy(libraries[0], tmp_path))
    before, after = shrink_icu_data.shrink(library)
    assert after < before / 2

    def probe(library_path: str | None) -> str:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        if library_path:
            env["LD_LIBRARY_PATH"] = library_path  # searched before the RUNPATH ($ORIGIN) of Qt's libraries
        return subprocess.run([sys.executable, "-c", QT_PROBE], env=env, check=True, capture_output=True,
                              text=True).stdout

    assert probe(str(tmp_path)) == probe(None)


def _index_file(filename: str, yanked: bool = False) -> dict:
    return {"filename": filename, "url": f"https://files.example/{filename}", "hashes": {"sha256": "0" * 64},
            "yanked": yanked}


@pytest.mark.parametrize(("name", "version", "expected"), [
    ("numpy", "2.4.6", "numpy-2.4.6.tar.gz"),
    ("opencv-python-headless", "5.0.0.93", "opencv_python_headless-5.0.0.93.tar.gz"),
])
def test_fetch_sdist_picks_the_versions_source_distribution(name: str, version: str, expected: str) -> None:
    project = {"files": [_index_file(f"{expected[:-7]}-cp311-cp311-manylinux_2_28_x86_64.whl"),
                         _index_file(expected.replace(version, version + ".post1")), _index_file(expected)]}
    assert fetch_sdist.sdist_entry(project, name, version)["filename"] == expected


def test_fetch_sdist_refuses_a_yanked_or_missing_sdist() -> None:
    project = {"files": [_index_file("numpy-2.4.6.tar.gz", yanked=True),
                         _index_file("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl")]}
    with pytest.raises(SystemExit, match="numpy 2.4.6: PyPI has no source distribution numpy-2.4.6.tar.gz"):
        fetch_sdist.sdist_entry(project, "numpy", "2.4.6")


def test_the_download_s_pinned_versions_satisfy_edgevl_s_requirements() -> None:
    """A requirement of edgevl's moved in pyproject.toml without the pins would fail only at the release build."""
    pins = {}
    for line in (ROOT / "packaging" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # what packaging/build.sh installs: the base and the extras `.[gui,gguf,pull]`
    for text in project["dependencies"] + extras["gui"] + extras["gguf"] + extras["pull"]:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate():
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{name} is not pinned in packaging/constraints.txt"
            assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}: {text}"
