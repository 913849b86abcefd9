"""Synthetic screenshots drawn with Pillow, no system font required: text and ruled tables.

`edgevl convert --verify` shows them to a converted model and its reference; tests draw their images with them.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Where Debian's fonts-dejavu-core puts its sans font.
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def default_font(size: int = 24) -> Font:
    """Pillow's bundled font (Aileron), scalable since Pillow 10.1: works on any machine."""
    return ImageFont.load_default(size=size)


def dejavu_font(size: int = 24) -> Font | None:
    """DejaVu Sans if the system has it, else None (tests using it skip)."""
    return ImageFont.truetype(str(DEJAVU_SANS), size) if DEJAVU_SANS.is_file() else None


def render_text(lines: list[str], font: Font | None = None, margin: int = 24, line_spacing: float = 1.8) -> Image.Image:
    """Black text on white, one string per line, like a plain screenshot."""
    font = font or default_font()
    line_height = round(_text_height(font) * line_spacing)
    width = max(round(font.getlength(line)) for line in lines) + 2 * margin
    image = Image.new("RGB", (width, line_height * len(lines) + 2 * margin), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * line_height), line, fill="black", font=font)
    return image


def render_table(
    cells: list[list[str]], font: Font | None = None, padding: int = 14, margin: int = 24, line_width: int = 2
) -> Image.Image:
    """A ruled table: grid lines around every cell, the first row (the header) on grey."""
    font = font or default_font()
    columns = len(cells[0])
    text_widths = [max(round(font.getlength(row[column])) for row in cells) for column in range(columns)]
    column_widths = [width + 2 * padding for width in text_widths]
    row_height = _text_height(font) + 2 * padding
    lefts = [margin + sum(column_widths[:column]) for column in range(columns + 1)]
    tops = [margin + row * row_height for row in range(len(cells) + 1)]
    image = Image.new("RGB", (lefts[-1] + margin, tops[-1] + margin), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([lefts[0], tops[0], lefts[-1], tops[1]], fill=(225, 225, 225))
    for x in lefts:
        draw.line([(x, tops[0]), (x, tops[-1])], fill="black", width=line_width)
    for y in tops:
        draw.line([(lefts[0], y), (lefts[-1], y)], fill="black", width=line_width)
    for row_index, row in enumerate(cells):
        for column, text in enumerate(row):
            draw.text((lefts[column] + padding, tops[row_index] + padding), text, fill="black", font=font)
    return image


def _text_height(font: Font) -> int:
    """Height of a line of text drawn at y=0, descenders included."""
    return round(font.getbbox("Ayg|")[3])
