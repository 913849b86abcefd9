"""Rebuild the real development set from public repositories fetched to /work/.mirror: images stay out of git.

    python benchmarks/realset/build.py OUT [--mirror /work/.mirror]
    edgevl eval run OUT/manifest.jsonl -m default -m baseline:tesseract -o REPORT     # everything
    edgevl eval run OUT/screen.jsonl -m default -m baseline:rapidocr -m baseline:tesseract -o REPORT-screen
    edgevl eval run OUT/receipt-line.jsonl -m default -m baseline:rapidocr-rec -m baseline:tesseract -o ...
    edgevl eval run OUT/table.jsonl -m default -m baseline:rapidocr -o REPORT-table

(RapidOCR's default call scales a line crop up to 736 px high: minutes for the receipt lines, so the line crops are
compared with its recogniser alone, the plain way to read them.)

`sources.json` beside this script names each repository, the commit the set is read from, and what is taken.
Kinds (the `kind:` tag of each sample): `screen` (real UI screenshots), `receipt-line` (lines cropped from scanned
receipts), `table` (tables from scientific articles). The labels are read from the repositories at build time
(NormCap's test expectations, SROIE's box files, PubTabNet's annotations), never copied into this project.
SROIE's labels are in capitals: score the receipt lines with `--ignore-case`.

A second set from other repositories, never used to tune the engine, shows how it does on images it has not seen:

    python benchmarks/realset/build.py OUT2 --set heldout2
    edgevl eval run OUT2/screen.jsonl -m default -m baseline:tesseract -o REPORT2-screen
    edgevl eval run OUT2/table.jsonl -m default -m baseline:rapidocr -o REPORT2-table
    edgevl eval run OUT2/receipt-line.jsonl -m default -m baseline:rapidocr-rec -m baseline:tesseract \
        --whitespace remove --ignore-case -o REPORT2-receipt-line
    edgevl eval run OUT2/word.jsonl -m default -m baseline:rapidocr-rec -m baseline:tesseract -o REPORT2-word

Its kinds: `screen` (Text Grab's and tesseract.js's test images: fonts, a paragraph, a bank statement, a scanned
budget spreadsheet, Chinese), `table` (two spreadsheet screenshots), `receipt-line` (lines of photographed
WildReceipt receipts, labelled without spaces) and `word` (words cropped from scene photographs). Their labels
come from the projects' tests and data, with the corrections `sources.json` lists (`fixes`, checked by eye).
"""

from __future__ import annotations

import argparse
import ast
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from edgevl.images import to_rgb

SOURCES = Path(__file__).with_name("sources.json")


class Snapshot:
    """A fetched repository, read at one commit with `git show` (the mirror has no work tree)."""

    def __init__(self, mirror: Path, repo: str, commit: str) -> None:
        self.git_dir = mirror / repo.replace("/", "+") / "repo"
        self.commit = commit
        if not self.git_dir.is_dir():
            sys.exit(f"{repo} is not fetched: expected {self.git_dir}")

    def read(self, path: str) -> bytes:
        return subprocess.run(["git", "-C", str(self.git_dir), "show", f"{self.commit}:{path}"],
                              check=True, capture_output=True).stdout

    def names(self, folder: str) -> list[str]:
        listing = subprocess.run(["git", "-C", str(self.git_dir), "ls-tree", "--name-only", f"{self.commit}:{folder}"],
                                 check=True, capture_output=True, text=True).stdout
        return sorted(listing.split())

    def image(self, path: str) -> Image.Image:
        return to_rgb(Image.open(io.BytesIO(self.read(path))))  # transparent test images are drawn on white


def build_screens(source: dict, snapshot: Snapshot) -> list[dict]:
    rows = []
    for labels in source["labels"]:
        folder = labels.rsplit("/", 1)[0]
        for name, text in _expected_texts(snapshot.read(labels).decode()):
            if any(name.startswith(prefix) for prefix in source["skip"]):
                continue
            language = "zh" if "chi" in name else "ja" if "jpn" in name else "en"
            rows.append({"id": f"screen/{name}", "image": snapshot.image(f"{folder}/{name}"), "task": "ocr",
                         "text": text, "tags": ["kind:screen", f"lang:{language}"]})
    return rows


def _expected_texts(source: str) -> list[tuple[str, str]]:
    """(image file name, expected text) of each test case in a NormCap test-data module.

    The module is parsed, never run: the expected texts are string literals put together with `+`, f-strings and
    `str.join`, with `os.linesep` read as a line break.
    """
    found = []
    for call in ast.walk(ast.parse(source)):
        if not isinstance(call, ast.Call):
            continue
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        text = keywords.get("expected_text") or keywords.get("transformed")
        path = keywords.get("image_path")
        if text is None or not isinstance(path, ast.BinOp) or not isinstance(path.right, ast.Constant):
            continue
        found.append((str(path.right.value), _string_value(text)))
    return found


