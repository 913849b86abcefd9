#!/usr/bin/env python3
"""Real-size conversions: files on disk, peak RSS and time of each `edgevl convert`, and of one request.

A random checkpoint with the released Qwen2-VL-2B configuration (or --size 7b; all 28 text and 32 vision layers,
bf16, as Qwen ships it; the 2B shared with bench_llamacpp.py --full) is converted to every asked format and quant, each
`edgevl convert` in a process of its own, so that its peak RSS is its own (the kernel's high-water mark). With
--run, each converted model then answers one OCR request of about --image-tokens image tokens in a fresh process:
peak RSS of load + request, load time, image encode seconds, prefill and decode tokens/s. Random weights cost
exactly what trained ones cost; the answer is noise, its length is capped by --tokens.

    python benchmarks/bench_realsize.py --out /big/disk [--targets gguf:q4_k_m,onnx:int4] [--run]

Needs the export extra for ONNX. The checkpoint is drawn one ~2 GB shard at a time (bf16): 4.4 GB of disk at 2B,
16.6 GB at 7B, plus the conversions (each deleted after its numbers unless --keep).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from bench_llamacpp import REPO, build_checkpoint, load_average, load_image, run_measured, say, screenshot

TARGETS = ("gguf:q4_k_m", "gguf:f16", "onnx:int4", "onnx:fp16", "onnx:fp32")
PROMPT = "Read all the text in this image."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="checkpoint and converted models")
    parser.add_argument("--size", choices=("2b", "7b"), default="2b", help="released Qwen2-VL configuration")
    parser.add_argument("--targets", default=",".join(TARGETS), help="FORMAT:QUANT,... (default: all five)")
    parser.add_argument("--run", action="store_true", help="also load each model and answer one request")
    parser.add_argument("--image-tokens", type=int, default=1536, help="request image size, in image tokens")
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=2, help="threads for conversion and engines")
    parser.add_argument("--keep", action="store_true", help="keep converted models (default: delete each)")
    parser.add_argument("--worker", choices=("build", "request"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    return parser.parse_args()


def checkpoint_folder(out: Path, size: str) -> Path:
    return out / f"qwen2vl-{size}-random-l28-v32-seed0"  # bench_llamacpp.py --full's name (2B): built once for both


def measured(command: list[str], log: Path) -> dict:
    """Run `command` in a process of its own; its exit code, peak RSS (GB) and wall time (s)."""
    started = time.perf_counter()
    code, rss = run_measured(command, log)
    result = {"code": code, "peak_rss_gb": rss / 1e9, "seconds": time.perf_counter() - started}
    if code != 0:
        say(f"  failed (exit {code}); the end of {log}:\n{log.read_text(errors='replace')[-2000:]}")
    return result


def convert(args: argparse.Namespace, checkpoint: Path, target: str) -> dict:
    form, quant = target.split(":")
    folder = args.out / f"{checkpoint.name}-{form}-{quant}"
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "edgevl.cli", "convert", str(checkpoint), "-o", str(folder), "--to", form,
               "--quant", quant, "--no-verify", *(["--threads", str(args.threads)] if form == "gguf" else [])]
    say(f"{target}: {shlex.join(command[1:])}   (load {load_average()})")
    result = measured(command, args.out / f"convert-{form}-{quant}.log")
    if result["code"] == 0:
        result["disk_gb"] = sum(path.stat().st_size for path in folder.iterdir()) / 1e9
    return {"target": target, "folder": str(folder), "command": shlex.join(["edgevl", *command[3:]]),
            "convert": result}


def request(args: argparse.Namespace, row: dict) -> None:
    """One OCR request through edgevl's engine for the model, in a fresh process (`--worker request`)."""
    job = args.out / "request-job.json"
    image = args.out / f"screenshot-{args.image_tokens}.png"
    if not image.is_file():
        screenshot(args.image_tokens).save(image)
    job.write_text(json.dumps({"folder": row["folder"], "image": str(image), "threads": args.threads,
                               "image_tokens": args.image_tokens, "tokens": args.tokens,
                               "result": str(args.out / "request-result.json")}))
    result = measured([sys.executable, __file__, "--worker", "request", "--job", str(job)],
                      args.out / f"request-{row['target'].replace(':', '-')}.log")
    if result["code"] == 0:
        result.update(json.loads((args.out / "request-result.json").read_text()))
    row["request"] = result


