"""Evaluation metrics against hand-computed cases: CER with S/D/I, WER, NED, exact match, TEDS, captions."""

from __future__ import annotations

import math

import pytest
from conftest import require_eval_extra

from edgevl.errors import EdgevlError

require_eval_extra()

from edgevl.eval.captions import bleu4, cider_d, rouge_l, score_captions, tokenize  # noqa: E402
from edgevl.eval.metrics import Normalization, TextTotals, score_text, words  # noqa: E402
from edgevl.eval.teds import canonical_table, score_table  # noqa: E402

TABLE = "<table><thead><tr><th>A</th><th>B</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>"


def test_normalization_options():
    assert Normalization().apply("Ｔｏｔａｌ：１２，\n  ok ") == "Total:12, ok"  # NFKC, whitespace collapsed
    assert Normalization().apply("你好 世界，Windows 系统") == "你好世界,Windows系统"  # no spaces beside CJK
    assert Normalization(whitespace="remove").apply("a b\tc\nd") == "abcd"
    assert Normalization(whitespace="keep", nfkc=False).apply("Ａ  b\n") == "Ａ  b\n"
    assert Normalization(ignore_case=True).apply("Straße ABC") == "strasse abc"
    with pytest.raises(EdgevlError, match="whitespace mode"):
        Normalization(whitespace="squash")


def test_cer_counts_substitutions_deletions_insertions():
    # kitten -> sitting: k->s and e->i substituted, g inserted: 3 edits over 6 reference characters
    score = score_text("kitten", "sitting")
    assert (score.substitutions, score.deletions, score.insertions) == (2, 0, 1)
    assert score.cer == pytest.approx(3 / 6) and score.ned == pytest.approx(3 / 7) and not score.exact
    deleted = score_text("abcdef", "abdf")  # c and e missing
    counts = (deleted.substitutions, deleted.deletions, deleted.insertions)
    assert counts == (0, 2, 0) and deleted.cer == pytest.approx(2 / 6)
    assert score_text("", "abc").cer == 3  # nothing to read, three characters invented
    assert score_text("Ｏｋ", "Ok").exact  # equal after NFKC


def test_wer_counts_words_and_each_cjk_character():
    assert score_text("the cat sat", "the cat sit down").word_errors == 2  # sat->sit, down inserted
    assert words("我爱 Python3 编程!") == ["我", "爱", "Python3", "编", "程", "!"]
    chinese = score_text("今天天气很好", "今天天气不好")
    assert (chinese.reference_words, chinese.word_errors) == (6, 1)


def test_totals_are_micro_averages_and_sample_means():
    totals = TextTotals.of([score_text("ab", "ab"), score_text("abcd", "")])
    assert totals.cer == pytest.approx(4 / 6)  # all errors over all reference characters
    assert totals.ned == pytest.approx(0.5) and totals.exact_match == pytest.approx(0.5)
    assert totals.deletions == 4 and totals.samples == 2
    assert TextTotals.of([]).cer == 0


def test_teds_reads_html_and_markdown_alike():
    assert score_table(TABLE, TABLE).teds == 1.0
    markdown = "| A | B |\n|---|---|\n| 1 | 2 |"
    assert score_table(TABLE, markdown).teds == 1.0  # header markup is not compared, only cells
    # 7 nodes (table, 2 rows, 4 cells); one cell's single character wrong costs 1
    changed = score_table(TABLE, "| A | B |\n|---|---|\n| 1 | 3 |")
    assert changed.teds == pytest.approx(1 - 1 / 7) and changed.teds_structure == 1.0
    # an extra column: 2 inserted cells over the prediction's 9 nodes
    assert score_table(TABLE, "| A | B | C |\n|---|---|---|\n| 1 | 2 | 3 |").teds == pytest.approx(1 - 2 / 9)
    assert score_table(TABLE, "I see no table.").teds == 0.0


def test_teds_keeps_spans_and_normalises_cell_text():
    spanned = '<table><tr><td colspan="2">Ｘ</td></tr><tr><td>a</td><td>b</td></tr></table>'
    assert canonical_table(spanned) == ('<html><body><table><tr><td colspan="2">X</td></tr>'
                                        "<tr><td>a</td><td>b</td></tr></table></body></html>")
    repeated = "| X | X |\n|---|---|\n| a | b |"  # what a Markdown answer can say about a merged cell
    assert score_table(spanned, repeated).teds_structure < 1.0


def test_caption_tokens():
    assert tokenize("A Cat, sitting!") == ["a", "cat", "sitting"]
    assert tokenize("一只猫。") == ["一", "只", "猫"]


def test_bleu_with_brevity_penalty():
    reference = [[tokenize("the cat sat on the mat")]]
    assert bleu4(reference, [tokenize("the cat sat on the mat")]) == pytest.approx(1.0)
    # every n-gram of the 4-word hypothesis matches; brevity penalty exp(1 - 6/4)
    assert bleu4(reference, [tokenize("the cat sat on")]) == pytest.approx(math.exp(-0.5))
    assert bleu4(reference, [tokenize("dogs run")]) == 0.0


def test_rouge_l_f_measure():
    assert rouge_l([["a", "b", "c", "d"]], ["a", "c", "d", "e"]) == pytest.approx(0.75)  # LCS 3: P = R = 3/4
    # P = 1, R = 1/2, beta 1.2: (1 + 1.44) * 0.5 / (0.5 + 1.44)
    assert rouge_l([["a", "b", "c", "d"]], ["a", "b"]) == pytest.approx(1.22 / 1.94)
    assert rouge_l([["a"]], []) == 0.0


def test_cider_d():
    references = [[tokenize("a b c d e")], [tokenize("f g h i j")]]
    assert cider_d(references, [tokenize("a b c d e"), tokenize("f g h i j")]) == pytest.approx([10.0, 10.0])
    assert cider_d(references, [tokenize("x y z"), tokenize("f g h i j")])[0] == 0.0
    assert cider_d([[tokenize("a b c")]], [tokenize("a b c")]) == [0.0]  # one image: every idf is 0
    scores = score_captions([["a b c d e"], ["f g h i j"]], ["a b c d e", "f g h i j"])
    assert scores.cider == pytest.approx(10.0) and scores.bleu4 == pytest.approx(1.0) and scores.rouge_l == 1.0
