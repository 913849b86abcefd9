"""Strip the symbol tables left in the app folder's shared libraries (the ones built from source here - Python,
llama.cpp, OpenCV - and some wheels'), keeping each library whose stripped copy would not load.

    python packaging/strip_libraries.py dist/edgevl/_internal        (build.sh runs it)

`strip` rewrites the file layout; on a library that patchelf has edited (auditwheel's repair of a manylinux wheel)
that can leave a LOAD segment whose file offset and address disagree modulo its alignment, which the loader refuses
("ELF load command address/offset not page-aligned"). Such copies are thrown away, the original is kept.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
PT_LOAD = 1
SHT_SYMTAB = 2


def _elf64_header(data: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(program header offset, size, count, section header offset, size, count) of a little-endian ELF64 file."""
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return None
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    return phoff, phentsize, phnum, shoff, shentsize, shnum


def has_symbol_table(data: bytes) -> bool:
    header = _elf64_header(data)
    if header is None:
        return False
    _, _, _, shoff, shentsize, shnum = header
    return any(struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] == SHT_SYMTAB for i in range(shnum))


def segments_aligned(data: bytes) -> bool:
    """Whether every LOAD segment's file offset and address agree modulo its alignment (what the loader checks)."""
    header = _elf64_header(data)
    if header is None:
        return False
    phoff, phentsize, phnum, _, _, _ = header
    for i in range(phnum):
        kind, _, offset, address, _, _, _, align = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if kind == PT_LOAD and align > 1 and (offset - address) % align:
            return False
    return True


def strip_folder(folder: Path) -> tuple[int, list[Path]]:
    """Strip every library in the folder that has a symbol table: bytes saved, libraries kept as they were."""
    saved, kept = 0, []
    with tempfile.TemporaryDirectory() as scratch:
        for library in sorted(folder.rglob("*.so*")):
            if library.is_symlink() or not library.is_file() or not has_symbol_table(library.read_bytes()):
                continue
            stripped = Path(scratch) / library.name
            subprocess.run(["strip", "--strip-unneeded", "-o", str(stripped), str(library)], check=True)
            if not segments_aligned(stripped.read_bytes()):
                kept.append(library)
                continue
            saved += library.stat().st_size - stripped.stat().st_size
            shutil.copyfile(stripped, library)  # (keeps the library's mode)
    return saved, kept


def main() -> int:
    folder = Path(sys.argv[1])
    saved, kept = strip_folder(folder)
    print(f"stripped: {saved / 2**20:.1f} MB saved; left as they were (strip would break them): "
          f"{', '.join(path.name for path in kept) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
