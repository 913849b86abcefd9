#!/usr/bin/env python3
"""edgevl's ONNX Runtime engine against onnxruntime-genai on the same exported graphs, in one run.

The random Qwen2-VL checkpoint with Qwen2-VL-2B widths (or with --family qwen25vl the Qwen2.5-VL one with
Qwen2.5-VL-3B widths; shared with bench_llamacpp.py's cache) is exported by `edgevl convert --to onnx` twice:
once for edgevl (the decoder returns the last position's logits) and once for onnxruntime-genai (0.18.0 insists
on one row of logits per input token), same weights, same int4 quantization, with a genai_config.json of
`type: "qwen2_5_vl"` (genai's native type for Qwen2.5-VL; there is no qwen2_vl type, and Qwen2-VL's text stack
is Qwen2.5-VL's). Qwen2.5-VL's vision graph masks attention to windows itself, so genai feeds it as Qwen2-VL's
(one image per call, patches in the processor's order). Both then answer the same screenshot with the same
prompt, threads and token count, each in fresh processes, alternating. Also prints the size of every graph at
fp32 / fp16 / int4.

    pip install onnxruntime-genai==0.18.0     # the reference; not an edgevl dependency
    python benchmarks/bench_onnx.py [--family qwen25vl --layers 4 --vision-depth 8 --image-tokens 1000 --tokens 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_llamacpp import (
    REPO, add_model_arguments, checkpoint_folder, ensure_checkpoint, load_average, load_image, measure_interleaved,
    ms_since, number, prepare_in_subprocess, results_name, run_measured, say, screenshot, summarize, table,
)

PROMPT = "Read all the text in this image."
QUANTS = ("fp32", "fp16", "int4")
#: (key, label, higher is better)
METRICS = (
    ("first_token_ms", "image + prompt, to first token (ms)", False),
    ("decode_tps", "decode (tok/s)", True),
    ("request_ms", "whole request (ms)", False),
    ("load_ms", "model load (ms)", False),
    ("peak_rss_mb", "peak RSS (MB)", False),
)


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """The request every engine answers, how often, and which graphs are exported (bench_qwen25vl.py passes the
    same options on to this benchmark and to bench_llamacpp.py)."""
    parser.add_argument("--image-tokens", type=int, default=1000, help="image size, in image tokens")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every engine")
    parser.add_argument("--repeats", type=int, default=3, help="processes per engine; the median is reported")
    parser.add_argument("--no-size-table", dest="size_table", action="store_false",
                        help="ONNX: export only the int4 graphs both engines run (no fp32 / fp16 size table)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="cache for checkpoint, graphs, results")
    add_model_arguments(parser)
    add_request_arguments(parser)
    parser.add_argument("--worker", choices=("prepare", "ours", "genai"), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


@dataclass(frozen=True)
class Job:
    family: str
    ours: str
    genai: str
    image: str
    image_tokens: int
    tokens: int
    threads: int
    workdir: str


# ---- the graphs ------------------------------------------------------------------------------------------------

def folders(args: argparse.Namespace) -> dict[str, Path]:
    checkpoint = checkpoint_folder(args)
    named = {quant: checkpoint.with_name(f"{checkpoint.name}-onnx-{quant}") for quant in QUANTS}
    return {"checkpoint": checkpoint, **named, "genai": checkpoint.with_name(f"{checkpoint.name}-onnx-int4-genai")}


def prepare(args: argparse.Namespace) -> None:
    """Checkpoint (shared with bench_llamacpp.py), the three edgevl variants, and the genai copy of int4."""
    from edgevl.converters import SilentProgress, convert
    from edgevl.converters.onnx_files import Int4Options
    from edgevl.converters.qwen2vl_onnx import write_model

    paths = folders(args)
    ensure_checkpoint(args)
    for quant in exported_quants(args):
        if not paths[quant].is_dir():
            say(f"exporting {quant} to {paths[quant]} (once) ...")
            convert(paths["checkpoint"], paths[quant], to="onnx", quant=quant)
    if not paths["genai"].is_dir():
        say(f"exporting the onnxruntime-genai copy to {paths['genai']} (once) ...")
        partial = paths["genai"].with_name(paths["genai"].name + ".partial")
        partial.mkdir(exist_ok=True)
        write_model(paths["checkpoint"], partial, "int4", Int4Options(), SilentProgress(), all_logits=True,
                    family=args.family)
        write_genai_config(partial, paths["checkpoint"], args.image_tokens)
        partial.rename(paths["genai"])


def write_genai_config(folder: Path, checkpoint: Path, image_tokens: int) -> None:
    """genai_config.json and processor_config.json describing edgevl's graphs to onnxruntime-genai (which also
    reads the checkpoint's tokenizer_config.json)."""
    config = json.loads((folder / "model.json").read_text())
    heads = config["hidden_size"] // config["head_dim"]
    checkpoint_tokenizer = json.loads((folder / "tokenizer.json").read_text())
    pad = next(t["id"] for t in checkpoint_tokenizer["added_tokens"] if t["content"] == "<|endoftext|>")
    genai = {"model": {
        "type": "qwen2_5_vl", "bos_token_id": pad, "pad_token_id": pad, "eos_token_id": config["eos_token_ids"],
        "context_length": 8192, "vocab_size": config["vocab_size"], "image_token_id": config["image_token_id"],
        "decoder": {
            "filename": "decoder.onnx", "head_size": config["head_dim"], "hidden_size": config["hidden_size"],
            "num_attention_heads": heads, "num_hidden_layers": config["num_layers"],
            "num_key_value_heads": config["num_kv_heads"],
            "inputs": {"inputs_embeds": "inputs_embeds", "position_ids": "position_ids",
                       "past_key_names": "past.%d.key", "past_value_names": "past.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"}},
        "embedding": {"filename": "embed.onnx",
                      "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                      "outputs": {"inputs_embeds": "inputs_embeds"}},
        "vision": {"filename": "vision.onnx", "spatial_merge_size": config["merge_size"],
                   "inputs": {"pixel_values": "pixel_values", "image_grid_thw": "image_grid_thw"},
                   "outputs": {"image_features": "image_features"}}},
        "search": {"do_sample": False, "max_length": 8192, "num_beams": 1, "num_return_sequences": 1,
                   "past_present_share_buffer": False, "top_k": 1, "top_p": 1.0, "temperature": 1.0}}
    (folder / "genai_config.json").write_text(json.dumps(genai, indent=2))
    cell = (config["patch_size"] * config["merge_size"]) ** 2
    transforms = [
        {"operation": {"name": "decode_image", "type": "DecodeImage", "attrs": {"color_space": "RGB"}}},
        {"operation": {"name": "convert_to_rgb", "type": "ConvertRGB"}},
        {"operation": {"name": "resize", "type": "Resize", "attrs": {
            "width": 0, "height": 0, "smart_resize": 1, "min_pixels": 4 * cell, "max_pixels": image_tokens * cell,
            "patch_size": config["patch_size"], "merge_size": config["merge_size"], "interpolation": "CUBIC"}}},
        {"operation": {"name": "rescale", "type": "Rescale", "attrs": {"rescale_factor": 1 / 255}}},
        {"operation": {"name": "normalize", "type": "Normalize", "attrs": {
            "mean": config["image_mean"], "std": config["image_std"], "qwen2_5_vl": 1}}},
        {"operation": {"name": "patch_image", "type": "PatchImage", "attrs": {
            "patch_size": config["patch_size"], "temporal_patch_size": config["temporal_patch_size"],
            "merge_size": config["merge_size"]}}},
    ]
    processor = {"processor": {"name": "qwen2_5_image_processor", "transforms": transforms}}
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2))
    shutil.copy(checkpoint / "tokenizer_config.json", folder / "tokenizer_config.json")


