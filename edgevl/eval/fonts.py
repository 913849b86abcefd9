"""Fonts for synthetic images: the Debian font packages' files, found at run time.

Fonts are not shipped with edgevl (Noto CJK alone is 90 MB); the generator uses whichever of the known Debian
fonts are installed. The list is fixed (not "every font fc-list knows") so that a seed gives the same images on
every machine that has the same packages. CJK fonts also draw Latin text, so English samples use every font
found and Chinese samples only the CJK ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import ImageFont

from edgevl.errors import EdgevlError

FONT_ROOT = Path("/usr/share/fonts")
INSTALL_HINT = "apt-get install fonts-noto-cjk fonts-wqy-zenhei fonts-wqy-microhei fonts-dejavu-core"


@dataclass(frozen=True)
class FontFile:
    """One face of an installed font file; `index` picks the face inside a .ttc collection."""

    name: str
    path: Path
    index: int = 0
    cjk: bool = False

    def at_size(self, size: int) -> ImageFont.FreeTypeFont:
        return _load(self.path, self.index, size)

    def covers(self, text: str) -> bool:
        """Whether the font has a glyph for every character of `text` (else Pillow draws empty boxes)."""
        code_points = _code_points(self.path, self.index)
        return all(ord(char) in code_points or char.isspace() for char in text)


#: Known faces, by Debian package. Noto CJK collections hold JP, KR, SC, TC, HK faces: index 2 is Simplified Chinese.
KNOWN_FONTS = (
    FontFile("Noto Sans CJK SC", FONT_ROOT / "opentype/noto/NotoSansCJK-Regular.ttc", 2, cjk=True),  # fonts-noto-cjk
    FontFile("Noto Sans CJK SC Bold", FONT_ROOT / "opentype/noto/NotoSansCJK-Bold.ttc", 2, cjk=True),
    FontFile("Noto Serif CJK SC", FONT_ROOT / "opentype/noto/NotoSerifCJK-Regular.ttc", 2, cjk=True),
    FontFile("WenQuanYi Zen Hei", FONT_ROOT / "truetype/wqy/wqy-zenhei.ttc", 0, cjk=True),  # fonts-wqy-zenhei
    FontFile("WenQuanYi Micro Hei", FONT_ROOT / "truetype/wqy/wqy-microhei.ttc", 0, cjk=True),  # fonts-wqy-microhei
    FontFile("DejaVu Sans", FONT_ROOT / "truetype/dejavu/DejaVuSans.ttf"),  # fonts-dejavu-core
    FontFile("DejaVu Sans Bold", FONT_ROOT / "truetype/dejavu/DejaVuSans-Bold.ttf"),
    FontFile("DejaVu Serif", FONT_ROOT / "truetype/dejavu/DejaVuSerif.ttf"),
    FontFile("DejaVu Sans Mono", FONT_ROOT / "truetype/dejavu/DejaVuSansMono.ttf"),
)


def fonts_for(language: str, text: str, known: tuple[FontFile, ...] = KNOWN_FONTS) -> list[FontFile]:
    """The installed fonts for `language` ("zh" or "en") that can draw every character of `text` (the corpus);
    a clear error when there are none."""
    installed = [font for font in known if font.path.is_file() and (font.cjk or language != "zh")]
    usable = [font for font in installed if font.covers(text)]
    if not usable:
        script = "Chinese (CJK)" if language == "zh" else "Latin"
        raise EdgevlError(f"no {script} font found for synthetic images; install one: {INSTALL_HINT}")
    return usable


@functools.cache
def _load(path: Path, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size, index=index)


@functools.cache
def _code_points(path: Path, index: int) -> frozenset[int]:
    """The characters a face maps to glyphs (read once: a CJK collection takes about a second)."""
    with TTFont(path, fontNumber=index, lazy=True) as font:
        return frozenset(font.getBestCmap())
