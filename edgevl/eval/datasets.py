"""Labelled image sets: what `edgevl eval run` reads.

Three layouts are recognised, in this order:
1. a JSONL manifest (`manifest.jsonl`, or the folder's only `*.jsonl`, or a `.jsonl` file given directly): one
   object per line with `image` (relative to the manifest), `text` (a string; a list of strings means several
   references, for captions), `html` (a table) or `json` (the expected fields, for extraction, with an optional
   `schema`: a built-in schema name or a schema file relative to the manifest; without one, the fields of a flat
   `json` object are extracted as strings), and optional `task` ("ocr", "table", "caption", "extract"), `tags`,
   `id`;
2. side files: `NAME.png` with `NAME.gt.txt` (OCR text) or `NAME.gt.html` (a table) beside it;
3. ICDAR-style box files: `gt_NAME.txt` anywhere in the folder, one box per line (`x1,y1,...,x4,y4,text` as in
   ICDAR 2015, or `left,top,right,bottom,"text"` as in ICDAR 2013; `###` marks unreadable text and is left out).
   The reference is the words grouped into lines, top to bottom, left to right.

A manifest row's task is its `task`, else "table" for `html`, "extract" for `json` and "ocr" for `text`. Side files
and box files say nothing about the task: theirs is the `--task` given (so a folder of `.gt.txt` captions can be
scored), else "table" for `.gt.html` and "ocr" otherwise. `--task` then keeps only the samples of that task. Every
problem (a bad line, a missing image, a duplicate id) is reported with where it is, before anything runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevl.errors import EdgevlError
from edgevl.images import IMAGE_EXTENSIONS
from edgevl.tasks.extract import builtin_schemas
from edgevl.tasks.tables import parse_tables

MANIFEST_NAME = "manifest.jsonl"
TASKS = ("ocr", "table", "caption", "extract")


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    task: str
    #: OCR text, table (HTML, or Markdown), or several captions; OCR and tables use the first
    references: tuple[str, ...]
    tags: tuple[str, ...] = ()
    #: extract: the schema (a built-in name or a file path); None: the expected object's fields as strings
    schema: str | None = None

    @property
    def reference(self) -> str:
        return self.references[0]

    @property
    def expected(self) -> Any:
        """extract: the expected JSON value."""
        return json.loads(self.reference)


def load_dataset(path: str | Path, task: str | None = None) -> list[Sample]:
    """The samples of a dataset folder (or manifest file); with `task`, only the samples of that task."""
    if task is not None and task not in TASKS:
        raise EdgevlError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    path = Path(path).expanduser()
    samples = _read_layout(path, task)
    if not samples:
        raise EdgevlError(
            f"{path}: no labelled images found (expected {MANIFEST_NAME}, IMAGE.gt.txt side files "
            "or ICDAR gt_IMAGE.txt box files)"
        )
    _check_samples(samples)
    selected = [sample for sample in samples if task is None or sample.task == task]
    if not selected:
        raise EdgevlError(f"{path}: none of its {len(samples)} samples is a {task} sample")
    return selected


def _read_layout(path: Path, task: str | None) -> list[Sample]:
    if path.is_file():
        return read_manifest(path)
    if not path.is_dir():
        raise EdgevlError(f"{path}: no such dataset folder")
    manifests = [path / MANIFEST_NAME] if (path / MANIFEST_NAME).is_file() else sorted(path.glob("*.jsonl"))
    if len(manifests) > 1:
        names = ", ".join(manifest.name for manifest in manifests)
        raise EdgevlError(f"{path}: several manifests ({names}); pass the one to use instead of the folder")
    if manifests:
        return read_manifest(manifests[0])
    return read_side_files(path, task) or read_icdar(path, task)


# ------------------------------------------------------------------------------------------------- manifests


def read_manifest(path: Path) -> list[Sample]:
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(_manifest_sample(json.loads(line), path.parent))
        except (ValueError, TypeError) as error:
            raise EdgevlError(f"{path}:{number}: {error}") from None
    return samples


def _manifest_sample(row: Any, root: Path) -> Sample:
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    image, text, html = row.get("image"), row.get("text"), row.get("html")
    if not isinstance(image, str) or not image:
        raise ValueError('no "image" (the image path, relative to the manifest)')
    if [text, html, row.get("json")].count(None) != 2:
        raise ValueError('give either "text", "html" or "json" as the reference, one of them')
    if "json" in row:
        return _extract_sample(row, image, root)
    references = (text,) if isinstance(text, str) else tuple(text) if isinstance(text, list) else (html,)
    if not references or not all(isinstance(reference, str) for reference in references):
        raise ValueError('"text" must be a string or a list of strings, "html" a string')
    sample_task = row.get("task") or ("table" if html is not None else "ocr")
    if sample_task not in TASKS:
        raise ValueError(f"unknown task {sample_task!r}; choose from {', '.join(TASKS)}")
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError('"tags" must be a list of strings')
    return Sample(str(row.get("id", image)), root / image, sample_task, references, tuple(tags))


def _extract_sample(row: dict[str, Any], image: str, root: Path) -> Sample:
    expected, schema = row["json"], row.get("schema")
    if row.get("task", "extract") != "extract":
        raise ValueError('a "json" reference is for the extract task')
    if schema is None and not (isinstance(expected, dict) and expected
                               and all(not isinstance(value, (dict, list)) for value in expected.values())):
        raise ValueError('an extract sample needs a "schema" unless its "json" is a flat object of fields')
    if schema is not None and not isinstance(schema, str):
        raise ValueError('"schema" must be a built-in schema name or a schema file relative to the manifest')
    if schema is not None and (root / schema).is_file():
        schema = str(root / schema)
    elif schema is not None and schema not in builtin_schemas():
        raise ValueError(f'"schema" {schema!r} is neither a file beside the manifest nor a built-in schema '
                         f'({", ".join(builtin_schemas())})')
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError('"tags" must be a list of strings')
    return Sample(str(row.get("id", image)), root / image, "extract", (json.dumps(expected, ensure_ascii=False),),
                  tuple(tags), schema)


# ------------------------------------------------------------------------------------------------ side files


def read_side_files(folder: Path, task: str | None = None) -> list[Sample]:
    """`NAME.gt.txt` (OCR) or `NAME.gt.html` (table) beside `NAME.png`; images without one are not samples."""
    samples = []
    for image in _images(folder):
        for suffix, default_task in ((".gt.txt", "ocr"), (".gt.html", "table")):
            label = image.with_name(image.stem + suffix)
            if label.is_file():
                text = label.read_text(encoding="utf-8").strip("\n")
                samples.append(Sample(str(image.relative_to(folder)), image, task or default_task, (text,)))
                break
    return samples


# --------------------------------------------------------------------------------------------------- ICDAR


def read_icdar(folder: Path, task: str | None = None) -> list[Sample]:
    """ICDAR 2013/2015-style `gt_NAME.txt` box files, matched to `NAME.*` images anywhere in the folder."""
    images = {image.stem: image for image in _images(folder)}
    samples = []
    for box_file in sorted(folder.rglob("gt_*.txt")):
        image = images.get(box_file.stem.removeprefix("gt_"))
        if image is None:
            raise EdgevlError(f"{box_file}: no image {box_file.stem.removeprefix('gt_')}.* in {folder}")
        boxes = [_icdar_box(line, box_file, number)
                 for number, line in enumerate(box_file.read_text(encoding="utf-8-sig").splitlines(), start=1)
                 if line.strip()]
        text = boxes_to_text([box for box in boxes if box[4] != "###"])
        samples.append(Sample(str(image.relative_to(folder)), image, task or "ocr", (text,)))
    return samples


Box = tuple[float, float, float, float, str]  # left, top, right, bottom, text


def _icdar_box(line: str, path: Path, number: int) -> Box:
    """`x1,y1,x2,y2,x3,y3,x4,y4,text` or `left,top,right,bottom,"text"` (the text may contain commas)."""
    fields = line.split(",")
    count = 8 if len(fields) >= 9 and all(_is_number(field) for field in fields[:8]) else 4
    if len(fields) <= count or not all(_is_number(field) for field in fields[:count]):
        raise EdgevlError(f"{path}:{number}: expected {count} coordinates and a text, got {line!r}")
    numbers = [float(field) for field in fields[:count]]
    xs, ys = numbers[0::2], numbers[1::2]
    text = ",".join(fields[count:]).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return min(xs), min(ys), max(xs), max(ys), text


def boxes_to_text(boxes: list[Box]) -> str:
    """Word boxes as text: a box whose vertical centre falls inside a line's extent joins that line."""
    lines: list[list[Box]] = []
    for box in sorted(boxes, key=lambda box: (box[1], box[0])):
        centre = (box[1] + box[3]) / 2
        line = next((line for line in lines if min(b[1] for b in line) <= centre <= max(b[3] for b in line)), None)
        if line is None:
            lines.append([box])
        else:
            line.append(box)
    return "\n".join(" ".join(box[4] for box in sorted(line)) for line in lines)


def _is_number(text: str) -> bool:
    return re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", text) is not None


# ------------------------------------------------------------------------------------------------- checks


def _images(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())


def _check_samples(samples: list[Sample]) -> None:
    missing = [str(sample.image) for sample in samples if not sample.image.is_file()]
    if missing:
        raise EdgevlError(f"{len(missing)} image(s) of the dataset are missing: {', '.join(missing[:3])}"
                          + (", ..." if len(missing) > 3 else ""))
    no_table = [sample.id for sample in samples if sample.task == "table" and not parse_tables(sample.reference)]
    if no_table:
        raise EdgevlError(f"the reference of table sample {no_table[0]!r} holds no table (HTML or Markdown)")
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise EdgevlError(f"sample id {sample.id!r} appears twice in the dataset; ids must be unique")
        seen.add(sample.id)