# ---- measuring -------------------------------------------------------------------------------------------------

def measure_ours(job: Job) -> dict:
    from edgevl.request import Request, Sampling
    from edgevl.engines.onnx import OnnxEngine

    image = load_image(job.image)
    started = time.perf_counter()
    engine = OnnxEngine(job.ours, threads=job.threads, device="cpu", image_max_tokens=job.image_tokens)
    load_ms = ms_since(started)
    with engine:
        started = time.perf_counter()
        tokens = list(engine.generate_token_ids(Request("ocr", (image,), PROMPT,
                                                        sampling=Sampling(max_tokens=job.tokens))))
        request_ms = ms_since(started)
        stats = engine.last_stats
    first_token_ms = stats.image_encode_ms + stats.prefill_ms
    # decode steps: the first token comes from the prefill's logits, as genai's does
    return {"first_token_ms": first_token_ms, "decode_ms": stats.decode_ms, "generated": len(tokens) - 1,
            "request_ms": request_ms, "load_ms": load_ms, "tokens": tokens}


def measure_genai(job: Job) -> dict:
    import onnxruntime_genai as og

    from edgevl import model_cards
    from edgevl.chat import format_prompt

    family = model_cards.family_card(job.family).settings
    marker = "<|vision_start|><|image_pad|><|vision_end|>"
    prompt = format_prompt(family["chat_template"], family["system_prompt"], PROMPT, [marker])
    set_genai_threads(Path(job.genai), job.threads)
    started = time.perf_counter()
    config = og.Config(job.genai)
    config.clear_providers()  # the CPU, as edgevl is measured
    model = og.Model(config)
    processor = model.create_multimodal_processor()
    load_ms = ms_since(started)
    started = time.perf_counter()
    inputs = processor(prompt, images=og.Images.open(job.image))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=8192)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    tokens = []
    generator.generate_next_token()  # vision, embedding and prefill happen here
    tokens.append(int(generator.get_next_tokens()[0]))
    first_token_ms = ms_since(started)
    decode_started = time.perf_counter()
    while not generator.is_done() and len(tokens) < job.tokens:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    decode_ms = ms_since(decode_started)
    return {"first_token_ms": first_token_ms, "decode_ms": decode_ms, "generated": len(tokens) - 1,
            "request_ms": ms_since(started), "load_ms": load_ms, "tokens": tokens}


