"""Tasks: prompts per model family, request defaults and overrides, and cleaning up what models answer."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from PIL import Image

import edgevl.engines
import edgevl.tasks
from edgevl.errors import EdgevlError
from edgevl.request import Request, Sampling
from edgevl.tasks import TASKS, CaptionResult, OcrResult, Table, TableResult, get_task

IMAGE = Image.new("RGB", (32, 32), "white")


# ---------------------------------------------------------------------------------------------- requests


@pytest.mark.parametrize("family", ["qwen2vl", "minicpmv", "classic", "some-future-family"])
@pytest.mark.parametrize("name", ["ocr", "table", "caption"])
def test_every_family_gets_a_prompt(name: str, family: str) -> None:
    request = get_task(name).build_request([IMAGE], family)
    assert request.prompt.strip() and request.task == name


def test_prompts_are_worded_per_family_and_ask_for_the_right_thing() -> None:
    ocr, table = get_task("ocr"), get_task("table")
    assert ocr.prompt("qwen2vl") != ocr.prompt("minicpmv")
    assert "line breaks" in ocr.prompt("qwen2vl") and "only the text" in ocr.prompt("qwen2vl")
    for family in ("qwen2vl", "minicpmv"):
        assert "Markdown table" in table.prompt(family) and "same number of cells" in table.prompt(family)


def test_request_defaults_are_greedy_with_a_task_sized_budget() -> None:
    request = get_task("ocr").build_request([IMAGE, IMAGE], "qwen2vl")
    assert request == Request(
        task="ocr", images=(IMAGE, IMAGE), prompt=get_task("ocr").prompt("qwen2vl"), sampling=Sampling(max_tokens=2048)
    )
    assert get_task("table").build_request([IMAGE], "qwen2vl").sampling.max_tokens == 2048


def test_options_override_the_sampling_defaults() -> None:
    sampling = get_task("table").build_request([IMAGE], "qwen2vl", max_tokens=100, temperature=0.7).sampling
    assert (sampling.max_tokens, sampling.temperature) == (100, 0.7)


@pytest.mark.parametrize(
    ("length", "max_tokens", "words"),
    [("short", 64, "one sentence"), ("medium", 160, "two or three"), ("long", 400, "detailed paragraph")],
)
def test_caption_lengths(length: str, max_tokens: int, words: str) -> None:
    request = get_task("caption").build_request([IMAGE], "minicpmv", length=length)
    assert words in request.prompt and request.sampling.max_tokens == max_tokens


def test_caption_defaults_to_medium_and_rejects_unknown_lengths() -> None:
    assert get_task("caption").build_request([IMAGE], "qwen2vl").sampling.max_tokens == 160
    with pytest.raises(EdgevlError, match="short, medium, long"):
        get_task("caption").build_request([IMAGE], "qwen2vl", length="huge")


def test_ask_sends_the_question_itself_and_needs_one() -> None:
    request = get_task("ask").build_request([IMAGE], "qwen2vl", question="  What is the total? ")
    assert request.prompt == "What is the total?"
    with pytest.raises(EdgevlError, match="needs a question"):
        get_task("ask").build_request([IMAGE], "qwen2vl")


def test_misspelt_options_fail_loudly() -> None:
    with pytest.raises(TypeError):
        get_task("caption").build_request([IMAGE], "qwen2vl", lenght="short")
    with pytest.raises(TypeError):
        get_task("ocr").build_request([IMAGE], "qwen2vl", question="why?")


def test_unknown_task_names_the_known_ones() -> None:
    assert set(TASKS) == {"ocr", "table", "caption", "ask", "extract"}
    with pytest.raises(EdgevlError, match="ocr, table, caption, ask"):
        get_task("translate")


def imported_modules(package) -> dict[str, list[str]]:
    """File name -> the modules each file of the package imports."""
    found: dict[str, list[str]] = {}
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found.setdefault(path.name, []).append(node.module or "")
            elif isinstance(node, ast.Import):
                found.setdefault(path.name, []).extend(alias.name for alias in node.names)
    return found


def test_tasks_and_engines_do_not_import_each_other() -> None:
    for name, modules in imported_modules(edgevl.tasks).items():
        assert not [module for module in modules if module.startswith("edgevl.engines")], name
    for name, modules in imported_modules(edgevl.engines).items():
        assert not [module for module in modules if module.startswith("edgevl.tasks")], name


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "answer",
    [
        "Line one\nLine two",
        "Here is the text:\nLine one\nLine two",
        "Sure! Here's the text extracted from the image:\n\nLine one   \nLine two\n\n",
        "```\nLine one\nLine two\n```",
        "The text in the image reads:\n```text\nLine one\nLine two\n```",
    ],
)
def test_ocr_parse_strips_preambles_fences_and_trailing_spaces(answer: str) -> None:
    assert get_task("ocr").parse(answer) == OcrResult("Line one\nLine two")


def test_ocr_parse_keeps_text_that_only_looks_like_a_preamble() -> None:
    answer = "Here is the agenda:\n  1. Budget\n\n  2. Hiring"
    assert get_task("ocr").parse(answer).text == answer


def test_caption_and_answer_parse_strip_whitespace() -> None:
    assert get_task("caption").parse("  A cat on a mat.\n") == CaptionResult("A cat on a mat.")
    assert get_task("ask").parse("\n42\n").text == "42"


def test_text_results_render_as_text_or_json() -> None:
    result = OcrResult("naïve\ncafé")
    assert result.render() == result.render("text") == "naïve\ncafé"
    assert json.loads(result.render("json")) == {"text": "naïve\ncafé"}
    with pytest.raises(ValueError, match="text, json"):
        result.render("csv")


def test_table_parse_keeps_every_table_and_the_raw_answer() -> None:
    answer = "| A |\n|---|\n| 1 |\n\n| B |\n|---|\n| 2 |"
    result = get_task("table").parse(answer)
    assert result == TableResult(tables=[Table(["A"], [["1"]]), Table(["B"], [["2"]])], raw=answer)
    assert result.primary == Table(["A"], [["1"]])
    assert result.render("csv") == "A\n1\n\nB\n2"
    assert json.loads(result.render("json")) == [[{"A": "1"}], [{"B": "2"}]]


def test_table_result_of_one_table_renders_its_records() -> None:
    result = get_task("table").parse("<table><tr><th>A</th></tr><tr><td>1</td></tr></table>")
    assert json.loads(result.render("json")) == [{"A": "1"}]
    assert result.text == "| A   |\n| --- |\n| 1   |"


def test_table_result_without_a_table_shows_the_answer() -> None:
    result = get_task("table").parse("I see no table.")
    assert result.primary is None and result.text == result.render("md") == "I see no table."
    assert result.render("csv") == "" and result.render("json") == "[]"
