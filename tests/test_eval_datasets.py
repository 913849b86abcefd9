"""Reading labelled folders: JSONL manifests, .gt.txt/.gt.html side files, ICDAR box files, and their errors."""

from __future__ import annotations

import json

import pytest
from conftest import noise_image

from edgevl.errors import EdgevlError
from edgevl.eval.datasets import boxes_to_text, load_dataset

TABLE_HTML = "<table><tr><td>a</td><td>b</td></tr><tr><td>1</td><td>2</td></tr></table>"


def images(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        noise_image(16, 16).save(folder / name)


def manifest(folder, *rows, name="manifest.jsonl"):
    (folder / name).write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def test_manifest_with_every_kind_of_reference(tmp_path):
    images(tmp_path, "img/a.png", "b.png", "c.png")
    manifest(tmp_path,
             {"image": "img/a.png", "text": "hello", "tags": ["lang:en"]},
             {"image": "b.png", "html": TABLE_HTML},
             {"image": "c.png", "text": ["a cat", "a small cat"], "task": "caption", "id": "cat"})
    ocr, table, caption = load_dataset(tmp_path)
    assert (ocr.id, ocr.task, ocr.reference, ocr.tags) == ("img/a.png", "ocr", "hello", ("lang:en",))
    assert ocr.image == tmp_path / "img" / "a.png"
    assert (table.task, table.reference) == ("table", TABLE_HTML)
    assert (caption.id, caption.task, caption.references) == ("cat", "caption", ("a cat", "a small cat"))
    assert [sample.id for sample in load_dataset(tmp_path / "manifest.jsonl", task="table")] == ["b.png"]


@pytest.mark.parametrize("row, message", [
    ("{not json", r"manifest.jsonl:2: "),
    ({"text": "x"}, r":2: no \"image\""),
    ({"image": "a.png", "text": "x", "html": TABLE_HTML}, "either"),
    ({"image": "a.png"}, "either"),
    ({"image": "a.png", "text": "x", "task": "translate"}, "unknown task"),
    ({"image": "a.png", "text": 3}, "must be a string"),
    ({"image": "a.png", "text": "x", "tags": "en"}, "tags"),
    ({"image": "missing.png", "text": "x"}, "missing: .*missing.png"),
    ({"image": "a.png", "text": "again"}, "appears twice"),
    ({"image": "a.png", "html": "no table here", "id": "t"}, "holds no table"),
])
def test_manifest_errors_say_where(tmp_path, row, message):
    images(tmp_path, "a.png")
    manifest(tmp_path, {"image": "a.png", "text": "first"}, row)
    with pytest.raises(EdgevlError, match=message):
        load_dataset(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(EdgevlError, match="no such dataset folder"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(EdgevlError, match="no labelled images"):
        load_dataset(tmp_path)
    images(tmp_path, "a.png")
    manifest(tmp_path, {"image": "a.png", "text": "x"}, name="one.jsonl")
    manifest(tmp_path, {"image": "a.png", "text": "y"}, name="two.jsonl")
    with pytest.raises(EdgevlError, match="several manifests"):
        load_dataset(tmp_path)
    with pytest.raises(EdgevlError, match="none of its 1 samples is a table sample"):
        load_dataset(tmp_path / "one.jsonl", task="table")  # a manifest's text rows stay OCR samples


def test_side_files(tmp_path):
    images(tmp_path, "a.png", "sub/b.jpg", "unlabelled.png")
    (tmp_path / "a.gt.txt").write_text("line one\nline two\n")
    (tmp_path / "sub" / "b.gt.html").write_text(TABLE_HTML)
    first, second = load_dataset(tmp_path)
    assert (first.id, first.task, first.reference) == ("a.png", "ocr", "line one\nline two")
    assert (second.id, second.task) == ("sub/b.jpg", "table")
    assert [sample.task for sample in load_dataset(tmp_path, task="caption")] == ["caption", "caption"]


def test_icdar_box_files(tmp_path):
    images(tmp_path, "images/img_1.jpg", "images/img_2.jpg")
    (tmp_path / "gt").mkdir()
    # ICDAR 2015: four corners, then the text (which may hold commas); ### is unreadable text
    (tmp_path / "gt" / "gt_img_1.txt").write_text(
        "\ufeff100,10,160,10,160,30,100,30,World\n10,12,90,12,90,32,10,32,Hello,\n10,50,60,50,60,70,10,70,###\n"
        "10,80,90,80,90,100,10,100,bye\n", encoding="utf-8")
    # ICDAR 2013: left, top, right, bottom, "text"
    (tmp_path / "gt" / "gt_img_2.txt").write_text('5, 5, 50, 20, "Total"\n60, 6, 90, 19, "9.99"\n')
    first, second = load_dataset(tmp_path)
    assert (first.id, first.reference) == ("images/img_1.jpg", "Hello, World\nbye")
    assert second.reference == "Total 9.99"


def test_icdar_errors_name_the_line(tmp_path):
    images(tmp_path, "img_1.png")
    (tmp_path / "gt_img_1.txt").write_text("1,2,3,4,ok\n1,2,three,4,bad\n")
    with pytest.raises(EdgevlError, match=r"gt_img_1.txt:2: expected 4 coordinates"):
        load_dataset(tmp_path)
    (tmp_path / "gt_img_1.txt").unlink()
    (tmp_path / "gt_other.txt").write_text("1,2,3,4,x\n")
    with pytest.raises(EdgevlError, match="no image other"):
        load_dataset(tmp_path)


def test_boxes_group_into_lines_by_vertical_overlap():
    boxes = [(50, 0, 90, 20, "b"), (0, 2, 40, 22, "a"), (0, 30, 40, 50, "c")]
    assert boxes_to_text(boxes) == "a b\nc"
