"""A labelled synthetic evaluation set: text and table images drawn with Pillow, with their exact ground truth.

Four kinds of image by default, mixed in fixed proportions:
- `line`: one line of text, font size 10-35 px, at a random position on a mostly white (sometimes coloured or
  dark) background; some lines run off the left or right edge, and their label keeps only the visible characters;
- `lines`: a paragraph wrapped over several lines;
- `ui`: an application window (title, menu bar, buttons, status bar) in small fonts, light or dark theme;
- `table`: a small table with a ruled grid or horizontal rules only; its ground truth is HTML;
and three kinds of hard screen, chosen with `kinds` (`--kinds`):
- `columns`: an article in two columns under a title spanning both (read title, left column, right column);
- `scroll`: a long scrolling page, 1200 px wide and 4000-9000 px high, 18-22 px text;
- `panels`: a dark sidebar of menu labels beside a light page with light-grey secondary text and 11-12 px
  labels (read sidebar first, then the page).

Everything is drawn from `random.Random(f"{seed}:{index}")`, so a seed always gives the same set, and a set of
100 images is the first 100 of a set of 500. The output folder holds `images/` and `manifest.jsonl` (one JSON
object per image: `image`, `task`, `text` or `html`, `tags`); the manifest is written last, so a folder
without one is an unfinished set.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from edgevl.errors import EdgevlError
from edgevl.eval.corpus import LANGUAGES, Corpus, load_corpus
from edgevl.eval.datasets import MANIFEST_NAME
from edgevl.eval.fonts import FontFile, fonts_for
from edgevl.tasks.tables import Table

#: Relative share of each kind of image.
KIND_WEIGHTS = {"line": 8, "lines": 5, "ui": 4, "table": 3, "columns": 2, "scroll": 1, "panels": 2}
#: The kinds of a set when none are chosen.
DEFAULT_KINDS = ("line", "lines", "ui", "table")
MIN_FONT_SIZE, MAX_FONT_SIZE = 10, 35
MAX_LINE_WIDTH = 1000  # px: longer sentences are cut at a word (or, in Chinese, character) boundary
Colour = tuple[int, int, int]


@dataclass
class SyntheticImage:
    image: Image.Image
    task: str  # "ocr" or "table"
    tags: list[str]
    text: str | None = None  # the OCR label
    html: str | None = None  # the table label


@dataclass(frozen=True)
class Style:
    background: Colour
    ink: Colour
    tag: str  # "bg:white", "bg:colour" or "bg:dark"


def generate(
    out: Path,
    n: int,
    languages: Sequence[str] = LANGUAGES,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    overwrite: bool = False,
    progress=None,
) -> Path:
    """Write `n` labelled images and their manifest into `out`; returns the manifest's path.

    `progress` is anything with `step(description, total)` and `advance()` (the CLI's progress bar).
    """
    kinds = list(kinds or DEFAULT_KINDS)
    _check_options(n, languages, kinds)
    corpora = {language: load_corpus(language) for language in languages}
    fonts = {language: fonts_for(language, _all_text(corpus)) for language, corpus in corpora.items()}
    _prepare_output(out, overwrite)
    schedule = kind_schedule({kind: KIND_WEIGHTS[kind] for kind in kinds})
    if progress:
        progress.step(f"drawing {n} images", total=n)
    rows = []
    for index in range(n):
        rng = random.Random(f"{seed}:{index}")
        language = rng.choice(list(languages))
        kind = schedule[index % len(schedule)]
        sample = MAKERS[kind](rng, corpora[language], fonts[language])
        name = f"images/{index:06d}.png"
        sample.image.save(out / name)
        label = {"text": sample.text} if sample.task == "ocr" else {"html": sample.html}
        tags = [f"lang:{language}", f"kind:{kind}", *sample.tags]
        rows.append({"image": name, "task": sample.task, **label, "tags": tags})
        if progress:
            progress.advance()
    return _write_manifest(out, rows)


def kind_schedule(weights: dict[str, int]) -> list[str]:
    """One cycle of kinds, each kind spread evenly over it (8:5:4:3 -> line, lines, ui, table, line, ...)."""
    slots = sorted(((slot + 0.5) / weight, kind) for kind, weight in weights.items() for slot in range(weight))
    return [kind for _, kind in slots]


# --------------------------------------------------------------------------------------------------- the kinds


def make_line(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """One line of text at a random place; one line in five runs off an edge, and its label is cut to match."""
    size = rng.randint(MIN_FONT_SIZE, MAX_FONT_SIZE)
    font, font_tag = pick_font(rng, fonts, size)
    text = fit_text(_sentence_span(rng, corpus), font, MAX_LINE_WIDTH, corpus.language)
    style = pick_style(rng)
    left, right = rng.randint(2, 60), rng.randint(2, 60)
    top, bottom = rng.randint(2, 30), rng.randint(2, 30)
    hidden_left, shown_end, cut_tags = _edge_cut(rng, text)
    # The text is drawn whole; the image edge hides the start (drawn at a negative x) or the end (narrow image).
    x = -font.getlength(text[:hidden_left]) if hidden_left else left
    width = int(x + font.getlength(text[:shown_end])) + (0 if shown_end < len(text) else right)
    image = Image.new("RGB", (max(width, 8), top + line_height(font) + bottom), style.background)
    ImageDraw.Draw(image).text((x, top), text, font=font, fill=style.ink)
    label = text[hidden_left:shown_end].strip()
    return SyntheticImage(image, "ocr", [font_tag, size_tag(size), style.tag, *cut_tags], text=label)


def _edge_cut(rng: random.Random, text: str) -> tuple[int, int, list[str]]:
    """Which characters stay visible, text[start:end]: all of them, or one time in ten the start hidden beyond
    the left edge, and one time in ten the end hidden beyond the right edge."""
    roll = rng.random()
    if len(text) > 3 and roll < 0.1:
        start = rng.randint(1, len(text) * 2 // 3)
        if text[start:].strip():
            return start, len(text), ["cut:left"]
    if len(text) > 3 and 0.1 <= roll < 0.2:
        end = rng.randint(max(2, len(text) // 3), len(text) - 1)
        if text[:end].strip():
            return 0, end, ["cut:right"]
    return 0, len(text), []


def make_lines(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """A paragraph of 2-6 lines wrapped at a random width."""
    size = rng.randint(MIN_FONT_SIZE, MAX_FONT_SIZE)
    font, font_tag = pick_font(rng, fonts, size)
    start = rng.randrange(len(corpus.sentences))
    joiner = "" if corpus.language == "zh" else " "
    paragraph = joiner.join(corpus.sentences[start:start + rng.randint(1, 4)])
    max_width = min(rng.randint(300, 900), round(font.getlength(paragraph) * 0.6))  # at least two lines
    lines = wrap_text(paragraph, font, max_width, corpus.language)[: rng.randint(2, 6)]
    style = pick_style(rng)
    margin = rng.randint(4, 40)
    step = round(line_height(font) * rng.uniform(1.15, 1.8))
    width = max(round(font.getlength(line)) for line in lines) + 2 * margin
    image = Image.new("RGB", (width, step * (len(lines) - 1) + line_height(font) + 2 * margin), style.background)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * step), line, font=font, fill=style.ink)
    return SyntheticImage(image, "ocr", [font_tag, size_tag(size), style.tag], text="\n".join(lines))


def make_ui(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """An application window: title, menu bar, 2-5 rows of labels or buttons, a status line.

    The label has one line per row of the window, the texts of a row joined by spaces.
    """
    size = rng.randint(MIN_FONT_SIZE, 15)
    font, font_tag = pick_font(rng, fonts, size)
    dark = rng.random() < 0.4
    window, ink = ((rng.randint(28, 45),) * 3, (rng.randint(210, 240),) * 3) if dark else \
        ((rng.randint(240, 252),) * 3, (rng.randint(20, 60),) * 3)
    width = rng.randint(360, 900)
    row_sizes = [("title", 1), ("menu", rng.randint(3, 5))]
    for _ in range(rng.randint(2, 5)):
        row_sizes.append(("text", 1) if rng.random() < 0.5 else ("buttons", rng.randint(2, 3)))
    row_sizes.append(("status", 1))
    pool = iter(rng.sample(corpus.ui_texts, sum(count for _, count in row_sizes)))  # no text twice
    rows = [(role, [next(pool) for _ in range(count)]) for role, count in row_sizes]
    pad = size
    step = line_height(font) + 2 * pad
    image = Image.new("RGB", (width, step * len(rows) + pad), window)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width, step], fill=tuple(channel + (12 if dark else -18) for channel in window))
    label_lines = []
    for index, (role, texts) in enumerate(rows):
        texts = _fit_row(texts, font, width - 2 * pad, gap=3 * size, language=corpus.language)
        _draw_row(draw, texts, font, (pad, index * step + pad), gap=3 * size, ink=ink, buttons=role == "buttons")
        label_lines.append(" ".join(texts))
    tags = [font_tag, size_tag(size), "bg:dark" if dark else "bg:white"]
    return SyntheticImage(image, "ocr", tags, text="\n".join(label_lines))


def make_table(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """A 2-4 column, 2-6 row table under a shaded header; the label is the table as HTML."""
    size = rng.randint(12, 24)
    font, font_tag = pick_font(rng, fonts, size)
    text_columns = list(corpus.text_columns)
    first = rng.choice(text_columns)
    others = rng.sample([name for name in [*text_columns, *corpus.number_columns] if name != first],
                        rng.randint(1, 3))
    header = [first, *others]
    rows = [[_cell(rng, corpus, name) for name in header] for _ in range(rng.randint(2, 6))]
    ruled = rng.random() < 0.5
    image = draw_table([header, *rows], font, numeric=[name in corpus.number_columns for name in header],
                       ruled=ruled, padding=rng.randint(6, 14), style=pick_style(rng, dark_share=0))
    html = Table(header=header, rows=rows).to("html")
    tags = [font_tag, size_tag(size), "table:grid" if ruled else "table:rules"]
    return SyntheticImage(image, "table", tags, html=html)


def make_columns(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """Two columns of wrapped paragraphs under a title that spans them."""
    size = rng.randint(14, 20)
    font, font_tag = pick_font(rng, fonts, size)
    title_font = font.font_variant(size=round(size * 1.6))
    column_width, gutter, margin = rng.randint(320, 480), rng.randint(size * 2, size * 4), rng.randint(16, 40)
    step = round(line_height(font) * rng.uniform(1.2, 1.5))
    title = fit_text(_sentence_span(rng, corpus), title_font, 2 * column_width + gutter, corpus.language)
    columns = [_paragraph_lines(rng, corpus, font, column_width, rng.randint(6, 14)) for _ in range(2)]
    top = margin + line_height(title_font) + step
    height = top + step * max(len(lines) for lines in columns) + margin
    style = pick_style(rng, dark_share=0.15)
    image = Image.new("RGB", (2 * margin + 2 * column_width + gutter, height), style.background)
    draw = ImageDraw.Draw(image)
    draw.text((margin, margin), title, font=title_font, fill=style.ink)
    for index, lines in enumerate(columns):
        _draw_lines(draw, lines, font, (margin + index * (column_width + gutter), top), step, style.ink)
    label = "\n".join([title, *columns[0], *columns[1]])
    return SyntheticImage(image, "ocr", [font_tag, size_tag(size), style.tag], text=label)


def make_scroll(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """A full-page screenshot of a long scrolling page: 1200 px wide, 4000-9000 px of paragraphs."""
    size = rng.randint(18, 22)
    font, font_tag = pick_font(rng, fonts, size)
    margin, step = rng.randint(40, 120), round(line_height(font) * rng.uniform(1.3, 1.6))
    lines: list[str] = []
    target = rng.randint(4000, 9000)
    while margin + step * (len(lines) + 2) < target - margin:
        lines += [*_paragraph_lines(rng, corpus, font, 1200 - 2 * margin, rng.randint(3, 8)), ""]
    lines = lines[: (target - 2 * margin) // step]
    image = Image.new("RGB", (1200, target), (255, 255, 255))
    _draw_lines(ImageDraw.Draw(image), lines, font, (margin, margin), step, (rng.randint(0, 60),) * 3)
    label = "\n".join(line for line in lines if line)
    return SyntheticImage(image, "ocr", [font_tag, size_tag(size), "bg:white"], text=label)


def make_panels(rng: random.Random, corpus: Corpus, fonts: list[FontFile]) -> SyntheticImage:
    """A dark sidebar of menu labels beside a light page: a heading, lines in dark or light-grey ink, and small
    11-12 px labels. The sidebar is read first, then the page."""
    size = rng.randint(13, 16)
    font, font_tag = pick_font(rng, fonts, size)
    small = font.font_variant(size=rng.randint(11, 12))
    sidebar_width, width = rng.randint(160, 240), rng.randint(700, 1000)
    menu = rng.sample(corpus.ui_texts, rng.randint(4, 8))
    menu = [fit_text(text, font, sidebar_width - 40, corpus.language) for text in menu]
    page = []  # (text, font, ink)
    heading_font = font.font_variant(size=round(size * 1.5))
    page.append((fit_text(_sentence_span(rng, corpus), heading_font, width - sidebar_width - 60, corpus.language),
                 heading_font, (20, 20, 20)))
    for _ in range(rng.randint(4, 9)):
        grey = rng.random() < 0.4
        line_font = small if rng.random() < 0.3 else font
        ink = (rng.randint(140, 170),) * 3 if grey else (rng.randint(20, 60),) * 3
        text = fit_text(_sentence_span(rng, corpus), line_font, width - sidebar_width - 60, corpus.language)
        page.append((text, line_font, ink))
    menu_step, page_step = round(line_height(font) * 2.6), round(line_height(font) * 1.9)
    height = max(len(menu) * menu_step, len(page) * page_step + line_height(heading_font)) + 60
    image = Image.new("RGB", (width, height), (rng.randint(245, 255),) * 3)
    draw = ImageDraw.Draw(image)
    dark = (rng.randint(25, 45),) * 3
    draw.rectangle([0, 0, sidebar_width, height], fill=dark)
    light = (rng.randint(200, 240),) * 3
    for index, text in enumerate(menu):
        draw.text((20, 30 + index * menu_step), text, font=font, fill=light)
    y = 24
    for text, line_font, ink in page:
        draw.text((sidebar_width + 30, y), text, font=line_font, fill=ink)
        y += max(page_step, line_height(line_font) + page_step - line_height(font))
    label = "\n".join([*menu, *(text for text, _, _ in page)])
    return SyntheticImage(image, "ocr", [font_tag, "size:small", "bg:dark"], text=label)


MAKERS: dict[str, Callable[[random.Random, Corpus, list[FontFile]], SyntheticImage]] = {
    "line": make_line, "lines": make_lines, "ui": make_ui, "table": make_table,
    "columns": make_columns, "scroll": make_scroll, "panels": make_panels,
}


# ------------------------------------------------------------------------------------------------ drawing help


def pick_font(rng: random.Random, fonts: list[FontFile], size: int) -> tuple[ImageFont.FreeTypeFont, str]:
    """A random font at `size`, and its tag for the manifest."""
    font = rng.choice(fonts)
    return font.at_size(size), f"font:{font.name}"


def pick_style(rng: random.Random, dark_share: float = 0.1) -> Style:
    """Mostly dark ink on white; one in four on a light colour; `dark_share` light ink on a dark colour."""
    roll = rng.random()
    if roll < dark_share:
        return Style(_random_colour(rng, 15, 80), _random_colour(rng, 200, 255), "bg:dark")
    if roll < dark_share + 0.25:
        return Style(_random_colour(rng, 170, 250), _random_colour(rng, 0, 70), "bg:colour")
    return Style((255, 255, 255), (rng.randint(0, 60),) * 3, "bg:white")


def line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def size_tag(size: int) -> str:
    """Font size bucket: small text is where OCR fails first."""
    return "size:small" if size < 14 else "size:medium" if size < 23 else "size:large"


def text_units(text: str, language: str) -> list[str]:
    """Where text may be broken: after words (with their trailing space) in English, anywhere in Chinese."""
    return list(text) if language == "zh" else re.findall(r"\S+\s*", text)


def fit_text(text: str, font: ImageFont.FreeTypeFont, max_width: int, language: str) -> str:
    """The longest start of `text`, broken at a unit boundary, that fits in `max_width` (at least one unit)."""
    return wrap_text(text, font, max_width, language)[0]


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: int, language: str) -> list[str]:
    """Lines no wider than `max_width` (a unit wider than that gets a line of its own)."""
    lines, current = [], ""
    for unit in text_units(text, language):
        if current and font.getlength((current + unit).rstrip()) > max_width:
            lines.append(current.rstrip())
            current = ""
        current += unit
    return [*lines, current.rstrip()]


def draw_table(cells: list[list[str]], font: ImageFont.FreeTypeFont, numeric: list[bool], ruled: bool,
               padding: int, style: Style) -> Image.Image:
    """A table: shaded header, numbers right-aligned, a full grid (`ruled`) or horizontal rules only."""
    columns = range(len(cells[0]))
    widths = [max(round(font.getlength(row[column])) for row in cells) + 2 * padding for column in columns]
    row_height = line_height(font) + 2 * padding
    margin = padding + 8
    lefts = [margin + sum(widths[:column]) for column in range(len(widths) + 1)]
    tops = [margin + row * row_height for row in range(len(cells) + 1)]
    image = Image.new("RGB", (lefts[-1] + margin, tops[-1] + margin), style.background)
    draw = ImageDraw.Draw(image)
    draw.rectangle([lefts[0], tops[0], lefts[-1], tops[1]], fill=tuple(round(c * 0.85) for c in style.background))
    rules = tops if ruled else [tops[0], tops[1], tops[-1]]
    for y in rules:
        draw.line([(lefts[0], y), (lefts[-1], y)], fill=style.ink, width=1)
    for x in lefts if ruled else []:
        draw.line([(x, tops[0]), (x, tops[-1])], fill=style.ink, width=1)
    for row_index, row in enumerate(cells):
        for column, text in enumerate(row):
            right_aligned = numeric[column] and row_index > 0
            text_x = lefts[column + 1] - padding - font.getlength(text) if right_aligned else lefts[column] + padding
            draw.text((text_x, tops[row_index] + padding), text, font=font, fill=style.ink)
    return image


def _paragraph_lines(rng: random.Random, corpus: Corpus, font: ImageFont.FreeTypeFont, width: int,
                     count: int) -> list[str]:
    """Up to `count` lines of consecutive corpus sentences wrapped at `width`."""
    start = rng.randrange(len(corpus.sentences))
    joiner = "" if corpus.language == "zh" else " "
    text = joiner.join(corpus.sentences[start:start + count])
    return wrap_text(text, font, width, corpus.language)[:count]


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], font: ImageFont.FreeTypeFont, origin: tuple[int, int],
                step: int, ink: Colour) -> None:
    for index, line in enumerate(lines):
        draw.text((origin[0], origin[1] + index * step), line, font=font, fill=ink)


def _fit_row(texts: list[str], font: ImageFont.FreeTypeFont, width: int, gap: int, language: str) -> list[str]:
    """Drop texts from the end of a window row until it fits; a lone text too long is shortened."""
    while len(texts) > 1 and sum(font.getlength(text) for text in texts) + gap * (len(texts) - 1) > width:
        texts = texts[:-1]
    return [fit_text(texts[0], font, width, language), *texts[1:]]


def _draw_row(draw: ImageDraw.ImageDraw, texts: list[str], font: ImageFont.FreeTypeFont, origin: tuple[int, int],
              gap: int, ink: Colour, buttons: bool) -> None:
    x: float  # moves by text widths, which are fractional
    x, y = origin
    for text in texts:
        text_width = font.getlength(text)
        if buttons:
            box = [x - gap // 4, y - gap // 6, x + text_width + gap // 4, y + line_height(font) + gap // 6]
            draw.rounded_rectangle(box, radius=4, outline=ink, width=1)
        draw.text((x, y), text, font=font, fill=ink)
        x += text_width + gap


def _sentence_span(rng: random.Random, corpus: Corpus) -> str:
    """A whole sentence (three times in five), else a run of 3-12 of its words (4-20 characters in Chinese)."""
    sentence = rng.choice(corpus.sentences)
    if rng.random() < 0.6:
        return sentence
    units = text_units(sentence, corpus.language)
    shortest, longest = (4, 20) if corpus.language == "zh" else (3, 12)
    start = rng.randrange(max(1, len(units) - shortest))
    return "".join(units[start:start + rng.randint(shortest, longest)]).strip()


def _cell(rng: random.Random, corpus: Corpus, column: str) -> str:
    kind = corpus.number_columns.get(column)
    if kind is None:
        return rng.choice(corpus.text_columns[column])
    if kind == "count":
        return str(rng.randint(1, 500))
    if kind == "money":
        return f"{rng.uniform(0.5, 5000):,.2f}"
    if kind == "date":
        return f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return f"{rng.choice('+-')}{rng.uniform(0, 20):.1f}%"  # percent


def _random_colour(rng: random.Random, low: int, high: int) -> Colour:
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def _all_text(corpus: Corpus) -> str:
    words = [word for column in corpus.text_columns.values() for word in column]
    return "".join([*corpus.sentences, *corpus.ui_texts, *words, *corpus.text_columns, *corpus.number_columns])


# -------------------------------------------------------------------------------------------------- the folder


def _check_options(n: int, languages: Sequence[str], kinds: Sequence[str]) -> None:
    if n < 1:
        raise EdgevlError(f"--n must be at least 1 (got {n})")
    for chosen, known, what in ((languages, LANGUAGES, "language"), (kinds, tuple(KIND_WEIGHTS), "image kind")):
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            raise EdgevlError(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")


def _prepare_output(out: Path, overwrite: bool) -> None:
    """An empty `out/images`; an existing set is only replaced with `overwrite` (--force)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EdgevlError(f"{out} is not empty; choose another folder or pass --force to replace it")
        if not (out / MANIFEST_NAME).is_file() and not (out / "images").is_dir():
            raise EdgevlError(f"{out} holds files that are not a synthetic set; refusing to replace it")
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(out / "images", ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)


def _write_manifest(out: Path, rows: list[dict]) -> Path:
    """Written to a temporary name and renamed, so the manifest is complete or absent."""
    path = out / MANIFEST_NAME
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    return path
