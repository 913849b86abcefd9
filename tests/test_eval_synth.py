"""The synthetic set generator: deterministic, labelled, with clear errors for bad options and missing fonts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import require_eval_extra

from edgevl.errors import EdgevlError
from edgevl.eval.corpus import LANGUAGES, load_corpus
from edgevl.eval.datasets import load_dataset
from edgevl.tasks.tables import parse_tables

require_eval_extra()

from edgevl.eval.fonts import KNOWN_FONTS, FontFile, fonts_for  # noqa: E402
from edgevl.eval.synth import KIND_WEIGHTS, generate, kind_schedule  # noqa: E402

needs_cjk_font = pytest.mark.skipif(
    not any(font.cjk and font.path.is_file() for font in KNOWN_FONTS),
    reason="no CJK font installed (apt-get install fonts-noto-cjk; .ci/run does)",
)


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


@needs_cjk_font
def test_same_seed_same_set_and_a_smaller_set_is_a_prefix(tmp_path):
    generate(tmp_path / "a", 10, seed=3)
    generate(tmp_path / "b", 10, seed=3)
    generate(tmp_path / "small", 4, seed=3)
    generate(tmp_path / "other", 10, seed=4)
    assert rows(tmp_path / "a") == rows(tmp_path / "b") and rows(tmp_path / "small") == rows(tmp_path / "a")[:4]
    for row in rows(tmp_path / "a"):
        assert (tmp_path / "a" / row["image"]).read_bytes() == (tmp_path / "b" / row["image"]).read_bytes()
    assert rows(tmp_path / "other") != rows(tmp_path / "a")


@needs_cjk_font
def test_every_kind_is_labelled_and_readable_as_a_dataset(tmp_path):
    generate(tmp_path, 20, languages=["zh", "en"], seed=0)
    manifest = rows(tmp_path)
    kinds = Counter(tag for row in manifest for tag in row["tags"] if tag.startswith("kind:"))
    assert kinds == {"kind:line": 8, "kind:lines": 5, "kind:ui": 4, "kind:table": 3}
    assert {tag for row in manifest for tag in row["tags"] if tag.startswith("lang:")} == {"lang:zh", "lang:en"}
    for row in manifest:
        if row["task"] == "table":
            assert parse_tables(row["html"])[0].rows
        else:
            assert row["text"].strip() and ("\n" in row["text"]) == ("kind:line" not in row["tags"])
    assert len(load_dataset(tmp_path)) == 20


def test_kind_schedule_spreads_kinds_by_weight():
    schedule = kind_schedule(KIND_WEIGHTS)
    assert Counter(schedule) == KIND_WEIGHTS and schedule[:4] == ["line", "lines", "ui", "table"]
    assert kind_schedule({"table": 1}) == ["table"]


def test_english_only_set_works_with_latin_fonts(tmp_path):
    if not Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file():
        pytest.skip("no DejaVu fonts (apt-get install fonts-dejavu-core)")
    generate(tmp_path, 3, languages=["en"], kinds=["line"])
    assert all(row["tags"][0] == "lang:en" for row in rows(tmp_path))


def test_corpora_are_long_and_drawable():
    for language in LANGUAGES:
        corpus = load_corpus(language)
        assert len(corpus.sentences) >= 250 and len(set(corpus.sentences)) == len(corpus.sentences)
        assert len(corpus.ui_texts) >= 60 and corpus.text_columns and corpus.number_columns
    with pytest.raises(EdgevlError, match="no corpus"):
        load_corpus("fr")


def test_missing_fonts_are_a_clear_error(tmp_path):
    nowhere = (FontFile("Gone CJK", tmp_path / "gone.ttc", 2, cjk=True), FontFile("Gone", tmp_path / "gone.ttf"))
    with pytest.raises(EdgevlError, match="no Chinese .CJK. font found.*fonts-noto-cjk"):
        fonts_for("zh", "中文", known=nowhere)
    with pytest.raises(EdgevlError, match="no Latin font found"):
        fonts_for("en", "abc", known=nowhere)


def test_bad_options_and_existing_output(tmp_path):
    for options, message in (({"n": 0}, "at least 1"), ({"languages": ["fr"]}, "unknown language fr"),
                             ({"kinds": ["video"]}, "unknown image kind video")):
        with pytest.raises(EdgevlError, match=message):
            generate(tmp_path / "set", **{"n": 2, **options})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(EdgevlError, match="not empty"):
        generate(tmp_path / "notes", 1, languages=["en"])
    with pytest.raises(EdgevlError, match="not a synthetic set"):
        generate(tmp_path / "notes", 1, languages=["en"], overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
