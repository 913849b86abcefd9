"""Screens as they come (edgevl/engines/screens.py and the embedded engine): tiles and their seams, line crops,
dark panels beside light ones, columns - on images drawn at test time."""

from __future__ import annotations

import difflib

import numpy as np
import pytest
from PIL import Image, ImageDraw
from edgevl.drawing import default_font, render_text

from edgevl.engines import screens
from edgevl.engines.classic import ClassicOcrEngine, _to_bgr
from edgevl.layout import TextBox
from edgevl.tasks import get_task

SENTENCES = [
    "Invoice 2024-117: total $1,234.56 due Friday.",
    "Contact support@example.com or call (555) 0199.",
    "Meeting notes - Q3 planning, room 4B",
    "The quick brown fox jumps over the lazy dog.",
    "Shipping to Berlin takes three to five days.",
    "Version 2.4.1 fixes the crash on startup.",
]


@pytest.fixture(scope="module")
def engine() -> ClassicOcrEngine:
    with ClassicOcrEngine(threads=2) as shared:
        yield shared


def read(engine: ClassicOcrEngine, image: Image.Image, layout: str = "auto") -> str:
    return "".join(engine.stream(get_task("ocr").build_request([image], engine.family, layout=layout)))


def similarity(expected: str, got: str) -> float:
    return difflib.SequenceMatcher(None, expected, got).ratio()


def luminance(image: Image.Image) -> np.ndarray:
    return screens.gray(_to_bgr(image))


# ---------------------------------------------------------------------------------------------- tiles


