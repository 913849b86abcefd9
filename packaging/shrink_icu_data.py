"""Rebuild Qt's ICU data library (libicudata, 31 MB: the data of every ICU service in every language) with only what
Qt calls ICU for, in the languages the app speaks.

    python packaging/shrink_icu_data.py dist/edgevl/_internal/PySide6/Qt/lib/libicudata.so.73     (build.sh runs it)

QtCore imports from ICU only converters (ucnv_*), casing (u_strToUpper/Lower), collation (ucol_*, QCollator: the
file dialog's sort order) and time-zone names (ucal_*); no break iterators (Qt's text layout has its own), no
transliteration, number spell-out, IDNA, StringPrep or character names. Kept: all converters, all collation
tailorings, normalization, the root data; the names of languages, regions, currencies, units and time zones in English
and Chinese only (other locales fall back to them: a German system shows time-zone names in English).

Needs Debian's icu-devtools (icupkg, genccode: any ICU version reads the common data format), objcopy and gcc. The
library keeps its name, soname and data symbol (icudt<version>_dat), which libicuuc links.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

# locale data items: "en_US.res", "sr_Latn_BA.res", "coll/de__PHONEBOOK.res"; not "root.res", "pool.res",
# "res_index.res", "supplementalData.res"
LOCALE_ITEM = re.compile(r"^(?:(?P<tree>[a-z]+)/)?(?P<locale>[a-z]{2,3}(?:_(?:[A-Z0-9][A-Za-z0-9]*)?)*)\.res$")
KEPT_LOCALES = {"en", "en_US", "en_US_POSIX", "zh", "zh_CN", "zh_Hans", "zh_Hans_CN"}
KEPT_TREES = {"coll"}
UNUSED_ITEMS = re.compile(r"^(?:brkitr/|translit/|rbnf/|unames\.icu$|confusables\.cfu$|.*\.spp$|uts46\.nrm$)")


def removed(item: str) -> bool:
    if UNUSED_ITEMS.match(item):
        return True
    locale = LOCALE_ITEM.match(item)
    return locale is not None and locale["tree"] not in KEPT_TREES and locale["locale"] not in KEPT_LOCALES


def run(*command: str | Path) -> str:
    return subprocess.run([str(part) for part in command], check=True, capture_output=True, text=True).stdout


def shrink(library: Path) -> tuple[int, int]:
    """Rebuild `library` in place; its size before and after."""
    version = re.fullmatch(r"libicudata\.so\.(\d+)", library.name)
    if version is None:
        raise SystemExit(f"not an ICU data library: {library}")
    name = f"icudt{version[1]}"
    before = library.stat().st_size
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "full").mkdir()
        # the library holds the common data package, and nothing else, in .rodata; icupkg wants the package's own
        # file name (icudt73l.dat: "l" for little-endian)
        full, small = work / "full" / f"{name}l.dat", work / f"{name}l.dat"
        run("objcopy", "-O", "binary", "--only-section=.rodata", library, full)
        items = run("icupkg", "-l", full).split()
        (work / "removed.txt").write_text("".join(f"{item}\n" for item in items if removed(item)))
        # (icupkg refuses to write a package in which a kept item refers to a removed one)
        run("icupkg", "-r", work / "removed.txt", full, small)
        run("genccode", "-q", "-e", name, "-a", "gcc", "-d", work, small)
        run("gcc", "-shared", "-nostdlib", f"-Wl,-soname,{library.name}", "-Wl,-z,noexecstack", "-o",
            work / library.name, work / f"{name}l_dat.S")
        library.write_bytes((work / library.name).read_bytes())
    return before, library.stat().st_size


def main() -> int:
    before, after = shrink(Path(sys.argv[1]))
    print(f"ICU data: {before / 2**20:.1f} -> {after / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
