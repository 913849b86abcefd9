"""The texts synthetic images are made of: sentences, UI strings and table vocabularies per language.

They ship inside the package (edgevl/eval/corpus/), written for edgevl: everyday sentences with numbers, dates,
prices and punctuation, the labels of a typical application window, and table columns.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib.resources import files

from edgevl.errors import EdgevlError

LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Corpus:
    language: str
    sentences: tuple[str, ...]
    ui_texts: tuple[str, ...]
    #: column name -> the words its cells are drawn from
    text_columns: dict[str, tuple[str, ...]]
    #: column name -> kind of number in its cells ("count", "money", "date", "percent")
    number_columns: dict[str, str]


@functools.cache
def load_corpus(language: str) -> Corpus:
    if language not in LANGUAGES:
        raise EdgevlError(f"no corpus for language {language!r}; choose from {', '.join(LANGUAGES)}")
    folder = files("edgevl.eval") / "corpus"
    tables = json.loads((folder / "tables.json").read_text(encoding="utf-8"))[language]
    return Corpus(
        language=language,
        sentences=_lines(folder / f"{language}.txt"),
        ui_texts=_lines(folder / f"ui_{language}.txt"),
        text_columns={name: tuple(words) for name, words in tables["text_columns"].items()},
        number_columns=tables["number_columns"],
    )


def _lines(resource) -> tuple[str, ...]:
    return tuple(line.strip() for line in resource.read_text(encoding="utf-8").splitlines() if line.strip())