@pytest.mark.parametrize(("height", "width"), [(900, 1200), (9000, 1200), (5000, 4096), (3000, 400), (2049, 2000)])
def test_tiles_cover_the_page_with_overlaps_taller_than_a_line(height: int, width: int) -> None:
    found = screens.tiles(height, width)
    assert found[0][1] == 0 and found[-1][3] == height
    assert all(tile[0] == 0 and tile[2] == width for tile in found)
    assert all(tile[3] - tile[1] <= max(screens.MIN_TILE_HEIGHT, screens.TILE_PIXELS // width) for tile in found)
    for upper, lower in zip(found, found[1:]):
        assert upper[3] - lower[1] >= screens.TILE_OVERLAP
    assert (len(found) == 1) == (height * width <= screens.TILE_PIXELS or height <= screens.MIN_TILE_HEIGHT)


def test_a_line_cut_by_a_tile_edge_is_taken_from_the_tile_holding_it_whole() -> None:
    upper, lower = (0, 0, 500, 300), (0, 200, 500, 600)
    cut = TextBox("half a lin", 10, 280, 200, 300)
    whole = TextBox("half a line", 10, 280, 210, 302)
    inside = TextBox("inside", 10, 100, 90, 120)
    kept_upper = screens.whole_in_tile([inside, cut], upper, 600, 500)
    kept_lower = screens.whole_in_tile([whole], lower, 600, 500)
    assert kept_upper == [inside] and kept_lower == [whole]
    twice = TextBox("in both", 10, 230, 120, 250)  # inside the overlap: found by both tiles
    assert screens.merge_boxes([*kept_upper, twice], [twice, *kept_lower]) == [inside, twice, whole]


def test_a_long_page_is_read_across_tile_seams_with_no_line_lost_or_doubled(
        engine: ClassicOcrEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = SENTENCES * 3
    page = render_text(lines, default_font(22), line_spacing=1.9)
    monkeypatch.setattr(screens, "TILE_PIXELS", page.width * 260)  # tiles of 260 rows: seams cut through lines
    monkeypatch.setattr(screens, "MIN_TILE_HEIGHT", 200)
    monkeypatch.setattr(screens, "TILE_OVERLAP", 80)
    assert len(screens.tiles(page.height, page.width)) >= 4
    got = read(engine, page)
    assert got.splitlines() == lines or similarity("\n".join(lines), got) >= 0.98, got
    assert len(got.splitlines()) == len(lines)


# ---------------------------------------------------------------------------------------------- line crops


def tight_crop(lines: list[str], size: int = 22) -> Image.Image:
    image = render_text(lines, default_font(size), margin=2, line_spacing=1.15)
    ink = np.flatnonzero((np.asarray(image.convert("L")) < 128).any(axis=1))
    return image.crop((0, int(ink[0]) - 1, image.width, int(ink[-1]) + 2))


def test_one_tight_line_is_a_line_crop_and_several_are_not() -> None:
    assert screens.is_line_crop(luminance(tight_crop([SENTENCES[0]])))
    assert not screens.is_line_crop(luminance(tight_crop(SENTENCES[:3], size=14)))  # lines set tightly
    assert not screens.is_line_crop(luminance(render_text([SENTENCES[0]], default_font(12), margin=30)))  # loose
    assert not screens.is_line_crop(luminance(Image.new("RGB", (300, 30), "white")))
    inverted = Image.fromarray(255 - np.asarray(tight_crop([SENTENCES[1]])))
    assert screens.is_line_crop(luminance(inverted))


def test_a_line_crop_goes_straight_to_the_recogniser(engine: ClassicOcrEngine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    crop = tight_crop([SENTENCES[1]])
    monkeypatch.setattr(engine, "_detect_tiled", lambda *args: pytest.fail("a line crop went to the detector"))
    assert similarity(SENTENCES[1], read(engine, crop)) >= 0.97


# ---------------------------------------------------------------------------------------------- polarity


def panels(dark_text: list[str], light_text: list[str]) -> Image.Image:
    """A dark panel with light text on the left, dark text on a light page on the right."""
    font = default_font(18)
    image = Image.new("RGB", (900, 240), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 300, 240], fill=(30, 30, 34))
    for index, text in enumerate(dark_text):
        draw.text((20, 40 + index * 48), text, font=font, fill=(225, 225, 225))
    for index, text in enumerate(light_text):
        draw.text((330, 26 + index * 30), text, font=font, fill=(150, 150, 150) if index % 2 else (30, 30, 30))
    return image


def test_dark_panel_beside_a_light_page_is_read_panel_first(engine: ClassicOcrEngine) -> None:
    menu, page = ["Inbox", "Drafts", "Archive", "Settings"], SENTENCES[:5]
    image = panels(menu, page)
    assert screens.has_mixed_polarity(luminance(image))
    assert similarity("\n".join([*menu, *page]), read(engine, image)) >= 0.95


def test_what_only_the_inverted_image_shows_is_added(engine: ClassicOcrEngine,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    image = _to_bgr(panels(["Inbox"], [SENTENCES[0]]))
    seen = []
    original = engine._detect_tiled

    def detect(picture: np.ndarray, with_chars: bool) -> list[TextBox]:
        seen.append(picture)
        found = original(picture, with_chars)
        return [box for box in found if box.left > 300] if len(seen) == 1 else found  # first pass: panel missed

    monkeypatch.setattr(engine, "_detect_tiled", detect)
    texts = [box.text for box in engine._find_text(image)]
    assert len(seen) == 2 and np.array_equal(seen[1], 255 - image)
    assert texts[0] == SENTENCES[0] and texts[1:] == ["Inbox"]


def test_small_text_is_read_again_enlarged_and_its_boxes_come_back_in_page_pixels(
        engine: ClassicOcrEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _to_bgr(render_text(SENTENCES[:3], default_font(10), margin=10, line_spacing=1.3))
    seen = []
    original = engine._detect_tiled

    def detect(picture: np.ndarray, with_chars: bool) -> list[TextBox]:
        seen.append(picture.shape[:2])
        return original(picture, with_chars)

    monkeypatch.setattr(engine, "_detect_tiled", detect)
    boxes = engine._find_text(image)
    height, width = image.shape[:2]
    assert seen == [(height, width), (height * screens.ENLARGE, width * screens.ENLARGE)]
    assert similarity("\n".join(SENTENCES[:3]), "\n".join(box.text for box in boxes)) >= 0.97
    assert all(0 <= box.left < box.right <= width and 0 <= box.top < box.bottom <= height for box in boxes)


def test_text_of_ordinary_size_is_read_once(engine: ClassicOcrEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _to_bgr(render_text(SENTENCES[:3], default_font(22)))
    seen = []
    original = engine._detect_tiled
    monkeypatch.setattr(engine, "_detect_tiled", lambda picture, chars: seen.append(1) or original(picture, chars))
    assert [box.text for box in engine._find_text(image)] == SENTENCES[:3]
    assert len(seen) == 1


def test_a_plain_light_or_dark_screen_is_read_once() -> None:
    assert not screens.has_mixed_polarity(luminance(render_text(SENTENCES)))
    dark = Image.fromarray(255 - np.asarray(render_text(SENTENCES)))
    assert not screens.has_mixed_polarity(luminance(dark))


# ---------------------------------------------------------------------------------------------- columns


def test_two_column_page_under_a_title_through_the_engine(engine: ClassicOcrEngine) -> None:
    left, right = SENTENCES[:3], SENTENCES[3:]
    font, title = default_font(18), "Release notes for the spring update"
    image = Image.new("RGB", (1000, 200), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 14), title, font=default_font(28), fill="black")
    for column, lines in ((20, left), (520, right)):
        for index, text in enumerate(lines):
            draw.text((column, 70 + index * 30), text, font=font, fill="black")
    got = read(engine, image)
    assert similarity("\n".join([title, *left, *right]), got) >= 0.97, got
    interleaved = [title, *(line for pair in zip(left, right) for line in pair)]
    assert similarity("\n".join(interleaved), read(engine, image, "raw")) >= 0.97  # the detector's order