def request_worker(job: dict) -> None:
    from edgevl import api
    from edgevl.request import Request, Sampling

    image = load_image(job["image"])
    started = time.perf_counter()
    with api.open_engine(job["folder"], threads=job["threads"], gpu=False,
                         image_max_tokens=job["image_tokens"]) as engine:
        load_s = time.perf_counter() - started
        text = "".join(engine.stream(Request("ocr", (image,), PROMPT, sampling=Sampling(max_tokens=job["tokens"]))))
        stats = engine.last_stats
    Path(job["result"]).write_text(json.dumps({
        "load_s": load_s, "image_encode_s": stats.image_encode_ms / 1000, "prompt_tokens": stats.prompt_tokens,
        "prefill_tps": stats.prefill_tokens_per_s, "decode_tps": stats.decode_tokens_per_s,
        "generated": stats.generated_tokens, "answer_chars": len(text)}))


def table(rows: list[dict], size: str) -> str:
    lines = ["| model | format | quant | on disk | convert peak RSS | convert time | load+request peak RSS | "
             "image encode | prefill | decode |", "|" + "---|" * 10]
    for row in rows:
        form, quant = row["target"].split(":")
        done, ran = row["convert"], row.get("request", {})
        cells = [f"{done['disk_gb']:.2f} GB" if "disk_gb" in done else "failed", f"{done['peak_rss_gb']:.2f} GB",
                 f"{done['seconds'] / 60:.1f} min"]
        if "load_s" in ran:
            cells += [f"{ran['peak_rss_gb']:.2f} GB", f"{ran['image_encode_s']:.1f} s",
                      f"{ran['prefill_tps']:.0f} tok/s", f"{ran['decode_tps']:.1f} tok/s"]
        else:
            cells += ["-"] * 4
        lines.append(f"| Qwen2-VL-{size.upper()} | {form} | {quant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.worker == "request":
        request_worker(json.loads(Path(args.job).read_text()))
        return
    if args.worker == "build":
        from edgevl.testing.qwen2vl import QWEN2VL_2B, QWEN2VL_7B

        size = {"2b": QWEN2VL_2B, "7b": QWEN2VL_7B}[args.size]
        build_checkpoint(checkpoint_folder(args.out, args.size), size, seed=0)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_folder(args.out, args.size)
    if not checkpoint.is_dir():
        say(f"building the random {args.size.upper()} checkpoint in {checkpoint} (once) ...   (load {load_average()})")
        built = measured([sys.executable, __file__, "--out", str(args.out), "--size", args.size, "--worker", "build"],
                         args.out / f"build-{args.size}.log")
        say(f"  peak RSS {built['peak_rss_gb']:.2f} GB, {built['seconds']:.0f} s   (load {load_average()})")
        if built["code"] != 0:
            raise SystemExit(1)
        (args.out / f"build-{args.size}.json").write_text(json.dumps(built))
    rows = []
    for target in filter(None, args.targets.split(",")):  # --targets "": build the checkpoint only
        row = convert(args, checkpoint, target)
        say(f"  peak RSS {row['convert']['peak_rss_gb']:.2f} GB, {row['convert']['seconds']:.0f} s")
        if args.run and row["convert"]["code"] == 0:
            request(args, row)
        if not args.keep:
            shutil.rmtree(row["folder"], ignore_errors=True)
        rows.append(row)
    (args.out / f"realsize-{args.size}.json").write_text(json.dumps(rows, indent=2))
    say(f"\nthreads {args.threads}, load average after: {load_average()}\n")
    say(table(rows, args.size))
    for row in rows:
        say(f"    {row['command']}")


if __name__ == "__main__":
    main()
