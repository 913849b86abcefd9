"""Text accuracy: character error rate with its substitution/deletion/insertion counts, word error rate,
normalised edit distance and exact match, after an explicit normalisation of both texts.

Per sample, `score_text` counts the edits; `TextTotals` adds samples up. CER and WER are *micro* averages
(all errors over all reference characters), the usual way to report them, so long texts weigh more than short
ones; NED and exact match are averages over samples.

Words: whitespace-separated runs, except that every CJK character is a word of its own (Chinese has no spaces
between words, so counting a whole sentence as one word would make WER meaningless).
"""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from edgevl.layout import is_cjk
from edgevl.errors import EdgevlError

WHITESPACE_MODES = ("collapse", "remove", "keep")


@dataclass(frozen=True)
class Normalization:
    """How texts are made comparable before scoring. The defaults suit screenshots and mixed Chinese/English.

    - `nfkc`: Unicode NFKC, so full-width forms equal their ASCII twins ("，" = ",", "１" = "1") and ligatures
      split;
    - `whitespace`: "collapse" turns every run of spaces and line breaks into one space and removes the spaces
      next to CJK characters (optional in Chinese typesetting); "remove" deletes all whitespace; "keep" keeps it;
    - `ignore_case`: compare case-folded text.
    """

    nfkc: bool = True
    whitespace: str = "collapse"
    ignore_case: bool = False

    def __post_init__(self) -> None:
        if self.whitespace not in WHITESPACE_MODES:
            raise EdgevlError(f"unknown whitespace mode {self.whitespace!r}; "
                              f"choose one of {', '.join(WHITESPACE_MODES)}")

    def apply(self, text: str) -> str:
        if self.nfkc:
            text = unicodedata.normalize("NFKC", text)
        if self.ignore_case:
            text = text.casefold()
        if self.whitespace == "collapse":
            text = _remove_spaces_beside_cjk(" ".join(text.split()))
        elif self.whitespace == "remove":
            text = "".join(text.split())
        return text

    def describe(self) -> str:
        parts = ["NFKC" if self.nfkc else "no NFKC", f"whitespace {self.whitespace}"]
        return ", ".join(parts + (["case ignored"] if self.ignore_case else []))


@dataclass
class TextScore:
    """Edit counts of one prediction against its reference (both normalised)."""

    reference_chars: int = 0
    substitutions: int = 0
    deletions: int = 0  # reference characters the prediction lacks
    insertions: int = 0  # extra characters in the prediction
    reference_words: int = 0
    word_errors: int = 0
    ned: float = 0.0  # edit distance / length of the longer text, 0 (same) to 1
    exact: bool = True

    @property
    def char_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def cer(self) -> float:
        """This sample's CER; an empty reference counts each predicted character as an error."""
        return self.char_errors / max(self.reference_chars, 1)


def score_text(reference: str, prediction: str, normalization: Normalization = Normalization()) -> TextScore:
    reference, prediction = normalization.apply(reference), normalization.apply(prediction)
    operations = [operation.tag for operation in Levenshtein.editops(reference, prediction)]
    reference_words, predicted_words = words(reference), words(prediction)
    return TextScore(
        reference_chars=len(reference),
        substitutions=operations.count("replace"),
        deletions=operations.count("delete"),
        insertions=operations.count("insert"),
        reference_words=len(reference_words),
        word_errors=Levenshtein.distance(reference_words, predicted_words),
        ned=Levenshtein.normalized_distance(reference, prediction),
        exact=reference == prediction,
    )


@dataclass
class TextTotals:
    """Scores of many samples added up."""

    samples: int = 0
    reference_chars: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0
    word_errors: int = 0
    ned_sum: float = 0.0
    exact_matches: int = 0

    @classmethod
    def of(cls, scores: list[TextScore]) -> TextTotals:
        return cls(
            samples=len(scores),
            reference_chars=sum(score.reference_chars for score in scores),
            substitutions=sum(score.substitutions for score in scores),
            deletions=sum(score.deletions for score in scores),
            insertions=sum(score.insertions for score in scores),
            reference_words=sum(score.reference_words for score in scores),
            word_errors=sum(score.word_errors for score in scores),
            ned_sum=sum(score.ned for score in scores),
            exact_matches=sum(score.exact for score in scores),
        )

    @property
    def cer(self) -> float:
        return (self.substitutions + self.deletions + self.insertions) / max(self.reference_chars, 1)

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.reference_words, 1)

    @property
    def ned(self) -> float:
        return self.ned_sum / max(self.samples, 1)

    @property
    def exact_match(self) -> float:
        return self.exact_matches / max(self.samples, 1)


def words(text: str) -> list[str]:
    """Whitespace-separated words, with each CJK character a word of its own."""
    tokens: list[str] = []
    for word in text.split():
        for cjk, run in itertools.groupby(word, key=is_cjk):
            if cjk:
                tokens.extend(run)
            else:
                tokens.append("".join(run))
    return tokens


def _remove_spaces_beside_cjk(text: str) -> str:
    """"你好 世界" -> "你好世界", "Windows 系统" -> "Windows系统"; `text` has single spaces and no outer ones."""
    return "".join(
        char for index, char in enumerate(text)
        if char != " " or not (is_cjk(text[index - 1]) or is_cjk(text[index + 1]))
    )