def _string_value(node: ast.expr) -> str:
    """The value of a string expression made of literals, `+`, f-strings, `SEP.join([...])` and `os.linesep`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _string_value(node.left) + _string_value(node.right)
    if isinstance(node, ast.JoinedStr):
        return "".join(_string_value(part.value if isinstance(part, ast.FormattedValue) else part)
                       for part in node.values)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
            and len(node.args) == 1 and isinstance(node.args[0], ast.List | ast.Tuple)):
        return _string_value(node.func.value).join(_string_value(item) for item in node.args[0].elts)
    if isinstance(node, ast.Attribute) and node.attr == "linesep" and getattr(node.value, "id", None) == "os":
        return "\n"
    raise ValueError(f"not a plain string expression: {ast.unparse(node)}")


def build_receipt_lines(source: dict, snapshot: Snapshot) -> list[dict]:
    rows = []
    names = snapshot.names(source["images"])[:: source["every"]][: source["receipts"]]
    for name in names:
        stem = name.rsplit(".", 1)[0]
        receipt = snapshot.image(f"{source['images']}/{name}")
        lines = snapshot.read(f"{source['boxes']}/{stem}.csv").decode("utf-8", "replace").splitlines()
        for number, line in enumerate(lines[: source["lines_per_receipt"]]):
            fields = line.split(",", 8)
            if len(fields) < 9 or not fields[8].strip():
                continue
            xs, ys = [int(value) for value in fields[0:8:2]], [int(value) for value in fields[1:8:2]]
            crop = receipt.crop((max(0, min(xs)), max(0, min(ys)), max(xs) + 1, max(ys) + 1))
            if crop.width < 4 or crop.height < 4:
                continue
            rows.append({"id": f"receipt-line/{stem}-{number:02d}", "image": crop, "task": "ocr",
                         "text": fields[8].strip(), "tags": ["kind:receipt-line", "lang:en"]})
    return rows


def build_tables(source: dict, snapshot: Snapshot) -> list[dict]:
    rows = []
    for line in snapshot.read(source["annotations"]).decode().splitlines():
        annotation = json.loads(line)
        rows.append({"id": f"table/{annotation['filename']}",
                     "image": snapshot.image(f"{source['images']}/{annotation['filename']}"),
                     "task": "table", "html": pubtabnet_html(annotation["html"]), "tags": ["kind:table", "lang:en"]})
    return rows


def pubtabnet_html(annotation: dict) -> str:
    """PubTabNet's structure tokens with each cell's content tokens put inside its cell."""
    cells = iter(annotation["cells"])
    parts = []
    for token in annotation["structure"]["tokens"]:
        parts.append(token)
        if token in ("<td>", ">"):  # "<td", ' colspan="2"', ">" for a spanning cell
            parts.append("".join(piece if piece.startswith("<") else html.escape(piece)
                                 for piece in next(cells)["tokens"]))
    return "<table>" + "".join(parts) + "</table>"


# ------------------------------------------------------------------------------------------ second set


def build_textgrab(source: dict, snapshot: Snapshot) -> list[dict]:
    """Text Grab's test images with the strings its C# tests expect; the spreadsheets also as HTML tables."""
    tests = snapshot.read(source["tests"]).decode()
    rows = []
    for path, name in source["screens"].items():
        rows.append({"id": f"screen/textgrab-{_stem(path)}", "image": snapshot.image(path), "task": "ocr",
                     "text": _csharp_string(tests, name), "tags": ["kind:screen", "lang:en", "src:textgrab"]})
    for path, name in source["tables"].items():
        cells = [line.split("\t") for line in _csharp_string(tests, name).replace("\r\n", "\n").split("\n")]
        rows.append({"id": f"table/textgrab-{_stem(path)}", "image": snapshot.image(path), "task": "table",
                     "html": _tsv_html(cells), "tags": ["kind:table", "lang:en", "src:textgrab"]})
    return rows


def _csharp_string(source: str, name: str) -> str:
    """The string literal assigned to `name` in C# source; "METHOD/VARIABLE" looks for VARIABLE after METHOD.

    Verbatim literals (@"...", quotes doubled) and regular ones with backslash escapes are both read.
    """
    method, _, variable = name.rpartition("/")
    start = source.index(method) if method else 0
    found = re.compile(rf"\b{re.escape(variable)}\s*=\s*(@?)\"((?:[^\"\\]|\"\"|\\.)*)\"").search(source, start)
    if found is None:
        raise ValueError(f"no string literal {name!r} in the C# tests")
    verbatim, body = found.groups()
    if verbatim:
        return body.replace('""', '"')
    return re.sub(r"\\(.)", lambda escape: _ESCAPES.get(escape.group(1), escape.group(1)), body)


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def _tsv_html(rows: list[list[str]]) -> str:
    """Rows of cells as an HTML table, the first row the header, short rows padded with empty cells."""
    width = max(map(len, rows))
    html_rows = ["<tr>" + "".join(f"<td>{html.escape(cell.strip(), quote=False)}</td>"
                                  for cell in row + [""] * (width - len(row))) + "</tr>" for row in rows]
    return f"<table><thead>{html_rows[0]}</thead><tbody>{''.join(html_rows[1:])}</tbody></table>"


