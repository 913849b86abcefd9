"""The `edgevl` command line: convert checkpoints, run tasks on images, list models, check the install.

Text answers stream to stdout as they are produced; tables and JSON are printed once parsed.
Exit status: 0 done; 2 a usage error (an unknown or malformed option, found before anything runs, as argparse
reports it); 1 a runtime error (a bad image or model folder, an output that cannot be written - one line, no
traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from contextlib import closing
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

import edgevl
from edgevl import api
from edgevl.errors import BackendUnavailable, EdgevlError, ImageError
from edgevl.families import DEFAULT_FAMILY, FAMILIES
from edgevl.gui.arguments import add_gui_arguments
from edgevl.engines.base import Engine
from edgevl.images import IMAGE_EXTENSIONS, expand_image_files, load_image
from edgevl.layout import DEFAULT_LAYOUT, LAYOUT_MODES
from edgevl.tasks import TASKS
from edgevl.tasks.caption import DEFAULT_LENGTH, LENGTHS

stderr = Console(stderr=True, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:  # llama.cpp warns about things users cannot change (token types, grounding advice)
        logging.getLogger("edgevl.llama_cpp").setLevel(logging.ERROR)
        # huggingface_hub's retries of a dropped connection are noise beside pull's progress bar and its error
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return args.run(args) or 0
    except EdgevlError as error:
        return _error(str(error))
    except BrokenPipeError:  # `edgevl ocr ... | head`: the reader is gone, nothing more to say
        _detach_stdout()
        return 1
    except OSError as error:  # an output that cannot be written (stdout on a full disk, ...)
        _detach_stdout()
        return _error(f"{error.filename or 'output'}: {error.strerror or error}")
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130


def _error(message: str) -> int:
    stderr.print(f"[red]edgevl: error:[/red] {escape(message)}", highlight=False)
    return 1


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not fail on it a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (captured, closed): nothing will be flushed to it
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgevl {edgevl.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engines do, show timings")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="convert a Hugging Face checkpoint folder")
    convert.add_argument("checkpoint", type=Path, help="folder with config.json, *.safetensors, tokenizer")
    convert.add_argument("-o", "--output", type=Path, required=True, help="model folder to create")
    convert.add_argument("--to", default="gguf", choices=["gguf", "onnx"], help="output format (default: gguf)")
    convert.add_argument("--quant", help="GGUF: f32 f16 bf16 q8_0 q6_k q5_k_m q4_k_m (default: the model card's "
                                         "recommendation, q4_k_m); ONNX: int4 (default) fp16 fp32")
    convert.add_argument("--vision-quant", default="f16", help="GGUF vision projector: f16 (default), f32, q8_0")
    convert.add_argument("--block-size", type=_whole(1, 4096), default=32,
                         help="ONNX int4: weights per scale (default 32)")
    convert.add_argument("--symmetric", action="store_true", help="ONNX int4: no zero points (default: asymmetric)")
    convert.add_argument("--force", action="store_true",
                         help="replace the output folder if it is an edgevl model folder (or empty)")
    convert.add_argument("--threads", type=_whole(0, 1024), default=0, help="quantizer threads (default: all cores)")
    _add_verify_option(convert)
    convert.set_defaults(run=run_convert)

    ocr = _task_parser(commands, "ocr", "read the text in images", formats=("text", "json"))
    _add_layout_option(ocr)
    ocr.set_defaults(task="ocr")
    table = _task_parser(commands, "table", "extract tables", formats=("md", "csv", "json", "html", "tsv"))
    table.set_defaults(task="table")
    caption = _task_parser(commands, "caption", "describe images (needs a VLM)", formats=("text", "json"))
    caption.add_argument("--length", choices=list(LENGTHS), default=DEFAULT_LENGTH)
    caption.set_defaults(task="caption")
    ask = _task_parser(commands, "ask", "ask a question about images (needs a VLM)", formats=("text", "json"))
    ask.add_argument("question", help="the question (after the image files)")
    ask.set_defaults(task="ask")
    _extract_parser(commands)
    table.add_argument("--strict", action="store_true",
                       help="constrain the answer to JSON records (one object per row); use with --format json")

    batch = commands.add_parser("batch", help="run a task over many images into a JSONL file (resumable)")
    batch.add_argument("files", nargs="+", type=Path, help="image files or folders (searched recursively)")
    batch.add_argument("-t", "--task", choices=list(TASKS), default="ocr", help="what to do (default: ocr)")
    batch.add_argument("-o", "--output", type=Path, required=True, help="JSONL file, one line per image")
    batch.add_argument("--resume", action="store_true", help="continue a run: skip the images the output has")
    batch.add_argument("--ext", default=",".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS),
                       help="extensions of the images taken from folders (default: %(default)s)")
    batch.add_argument("--concurrency", type=_whole(1, 1024), default=1,
                       help="requests in flight at once (with --endpoint; default 1)")
    batch.add_argument("--length", choices=list(LENGTHS), default=DEFAULT_LENGTH, help="caption length")
    batch.add_argument("--question", default="", help="the question, for --task ask")
    _add_schema_options(batch)
    batch.add_argument("--strict", action="store_true", help="--task table: constrain the answer to JSON records")
    _add_layout_option(batch)
    _add_engine_options(batch)
    _add_endpoint_options(batch)
    _add_sampling_options(batch)
    batch.set_defaults(run=run_batch)

    serve = commands.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    _add_engine_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    serve.add_argument("--port", type=_whole(0, 65535), default=8088, help="port (default: 8088; 0 picks a free one)")
    serve.add_argument("--api-key", default=os.environ.get("EDGEVL_API_KEY"),
                       help="require this key from clients (default: $EDGEVL_API_KEY, else no key)")
    serve.add_argument("--model-name", help="the model's name in the API (default: the model folder's name)")
    serve.add_argument("--queue", type=_whole(0, 100_000), default=32, help="requests that may wait for the model; "
                                                             "more get 429 (default: 32)")
    serve.add_argument("--max-request-mb", type=_number(0.001, 10_000), default=50,
                       help="largest request body (default: 50)")
    serve.add_argument("--max-image-mp", type=_number(0.001, 10_000), default=50,
                       help="largest image in megapixels (default: 50)")
    serve.add_argument("--max-images", type=_whole(1, 1000), default=16, help="images per request (default: 16)")
    serve.add_argument("--max-request-mp", type=_number(0.001, 10_000), default=50,
                       help="megapixels of all the images of a request together (default: 50)")
    serve.add_argument("--local-files", type=Path, metavar="DIR",
                       help="also accept image parts that name files under DIR (default: data URIs only)")
    serve.set_defaults(run=run_serve)

    models = commands.add_parser("models", help="list converted models")
    models.add_argument("--dir", type=Path, help=f"models folder (default: {api.models_dir()})")
    models.add_argument("--verify", action="store_true",
                        help="check every model's files against their SHA-256 checksums and headers")
    models.add_argument("--available", action="store_true",
                        help="list the catalogue of models `edgevl pull` knows by name instead")
    models.set_defaults(run=run_models)

    doctor = commands.add_parser("doctor", help="which backends work here, GPU offload yes/no and why")
    doctor.add_argument("--fix", action="store_true",
                        help="set up CUDA for both runtimes (after pip install 'edgevl[cuda]'; see README)")
    from edgevl.gpu_setup import add_arguments as add_gpu_setup_arguments

    add_gpu_setup_arguments(doctor.add_argument_group("--fix options"))
    doctor.set_defaults(run=run_doctor)

    _eval_parser(commands)
    _import_parser(commands)
    _pull_parser(commands)

    gui = commands.add_parser("gui", help="start the desktop app (needs the gui extra)")
    add_gui_arguments(gui)
    gui.set_defaults(run=run_gui)
    return parser


def _extract_parser(commands) -> None:
    extract = commands.add_parser("extract", help="fields of receipts, forms, cards and tables as JSON valid "
                                                  "against a schema (needs a VLM)")
    extract.add_argument("files", nargs="*", type=Path, help="image files or folders")
    extract.add_argument("-f", "--format", choices=["json"], default="json", help=argparse.SUPPRESS)
    _add_schema_options(extract)
    extract.add_argument("--list", action="store_true", help="list the built-in schemas and exit")
    _add_engine_options(extract)
    _add_endpoint_options(extract)
    _add_sampling_options(extract)
    extract.set_defaults(run=run_extract, task="extract")


def _add_schema_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", help="for extract: a built-in schema name (see edgevl extract --list) or a "
                                         "JSON schema file")
    parser.add_argument("--fields", help="for extract, instead of --schema: comma-separated field names, each "
                                         "a string (e.g. total,date,vendor)")


def _eval_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="measure accuracy, speed and memory of models on labelled images")
    steps = evaluate.add_subparsers(required=True, metavar="STEP")
    synth = steps.add_parser("synth", help="generate a labelled synthetic set (text lines, screenshots, tables)")
    synth.add_argument("--out", type=Path, required=True, help="folder to create (images/ and manifest.jsonl)")
    synth.add_argument("--n", type=_whole(1, 10**9), default=500, help="number of images (default: 500)")
    synth.add_argument("--lang", default="zh,en", help="comma-separated languages: zh, en (default: zh,en)")
    synth.add_argument("--seed", type=_whole(0, 2**32 - 1), default=0,
                       help="the same seed gives the same images (default: 0)")
    synth.add_argument("--kinds", default="line,lines,ui,table",
                       help="comma-separated: line, lines, ui, table; hard screens: columns, scroll, panels")
    synth.add_argument("--force", action="store_true", help="replace the synthetic set in --out")
    synth.set_defaults(run=run_eval_synth)

    run = steps.add_parser("run", help="run models over a labelled set and write a report (resumes a killed run)")
    run.add_argument("dataset", type=Path, help="folder with manifest.jsonl, *.gt.txt side files or ICDAR gt_*.txt")
    run.add_argument("-m", "--model", action="append", dest="models",
                     help="model folder or name, 'default' for the embedded engine, or for comparison "
                          "baseline:rapidocr, baseline:rapidocr-rec, baseline:tesseract; repeat to compare "
                          "(default: default)")
    run.add_argument("-o", "--output", type=Path, required=True, help="report folder (predictions are kept there)")
    run.add_argument("--task", choices=["ocr", "table", "caption", "extract"],
                     help="only samples of this task (also the task of samples that do not name one)")
    run.add_argument("--limit", type=_whole(1, 10**9), help="only the first N samples")
    run.add_argument("--max-tokens", type=_whole(1, 10**9), help="answer length limit (default: each task's)")
    _add_local_engine_options(run)
    run.add_argument("--whitespace", choices=["collapse", "remove", "keep"], default="collapse",
                     help="before scoring: collapse runs of whitespace (default), remove it all, or keep it")
    run.add_argument("--no-nfkc", action="store_true", help="do not apply Unicode NFKC before scoring")
    run.add_argument("--ignore-case", action="store_true", help="compare case-insensitively")
    run.add_argument("--worst", type=_whole(0, 10_000), default=5,
                     help="worst samples shown per model and task (default: 5)")
    run.set_defaults(run=run_eval)


def _import_parser(commands) -> None:
    adopt = commands.add_parser("import", help="adopt GGUF files made by llama.cpp, LM Studio or Ollama")
    adopt.add_argument("gguf", type=Path, help="the language model GGUF (an Ollama blob works too), or a folder "
                                              "holding it and its mmproj (LM Studio's layout)")
    adopt.add_argument("--mmproj", type=Path, help="the vision projector GGUF that belongs to it")
    adopt.add_argument("--quant", help="in a folder of several quants: the one to take (default q4_k_m)")
    adopt.add_argument("-o", "--output", type=Path,
                       help=f"model folder to create (default: named after the model in {api.models_dir()})")
    adopt.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    adopt.set_defaults(run=run_import)


def _pull_parser(commands) -> None:
    pull = commands.add_parser("pull", help="download a model from the Hugging Face Hub and convert or import it")
    pull.add_argument("name", help="a model from `edgevl models --available`, or a Hugging Face repo id (owner/name);"
                                   " HF_ENDPOINT, HF_TOKEN and the hub cache are honoured")
    pull.add_argument("-o", "--output", type=Path,
                      help=f"model folder to create (default: named after the model in {api.models_dir()})")
    pull.add_argument("--to", default="gguf", choices=["gguf", "onnx"], help="output format (default: gguf)")
    pull.add_argument("--quant", help="as for convert; in a repo of GGUF files, the quant of the file to take "
                                      "(default q4_k_m)")
    pull.add_argument("--file", help="in a repo of GGUF files: the language model file to take")
    pull.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    _add_verify_option(pull)
    pull.set_defaults(run=run_pull)


def _add_verify_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the converted model with the checkpoint's reference (transformers, CPU) on two "
                             "drawn probe images and store the result (default: on; skipped, saying why, without "
                             "torch and transformers or the memory)")


def _task_parser(commands, name: str, help_text: str, formats: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("files", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("-f", "--format", choices=formats, default=formats[0])
    _add_engine_options(parser)
    _add_endpoint_options(parser)
    _add_sampling_options(parser)
    parser.set_defaults(run=run_task)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", help="model folder or name (default: the embedded OCR engine); "
                                              "with --endpoint: the served model's name")
    _add_local_engine_options(parser)


def _add_local_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_whole(1, 1024), help="CPU threads (default: physical cores)")
    parser.add_argument("--cpu", action="store_true", help="do not offload to the GPU")
    parser.add_argument("--image-tokens", type=_whole(1, 1_000_000),
                        help="image-token budget (default: the model card's)")
    parser.add_argument("--context", type=_whole(64, 10_000_000), default=8192, help="context size in tokens")


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", help="use a model served over an OpenAI-compatible API instead "
                                           "(vLLM, llama.cpp's server, edgevl serve), e.g. http://gpu-box:8000/v1")
    parser.add_argument("--api-key", default=os.environ.get("EDGEVL_API_KEY"),
                        help="the endpoint's key (default: $EDGEVL_API_KEY)")
    parser.add_argument("--family", choices=list(FAMILIES),
                        help="prompt wording for the endpoint's model (default: told by edgevl serve, else "
                             f"{DEFAULT_FAMILY})")


def _add_layout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUT_MODES, default=DEFAULT_LAYOUT,
                        help="embedded engine's text order: auto (columns, then lines; default), paragraphs "
                             "(wrapped lines joined), raw (the detector's order)")


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=_whole(1, 1_000_000), help="answer length limit")
    parser.add_argument("--temperature", type=_number(0, 2), help="0 = greedy (default), at most 2")


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high (argparse turns the error into a usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, not {text!r}")
        return value

    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number from low to high (nan and inf are refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, not {text!r}")
        return value

    return parse



# ---- commands --------------------------------------------------------------------------------------------------

def run_convert(args: argparse.Namespace) -> None:
    try:
        from edgevl.converters import convert
        from edgevl.converters.onnx_files import Int4Options
    except ImportError as error:
        raise EdgevlError(f"`edgevl convert` needs the convert extra ({error}): "
                          "pip install 'edgevl[convert]'") from None

    with RichProgress() as progress:
        manifest = convert(args.checkpoint, args.output, to=args.to, quant=args.quant,
                           vision_quant=args.vision_quant, overwrite=args.force, threads=args.threads,
                           int4=Int4Options(block_size=args.block_size, symmetric=args.symmetric),
                           progress=progress)
    _print_model_folder(args.output, manifest)
    if args.verify:
        _verify_conversion(args.output)


def run_import(args: argparse.Namespace) -> None:
    try:
        from edgevl.gguf_import import import_gguf
    except ImportError:
        raise BackendUnavailable(f"importing GGUF files needs the gguf package: {api.CONVERT_HINT}") from None
    folder, manifest = import_gguf(args.gguf, args.mmproj, args.output, quant=args.quant, overwrite=args.force)
    _print_model_folder(folder, manifest)


def run_pull(args: argparse.Namespace) -> None:
    try:
        from edgevl.hub import pull
    except ImportError:
        raise BackendUnavailable("pulling needs huggingface_hub: pip install 'edgevl[pull]'") from None
    with RichProgress() as progress:
        folder, manifest = pull(args.name, args.output, to=args.to, quant=args.quant, file=args.file,
                                overwrite=args.force, progress=progress)
    _print_model_folder(folder, manifest)
    from edgevl.verify import awaits_verification

    if args.verify and awaits_verification(manifest):
        _verify_conversion(folder)


def _print_model_folder(folder: Path, manifest) -> None:
    for role, entry in manifest.files.items():
        stderr.print(f"{role:>7}: {entry.name}  {entry.bytes / 1e6:,.1f} MB")
    stderr.print(f"[green]done:[/green] {folder}  ({manifest.card or manifest.family} {manifest.quant}; try: "
                 f"edgevl ocr IMAGE --model {folder})")


def _verify_conversion(folder: Path) -> None:
    """--verify: one line, green, yellow (skipped) or a loud red warning."""
    from edgevl.verify import verify_conversion

    stderr.print("verifying: the converted model and the checkpoint's reference read two probe images...")
    verification = verify_conversion(folder)
    if verification.status == "below":
        stderr.print(f"[bold red]WARNING: {escape(verification.summary())}[/bold red]\n"
                     f"[red]{escape(verification.reason)}; the conversion may be broken: convert again, or try a "
                     "finer --quant[/red]", highlight=False)
    else:
        style = "green" if verification.status == "passed" else "yellow"
        stderr.print(f"[{style}]{escape(verification.summary())}[/{style}]", highlight=False)


def run_task(args: argparse.Namespace) -> int:
    files = list(expand_image_files(args.files))
    if not files:
        raise EdgevlError(f"no images in {', '.join(map(str, args.files))} "
                          f"({', '.join(ext.lstrip('.') for ext in IMAGE_EXTENSIONS)})")
    options = _task_options(args)
    failed = 0
    with _open_engine(args) as engine:
        if args.verbose:
            stderr.print(f"engine: {escape(engine.description)}")
            stderr.print(f"device: {engine.device} ({escape(engine.device_reason)})")
        # a question is about all its images together; other tasks answer image by image
        groups = [files] if args.task == "ask" else [[file] for file in files]
        for index, group in enumerate(groups):
            if len(groups) > 1:
                print(("\n" if index else "") + f"==> {group[0]} <==", flush=True)
            try:
                images = [load_image(file) for file in group]
            except ImageError as error:  # reported; the other images go on
                _error(str(error))
                failed += 1
                continue
            print_answer(api.stream_task(engine, args.task, images, **options), args.format)
            if args.verbose:
                print_stats(engine.last_stats)
    if failed and len(groups) > 1:
        stderr.print(f"{failed} of {len(groups)} images could not be read")
    return 1 if failed else 0


def run_extract(args: argparse.Namespace) -> None:
    if args.list:
        from rich.table import Table

        from edgevl.tasks.extract import builtin_schemas

        table = Table("name", "what it holds", box=None)
        for name, schema in builtin_schemas().items():
            table.add_row(name, schema.get("description", ""))
        Console().print(table)
        return
    if not args.files:
        raise EdgevlError("extract needs image files (or --list for the built-in schemas)")
    run_task(args)


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


def run_batch(args: argparse.Namespace) -> int:
    from edgevl.batch import BatchProgress, run_batch

    if args.concurrency > 1 and not args.endpoint:
        raise EdgevlError("--concurrency needs --endpoint: a local model answers one request at a time")
    extensions = ["." + ext.strip().lstrip(".") for ext in args.ext.split(",") if ext.strip()]
    files = list(expand_image_files(args.files, extensions))
    if not files:
        raise EdgevlError(f"no images ({args.ext}) in {', '.join(map(str, args.files))}")
    with _open_engine(args) as engine, BatchProgress(stderr, args.task) as progress:
        summary = run_batch(engine, files, args.output, args.task, options=_task_options(args), resume=args.resume,
                            concurrency=args.concurrency, on_start=progress.start, on_record=progress.record)
    errors = f", [red]{summary.failed} with errors[/red]" if summary.failed else ""
    skipped = f"; {summary.skipped} were done before" if summary.skipped else ""
    stderr.print(f"{summary.answered} images written to {escape(str(args.output))}{errors}{skipped}")
    if summary.interrupted:
        stderr.print("interrupted: add --resume to the same command to finish the run")
        return 130
    return 0


def run_serve(args: argparse.Namespace) -> None:
    from edgevl.server import EngineWorker, ServerSettings, serve

    settings = ServerSettings(
        model_name=args.model_name or (Path(args.model).name if args.model else api.DEFAULT_MODEL),
        api_key=args.api_key or None, max_request_bytes=int(args.max_request_mb * 1e6),
        max_image_pixels=int(args.max_image_mp * 1e6), max_images=args.max_images,
        max_request_pixels=int(args.max_request_mp * 1e6), queue_size=args.queue, local_files=args.local_files,
    ).for_bind(args.host)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        stderr.print("[yellow]warning:[/yellow] no --api-key: anyone who can reach this address can use the model")
    with api.open_engine(args.model, **_local_engine_options(args)) as engine, \
            closing(EngineWorker(engine, args.queue)) as worker:
        def ready(url: str) -> None:
            stderr.print(f"serving {escape(settings.model_name)} ({escape(engine.description)}) at {url} "
                         "(Ctrl+C stops)", highlight=False)

        serve(worker, settings, args.host, args.port, on_ready=ready, access_log=args.verbose)


def _open_engine(args: argparse.Namespace) -> Engine:
    if args.endpoint:
        return api.open_engine(endpoint=args.endpoint, api_key=args.api_key, model_name=args.model,
                               family=args.family)
    return api.open_engine(args.model, **_local_engine_options(args))


def _local_engine_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"threads": args.threads, "gpu": not args.cpu, "image_max_tokens": args.image_tokens,
            "context_size": args.context}


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.task == "caption":
        options["length"] = args.length
    if args.task == "ask":
        options["question"] = args.question
    if args.task == "ocr":
        options["layout"] = args.layout
    if args.task == "extract":
        from edgevl.tasks.extract import resolve_schema

        options["schema"] = resolve_schema(args.schema, args.fields)  # read once, not once per image
    elif getattr(args, "schema", None) or getattr(args, "fields", None):
        raise EdgevlError("--schema and --fields are for the extract task (--task extract)")
    if getattr(args, "strict", False):
        if args.task != "table":
            raise EdgevlError("--strict is for tables (--task table)")
        options["strict"] = True
    return options


def run_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgevl.verify import stored_verification

    if args.available:
        _print_catalogue()
        return 0
    folder = args.dir or api.models_dir()
    if args.verify:
        return verify_models(folder)
    models = api.installed_models(folder)
    if not models:
        stderr.print(f"no converted models in {folder} (create one with `edgevl convert ... -o {folder}/NAME`)")
        return 0
    table = Table("name", "format", "family", "quant", "vision", "size", "verified", "path", box=None)
    for model in models:
        manifest = model.manifest
        verification = stored_verification(manifest)
        table.add_row(model.name, manifest.format, manifest.card or manifest.family, manifest.quant,
                      manifest.vision_quant, f"{manifest.total_bytes() / 1e6:,.0f} MB",
                      verification.short() if verification else "-", str(model.path))
    Console().print(table)
    return 0


def verify_models(folder: Path) -> int:
    """Hash every file of every model folder anew and check its header; 1 if any is damaged."""
    from edgevl.manifest import MANIFEST_NAME, read_manifest
    from edgevl.model_files import check_model_files

    folders = sorted(path.parent for path in folder.glob(f"*/{MANIFEST_NAME}")) if folder.is_dir() else []
    if not folders:
        raise EdgevlError(f"no converted models in {folder}")
    damaged = 0
    for model in folders:
        try:
            check_model_files(model, read_manifest(model), verify=True)
            stderr.print(f"[green]ok[/green]       {escape(model.name)}", highlight=False)
        except EdgevlError as error:
            damaged += 1
            stderr.print(f"[red]damaged[/red]  {escape(model.name)}: {escape(str(error))}", highlight=False)
    return 1 if damaged else 0


def _print_catalogue() -> None:
    """The model cards `edgevl pull NAME` knows: download (the bf16 checkpoint), model files and memory needed at
    the card's recommended quant (the cards' figures; memory marked ~ where it is estimated, not measured), licence."""
    from rich.table import Table

    from edgevl.model_cards import all_cards

    rows: list[tuple[str, ...]] = []
    for card in all_cards():
        quant = card.recommended_quant
        model_mb = card.sizes_mb.get(quant, 0) + card.sizes_mb.get("mmproj_f16", 0)
        rows.append((card.id, f"{card.checkpoint_mb / 1e3:,.1f} GB", f"{model_mb / 1e3:,.1f} GB" if model_mb else "?",
                     card.ram_text(quant), f"{card.scores['ocrbench']:g}" if "ocrbench" in card.scores else "",
                     card.license, card.hub_id))
    columns = ["name", "download", "model", "RAM", "OCRBench", "licence", "repo"]
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(columns)]
    console = Console()
    if sum(widths) + len(widths) > console.width:  # a narrow terminal: the repo goes (`edgevl pull` takes the name)
        columns, widths, rows = columns[:-1], widths[:-1], [row[:-1] for row in rows]
    table = Table(box=None, collapse_padding=True)
    for index, (column, width) in enumerate(zip(columns, widths)):
        table.add_column(column, justify="right" if 1 <= index <= 4 else "left", no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if any(card.recommended_quant in card.ram_mb and card.recommended_quant not in card.ram_measured
           for card in all_cards()):
        console.print("~ estimated from the file sizes, not measured", style="dim")


def run_eval_synth(args: argparse.Namespace) -> None:
    _require_eval_extra()
    from edgevl.eval.synth import generate

    with RichProgress() as progress:
        manifest = generate(args.out, args.n, languages=_comma_list(args.lang), seed=args.seed,
                            kinds=_comma_list(args.kinds), overwrite=args.force, progress=progress)
    stderr.print(f"[green]done:[/green] {manifest}  (next: edgevl eval run {args.out} -o REPORT_FOLDER)")


def _require_eval_extra() -> None:
    try:
        import matplotlib  # noqa: F401  (the heaviest of the eval extra's packages)
        import rapidfuzz  # noqa: F401
    except ImportError as error:
        raise EdgevlError(f"`edgevl eval` needs the eval extra ({error}): pip install 'edgevl[eval]'") from None


def run_eval(args: argparse.Namespace) -> None:
    _require_eval_extra()
    from rich.table import Table

    from edgevl.eval.datasets import load_dataset
    from edgevl.eval.metrics import Normalization
    from edgevl.eval.report import TASK_TITLES, summary_tables, write_report
    from edgevl.eval.runner import RunSettings, run_models

    samples = load_dataset(args.dataset, task=args.task)[: args.limit]
    settings = RunSettings(max_tokens=args.max_tokens, image_tokens=args.image_tokens, context_size=args.context,
                           dataset=str(args.dataset.expanduser().absolute()), threads=args.threads, gpu=not args.cpu)
    normalization = Normalization(nfkc=not args.no_nfkc, whitespace=args.whitespace, ignore_case=args.ignore_case)
    with RichProgress() as progress:
        labels = run_models(samples, args.models or [api.DEFAULT_MODEL], args.output, settings, progress)
    results = write_report(samples, args.dataset, args.output, labels, normalization, worst=args.worst)
    for task, (header, rows) in summary_tables(results).items():
        table = Table(*header, title=TASK_TITLES[task], box=None)
        for row in rows:
            table.add_row(*row)
        Console(width=max(Console().width, 150)).print(table)  # a dozen columns: wider than 80 when piped
    stderr.print(f"[green]report:[/green] {args.output / 'report.md'}, {args.output / 'report.html'}")


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def run_doctor(args: argparse.Namespace) -> None:
    from edgevl.doctor import checks

    if args.fix:
        from edgevl.gpu_setup import fix

        fix(args)

    for name, ok, detail in checks():
        mark = "[green]ok[/green]  " if ok else "[yellow]--[/yellow]  "
        stderr.print(f"{mark}{name}: {escape(detail)}", highlight=False)


def run_gui(args: argparse.Namespace) -> int:
    try:
        from edgevl.gui.app import run
    except ImportError as error:
        raise EdgevlError(f"the desktop app needs PySide6 ({error}): pip install 'edgevl[gui]'") from None
    return run(args)


class RichProgress:
    """converters.Progress shown as a rich progress bar on stderr."""

    def __init__(self) -> None:
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, transient=False)
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:  # a failed step's bar stays where it stopped
            self._finish()
        self._bar.__exit__(*exc_info)

    def step(self, description: str, total: int | None) -> None:
        self._finish()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        assert self._task is not None, "a converter advances only within a step"
        self._bar.advance(self._task, amount)

    def _finish(self) -> None:
        if self._task is not None:
            task = self._bar.tasks[self._task]
            self._bar.update(self._task, total=task.total or 1, completed=task.total or 1)


if __name__ == "__main__":
    sys.exit(main())
