"""What the embedded engine costs against the library it wraps, called plainly, on the same images in the same run.

    .venv/bin/python benchmarks/bench_classic.py                 # drawn images, about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_classic.py --real SET      # also a labelled set (benchmarks/realset/build.py)

For each kind of image, each engine reads the images in a fresh process (model load, one unmeasured warm-up image,
then the measured ones), so each peak RSS is its own:
- **edgevl**: `ClassicOcrEngine` as an application calls it (`stream`), default layout;
- **plain**: RapidOCR's default call (recognition alone for line crops), rapid-table alone for tables - the
  baselines of `edgevl eval` (`edgevl/eval/baselines.py`).

Kinds drawn at run time: `line` (tight crops of one line), `screen` (application windows), `columns` (two-column
articles), `panels` (dark sidebar, light-grey and small text), `table`, `long` (a 1200x9000 scrolling page).
Also printed: the layout work alone (reading order and paragraphs, `edgevl.layout.arrange`) against the plain call;
the 1200x9000 page read whole against its tiles read one by one with the same reader; and `edgevl ocr`'s time from
process start to its first printed line, against a script calling RapidOCR plainly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench_llamacpp import run_measured, say
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # edgevl is imported in the measured workers only
    from edgevl.engines.base import Engine

KINDS = ("line", "screen", "columns", "panels", "table", "long")
LONG_PAGE = (1200, 9000)


# ------------------------------------------------------------------------------------------------ the images


def draw_images(kind: str, count: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """(task, image) pairs of one kind, the same for every run."""
    from edgevl.eval import synth
    from edgevl.eval.corpus import load_corpus
    from edgevl.eval.fonts import fonts_for

    corpus = load_corpus("en")
    fonts = fonts_for("en", "".join(corpus.sentences))
    images = []
    for index in range(count):
        rng = random.Random(f"{seed}:{kind}:{index}")
        if kind == "long":
            images.append(("ocr", long_page(corpus.sentences, rng)))
        elif kind == "line":
            images.append(("ocr", tight_line(rng.choice(corpus.sentences), rng.choice(fonts).at_size(24))))
        else:
            maker = synth.MAKERS["ui" if kind == "screen" else kind]
            sample = maker(rng, corpus, fonts)
            images.append((sample.task, sample.image))
    return images


def long_page(sentences: tuple[str, ...], rng: random.Random) -> Image.Image:
    """A 1200x9000 screenshot of 22 px text, a paragraph gap every few lines."""
    height = LONG_PAGE[1]
    font = _font(22)
    image = Image.new("RGB", LONG_PAGE, "white")
    draw = ImageDraw.Draw(image)
    y = 40
    while y < height - 60:
        draw.text((60, y), rng.choice(sentences)[:90], font=font, fill=(30, 30, 30))
        y += 34 if rng.random() < 0.8 else 68
    return image


def tight_line(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (int(right - left) + 4, int(bottom - top) + 4), "white")
    ImageDraw.Draw(image).text((2 - left, 2 - top), text, font=font, fill="black")
    return image


def _font(size: int) -> ImageFont.FreeTypeFont:
    from edgevl.eval.fonts import fonts_for

    return fonts_for("en", "abc")[0].at_size(size)


def real_images(folder: Path, kind: str) -> list[tuple[str, Image.Image]]:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(row["task"], Image.open(folder / row["image"]).convert("RGB"))
            for row in rows if f"kind:{kind}" in row["tags"]]


# --------------------------------------------------------------------------------------------- the workers


def worker(args: argparse.Namespace) -> None:
    """One engine on one kind's images, in this process; writes its timings as JSON to --out."""
    images = real_images(args.real, args.kind.removeprefix("real-")) if args.kind.startswith("real-") \
        else draw_images(args.kind, args.count)
    started = time.perf_counter()
    engine: Engine
    if args.worker == "edgevl":
        from edgevl.engines.classic import ClassicOcrEngine

        engine = ClassicOcrEngine(threads=args.threads)
    else:
        from edgevl.eval.baselines import PlainRapidOcr, PlainRapidOcrRecognition

        recognition_only = args.kind in ("line", "real-receipt-line")
        engine = (PlainRapidOcrRecognition if recognition_only else PlainRapidOcr)(threads=args.threads)
    found = keep_boxes(engine) if args.worker == "edgevl" else []
    read(engine, *images[0])  # warm-up: models load on first use
    load = time.perf_counter() - started
    seconds, layout = [], []
    for task, image in images[1:] if len(images) > 1 else images:
        started = time.perf_counter()
        read(engine, task, image)
        seconds.append(time.perf_counter() - started)
        if found and task == "ocr":
            layout.append(layout_seconds(found[-1]))
    Path(args.out).write_text(json.dumps({"load": load, "seconds": seconds, "layout": layout}))


def read(engine, task: str, image: Image.Image) -> str:
    from edgevl.tasks import get_task

    return "".join(engine.stream(get_task(task).build_request([image], engine.family)))