def set_genai_threads(folder: Path, threads: int) -> None:
    """genai reads thread counts from genai_config.json (default: every core); give each graph ours."""
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    for graph in ("decoder", "embedding", "vision"):
        config["model"][graph]["session_options"] = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    path.write_text(json.dumps(config, indent=2))


def run_metrics(run: dict) -> dict:
    return {"first_token_ms": run["first_token_ms"], "decode_tps": 1000 * run["generated"] / run["decode_ms"],
            "request_ms": run["request_ms"], "load_ms": run["load_ms"], "peak_rss_mb": run["peak_rss_mb"]}


def measure(engine: str, job: Job) -> dict:
    job_file = Path(job.workdir) / "onnx-job.json"
    job_file.write_text(json.dumps(asdict(job)))
    log = Path(job.workdir) / f"onnx-{engine}.log"
    code, rss = run_measured([sys.executable, __file__, "--worker", engine, "--job", str(job_file)], log)
    if code != 0:
        sys.exit(f"the {engine} measurement failed (exit {code}):\n{log.read_text(errors='replace')[-3000:]}")
    return {**json.loads((Path(job.workdir) / f"onnx-{engine}.json").read_text()), "peak_rss_mb": rss / 2**20}


def worker(args: argparse.Namespace) -> None:
    if args.worker == "prepare":
        prepare(args)
        return
    job = Job(**json.loads(args.job.read_text()))
    import onnxruntime  # noqa: F401 - imported before any clock starts, for both

    run = measure_ours(job) if args.worker == "ours" else measure_genai(job)
    (Path(job.workdir) / f"onnx-{args.worker}.json").write_text(json.dumps(run))


# ---- report ----------------------------------------------------------------------------------------------------

def exported_quants(args: argparse.Namespace) -> tuple[str, ...]:
    return QUANTS if args.size_table else ("int4",)


def graph_sizes(paths: dict[str, Path]) -> str:
    from edgevl.manifest import read_manifest

    files = {quant: read_manifest(paths[quant]).files for quant in QUANTS}
    roles = ("vision", "embed", "decoder")
    lines = ["graph     " + "".join(f"{quant:>12}" for quant in QUANTS)]
    for role in roles:
        sizes = [sum(e.bytes for r, e in files[quant].items() if r in (role, f"{role}_data")) for quant in QUANTS]
        lines.append(f"{role:<10}" + "".join(f"{number(size / 1e6):>9} MB" for size in sizes))
    totals = [sum(files[quant][r].bytes for r in files[quant] if r.split("_")[0] in roles) for quant in QUANTS]
    lines.append(f"{'all':<10}" + "".join(f"{number(size / 1e6):>9} MB" for size in totals))
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if importlib.util.find_spec("onnxruntime_genai") is None:
        say("skipping the ONNX benchmark: its reference is missing (pip install onnxruntime-genai==0.18.0)")
        return
    load_before = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    paths = folders(args)
    prepare_in_subprocess(__file__, ready=all(paths[name].is_dir() for name in (*exported_quants(args), "genai")))
    image = args.out / f"screenshot-{args.image_tokens}.png"
    screenshot(args.image_tokens).save(image)
    job = Job(args.family, str(paths["int4"]), str(paths["genai"]), str(image), args.image_tokens, args.tokens,
              args.threads, str(args.out / "runs"))
    Path(job.workdir).mkdir(exist_ok=True)
    runs = measure_interleaved(job, args.repeats, engines=("ours", "genai"), measure=measure)
    summaries = {name: summarize(found, run_metrics, METRICS) for name, found in runs.items()}
    same = runs["ours"][0]["tokens"][: len(runs["genai"][0]["tokens"])] == runs["genai"][0]["tokens"]
    print()
    print(f"edgevl ONNX benchmark: {paths['int4'].name}, {args.image_tokens} image tokens, {args.tokens} tokens "
          f"greedy, {args.threads} thread(s), CPU, median of {args.repeats}; load average {load_before} -> "
          f"{load_average()}")
    print()
    print(table(summaries, reference="genai", metrics_shown=METRICS))
    print("ratios: > 1 means ours is better; target >= 0.95. genai's decoder computes logits for every prompt "
          "position (it requires them), edgevl's only for the last.")
    print(f"same greedy tokens: {same}; generated: ours {len(runs['ours'][0]['tokens'])}, "
          f"genai {len(runs['genai'][0]['tokens'])}")
    if args.size_table:
        print()
        print(graph_sizes(paths))
    output = args.out / results_name("onnx", args.family)
    output.write_text(json.dumps({"summary": summaries, "runs": runs, "load_average": load_before}, indent=2))
    print(f"results: {output}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
