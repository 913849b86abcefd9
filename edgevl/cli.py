"""The `edgevl` command line: convert checkpoints, run tasks on images, list models, check the install.

Text answers stream to stdout as they are produced; tables and JSON are printed once parsed. Errors the user
can act on are printed as one line (no traceback) with exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import edgevl
from edgevl import api
from edgevl.errors import EdgevlError
from edgevl.images import IMAGE_EXTENSIONS, load_image

stderr = Console(stderr=True, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:  # llama.cpp warns about things users cannot change (token types, grounding advice)
        logging.getLogger("edgevl.llama_cpp").setLevel(logging.ERROR)
    try:
        return args.run(args) or 0
    except EdgevlError as error:
        stderr.print(f"[red]edgevl: error:[/red] {escape(str(error))}", highlight=False)
        return 1
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgevl {edgevl.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engines do, show timings")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="convert a Hugging Face checkpoint folder")
    convert.add_argument("checkpoint", type=Path, help="folder with config.json, *.safetensors, tokenizer")
    convert.add_argument("-o", "--output", type=Path, required=True, help="model folder to create")
    convert.add_argument("--to", default="gguf", choices=["gguf"], help="output format (default: gguf)")
    convert.add_argument("--quant", help="language model: f32 f16 bf16 q8_0 q6_k q5_k_m q4_k_m "
                                         "(default: the model card's recommendation, q4_k_m)")
    convert.add_argument("--vision-quant", default="f16", help="vision projector: f16 (default), f32, q8_0")
    convert.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    convert.add_argument("--threads", type=int, default=0, help="quantizer threads (default: all cores)")
    convert.set_defaults(run=run_convert)

    ocr = _task_parser(commands, "ocr", "read the text in images", formats=("text", "json"))
    ocr.set_defaults(task="ocr")
    table = _task_parser(commands, "table", "extract tables", formats=("md", "csv", "json", "html", "tsv"))
    table.set_defaults(task="table")
    caption = _task_parser(commands, "caption", "describe images (needs a VLM)", formats=("text", "json"))
    caption.add_argument("--length", choices=["short", "medium", "long"], default="medium")
    caption.set_defaults(task="caption")
    ask = _task_parser(commands, "ask", "ask a question about images (needs a VLM)", formats=("text", "json"))
    ask.add_argument("question", help="the question (after the image files)")
    ask.set_defaults(task="ask")

    models = commands.add_parser("models", help="list converted models")
    models.add_argument("--dir", type=Path, help="models folder (default: %s)" % api.models_dir())
    models.set_defaults(run=run_models)

    doctor = commands.add_parser("doctor", help="which backends work here, GPU offload yes/no and why")
    doctor.set_defaults(run=run_doctor)
    return parser


def _task_parser(commands, name: str, help_text: str, formats: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("files", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("-m", "--model", help="model folder or name (default: the embedded OCR engine)")
    parser.add_argument("-f", "--format", choices=formats, default=formats[0])
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--cpu", action="store_true", help="do not offload to the GPU")
    parser.add_argument("--max-tokens", type=int, help="answer length limit")
    parser.add_argument("--temperature", type=float, help="0 = greedy (default)")
    parser.add_argument("--image-tokens", type=int, help="image-token budget (default: the model card's)")
    parser.add_argument("--context", type=int, default=8192, help="context size in tokens")
    parser.set_defaults(run=run_task)
    return parser


# ---- commands --------------------------------------------------------------------------------------------------

def run_convert(args: argparse.Namespace) -> None:
    from edgevl.converters import convert

    with RichProgress() as progress:
        manifest = convert(args.checkpoint, args.output, to=args.to, quant=args.quant,
                           vision_quant=args.vision_quant, overwrite=args.force, threads=args.threads,
                           progress=progress)
    for role, entry in manifest.files.items():
        stderr.print(f"{role:>7}: {entry.name}  {entry.bytes / 1e6:,.1f} MB")
    stderr.print(f"[green]done:[/green] {args.output}  (try: edgevl ocr IMAGE --model {args.output})")


def run_task(args: argparse.Namespace) -> None:
    files = list(expand_image_files(args.files))
    options = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.task == "caption":
        options["length"] = args.length
    if args.task == "ask":
        options["question"] = args.question
    with api.open_engine(args.model, threads=args.threads, gpu=not args.cpu,
                         image_max_tokens=args.image_tokens, context_size=args.context) as engine:
        if args.verbose:
            stderr.print(f"engine: {engine.description}")
        # a question is about all its images together; other tasks answer image by image
        groups = [files] if args.task == "ask" else [[file] for file in files]
        for index, group in enumerate(groups):
            if len(groups) > 1:
                print(("\n" if index else "") + f"==> {group[0]} <==", flush=True)
            run = api.stream_task(engine, args.task, [load_image(file) for file in group], **options)
            print_answer(run, args.format)
            if args.verbose:
                print_stats(engine.last_stats)


def print_answer(run: api.TaskRun, fmt: str) -> None:
    """Plain text streams as it comes; structured formats need the whole answer, so they print at the end."""
    if fmt == "text":
        for piece in run:
            print(piece, end="", flush=True)
        print()
        return
    for _ in run:
        pass
    print(run.result().render(fmt))


def print_stats(stats) -> None:
    stderr.print(
        f"image encode {stats.image_encode_ms:.0f} ms, prompt {stats.prompt_tokens} tokens "
        f"({stats.prefill_tokens_per_s:.0f} tok/s), answer {stats.generated_tokens} tokens "
        f"({stats.decode_tokens_per_s:.1f} tok/s)"
    )


def expand_image_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; folders become the images inside them (recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            yield path


def run_models(args: argparse.Namespace) -> None:
    from rich.table import Table

    folder = args.dir or api.models_dir()
    models = api.installed_models(folder)
    if not models:
        stderr.print(f"no converted models in {folder} (create one with `edgevl convert ... -o {folder}/NAME`)")
        return
    table = Table("name", "format", "family", "quant", "vision", "size", "path", box=None)
    for model in models:
        manifest = model.manifest
        table.add_row(model.name, manifest.format, manifest.card or manifest.family, manifest.quant,
                      manifest.vision_quant, f"{manifest.total_bytes() / 1e6:,.0f} MB", str(model.path))
    Console().print(table)


def run_doctor(args: argparse.Namespace) -> None:
    from edgevl.doctor import checks

    for name, ok, detail in checks():
        mark = "[green]ok[/green]  " if ok else "[yellow]--[/yellow]  "
        stderr.print(f"{mark}{name}: {escape(detail)}", highlight=False)


class RichProgress:
    """converters.Progress shown as a rich progress bar on stderr."""

    def __init__(self) -> None:
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=stderr, transient=False)
        self._task = None

    def __enter__(self) -> "RichProgress":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._finish()
        self._bar.__exit__(*exc_info)

    def step(self, description: str, total: int | None) -> None:
        self._finish()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        self._bar.advance(self._task, amount)

    def _finish(self) -> None:
        if self._task is not None:
            task = self._bar.tasks[self._task]
            self._bar.update(self._task, total=task.total or 1, completed=task.total or 1)


if __name__ == "__main__":
    sys.exit(main())