def keep_boxes(engine) -> list:
    """A list that receives the boxes the engine finds in each image (to time the layout work on them)."""
    found: list = []
    find_text = engine._find_text

    def keeping(image, with_chars: bool = False):
        found.append(find_text(image, with_chars))
        return found[-1]

    engine._find_text = keeping
    return found


def layout_seconds(boxes: list) -> float:
    """The reading-order work alone (auto and paragraphs, averaged) on the boxes of one image."""
    from edgevl.layout import arrange

    started = time.perf_counter()
    for mode in ("auto", "paragraphs"):
        arrange(boxes, mode)
    return (time.perf_counter() - started) / 2


def tiles_worker(args: argparse.Namespace) -> None:
    """The long page read whole by the engine, and its tiles read one by one by the same reader (no merging)."""
    import numpy as np

    from edgevl.engines import screens
    from edgevl.engines.classic import ClassicOcrEngine, _to_bgr

    page = draw_images("long", 1)[0][1]
    engine = ClassicOcrEngine(threads=args.threads)
    read(engine, "ocr", tight_line("warm up", _font(24)))
    bgr = _to_bgr(page)
    started = time.perf_counter()
    read(engine, "ocr", page)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    for left, top, right, bottom in screens.tiles(*bgr.shape[:2]):
        engine._detect(np.ascontiguousarray(bgr[top:bottom, left:right]), with_chars=False)
    Path(args.out).write_text(json.dumps({"whole": whole, "tiles": time.perf_counter() - started}))


def first_line(command: list[str]) -> float:
    """Seconds from starting `command` to its first line on stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None, "started with stdout=PIPE"
    process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.communicate()
    return elapsed


PLAIN_SCRIPT = """
import sys, rapidocr
from pathlib import Path
from rapidocr import RapidOCR
models = Path(rapidocr.__file__).parent / "models"
reader = RapidOCR(params={"Global.log_level": "error", "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
                          "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
                          "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx")})
print(reader(sys.argv[1]).txts[0], flush=True)
"""


# ---------------------------------------------------------------------------------------------------- main


def measure(kind: str, engine: str, args: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / f"{kind}-{engine}.json"
    command = [sys.executable, __file__, "--worker", engine, "--kind", kind, "--count", str(args.count),
               "--threads", str(args.threads), "--out", str(out)] + (["--real", str(args.real)] if args.real else [])
    code, rss = run_measured(command, workdir / f"{kind}-{engine}.log")
    if code != 0:
        sys.exit(f"{engine} on {kind} failed:\n{(workdir / f'{kind}-{engine}.log').read_text()[-3000:]}")
    return {**json.loads(out.read_text()), "peak_rss_mb": rss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4, help="images per drawn kind, the first a warm-up (default 4)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--real", type=Path, help="a set from benchmarks/realset/build.py: its kinds are added")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "tiles":
        return tiles_worker(args)
    if args.worker:
        return worker(args)
    kinds = [kind for kind in args.kinds.split(",") if kind]
    if args.real:
        kinds += [f"real-{kind}" for kind in ("screen", "receipt-line", "table")]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        rows = []
        for kind in kinds:
            say(f"measuring {kind} ...")
            ours, plain = measure(kind, "edgevl", args, workdir), measure(kind, "plain", args, workdir)
            rows.append((kind, ours, plain))
        say("\n| kind | edgevl s/image | plain s/image | ratio | layout ms | layout / plain | edgevl peak MB "
            "| plain peak MB |\n|---|---|---|---|---|---|---|---|")
        for kind, ours, plain in rows:
            mine, theirs = statistics.mean(ours["seconds"]), statistics.mean(plain["seconds"])
            layout = statistics.mean(ours["layout"]) if ours["layout"] else 0.0
            say(f"| {kind} | {mine:.3f} | {theirs:.3f} | {mine / theirs:.2f} | {1000 * layout:.1f} | "
                f"{layout / theirs:.1%} | {ours['peak_rss_mb']:.0f} | {plain['peak_rss_mb']:.0f} |")
        out = workdir / "tiles.json"
        run_measured([sys.executable, __file__, "--worker", "tiles", "--threads", str(args.threads), "--out", str(out)],
                     workdir / "tiles.log")
        tiles = json.loads(out.read_text())
        say(f"\n1200x9000 page: read whole {tiles['whole']:.2f} s, its tiles one by one {tiles['tiles']:.2f} s "
            f"(ratio {tiles['whole'] / tiles['tiles']:.2f})")
        image = workdir / "start.png"
        tight_line("Process start to first line", _font(24)).save(image)
        edgevl = Path(sys.executable).with_name("edgevl")
        ours_start = first_line([str(edgevl), "ocr", str(image)])
        plain_start = first_line([sys.executable, "-c", PLAIN_SCRIPT, str(image)])
        say(f"process start to first line: edgevl ocr {ours_start:.2f} s, RapidOCR called plainly {plain_start:.2f} s "
            f"(ratio {ours_start / plain_start:.2f})")


if __name__ == "__main__":
    main()