def build_tesseractjs(source: dict, snapshot: Snapshot) -> list[dict]:
    """tesseract.js's test images with the texts its tests expect (`export const NAME = '...'`), with the
    corrections `fixes` lists."""
    constants = snapshot.read(source["constants"]).decode()
    rows = []
    for path, name in source["images"].items():
        found = re.search(rf"export const {name} = '((?:[^'\\]|\\.)*)';", constants)
        if found is None:
            raise ValueError(f"no constant {name} in {source['constants']}")
        text = re.sub(r"\\(.)", lambda escape: _ESCAPES.get(escape.group(1), escape.group(1)), found.group(1))
        for wrong, right in source.get("fixes", {}).get(name, []):
            if wrong not in text:
                raise ValueError(f"the fix {wrong!r} -> {right!r} no longer applies to {name}")
            text = text.replace(wrong, right)
        language = "zh" if "CHINESE" in name else "en"
        rows.append({"id": f"screen/tesseractjs-{_stem(path)}", "image": snapshot.image(path), "task": "ocr",
                     "text": text.strip(), "tags": ["kind:screen", f"lang:{language}", "src:tesseractjs"]})
    return rows


def build_wildreceipt(source: dict, snapshot: Snapshot) -> list[dict]:
    """Each labelled box of mmocr's WildReceipt samples cropped as a line (labels without spaces)."""
    rows = []
    for line in snapshot.read(source["annotations"]).decode().splitlines():
        receipt = json.loads(line)
        image = snapshot.image(receipt["file_name"])
        for number, annotation in enumerate(receipt["annotations"]):
            xs, ys = annotation["box"][0::2], annotation["box"][1::2]
            crop = image.crop((max(0, int(min(xs))), max(0, int(min(ys))), int(max(xs)) + 1, int(max(ys)) + 1))
            text = annotation["text"].strip()
            if not text or text == "###" or crop.width < 4 or crop.height < 4:
                continue
            rows.append({"id": f"receipt-line/wildreceipt-{_stem(receipt['file_name'])}-{number:02d}", "image": crop,
                         "task": "ocr", "text": text, "tags": ["kind:receipt-line", "lang:en", "src:wildreceipt"]})
    return rows


def build_words(source: dict, snapshot: Snapshot) -> list[dict]:
    """mmocr's cropped words of scene photographs, with the text its labels give."""
    labels = json.loads(snapshot.read(source["labels"]))
    return [{"id": f"word/mmocr-{_stem(entry['img_path'])}",
             "image": snapshot.image(f"{source['images']}/{entry['img_path']}"), "task": "ocr",
             "text": entry["instances"][0]["text"], "tags": ["kind:word", "lang:en", "src:mmocr"]}
            for entry in labels["data_list"]]


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0]


BUILDERS = {"screens": build_screens, "receipt_lines": build_receipt_lines, "tables": build_tables}
#: The second set (`--set heldout2`): other repositories, never used to tune the engine.
HELDOUT2_BUILDERS = {"textgrab": build_textgrab, "tesseractjs": build_tesseractjs, "wildreceipt": build_wildreceipt,
                     "words": build_words}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (images/ and manifest.jsonl)")
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"), help="where the snapshots are")
    parser.add_argument("--set", choices=("dev", "heldout2"), default="dev",
                        help="the development set, or the second set of other sources (default: dev)")
    args = parser.parse_args()
    sources = json.loads(SOURCES.read_text())
    builders = BUILDERS
    if args.set == "heldout2":
        sources, builders = sources["heldout2"], HELDOUT2_BUILDERS
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, build in builders.items():
        source = sources[name]
        for row in build(source, Snapshot(args.mirror, source["repo"], source["commit"])):
            image_name = "images/" + row["id"].replace("/", "__").rsplit(".", 1)[0] + ".png"
            row.pop("image").save(args.out / image_name)
            manifest.append({"image": image_name, **row})
    kinds: dict[str, list[dict]] = {}
    for row in manifest:
        kinds.setdefault(row["tags"][0].removeprefix("kind:"), []).append(row)
    for name, rows in [("manifest", manifest), *kinds.items()]:  # the whole set, and one manifest per kind
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{len(manifest)} samples in {args.out}: " + ", ".join(f"{kind} {len(rows)}" for kind, rows in kinds.items()))


if __name__ == "__main__":
    main()
