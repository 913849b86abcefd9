#!/usr/bin/env python3
"""GPU check: does edgevl offload, compute the same thing on CUDA as on the CPU, and go as fast as llama.cpp's own
CLI on the same GPU? One run, for a machine with an NVIDIA GPU and the CUDA builds (`edgevl doctor --fix`).

1. facts: what `edgevl doctor` says (driver, CUDA, each GPU, which runtimes offload and why not);
2. parity: tiny random checkpoints of both families (Qwen2-VL, MiniCPM-V 2.6) converted to GGUF f16, the
   first-token logits of one request with the image on CUDA and on the CPU (llama.cpp), and the same for the
   ONNX fp16 export where ONNX Runtime has its CUDA provider;
3. speed: random checkpoints with Qwen2-VL's real widths and depths (2B by default, 7B with --sizes), Q4_K_M +
   f16 mmproj: image encode ms, prefill and decode tokens/s and VRAM of edgevl's engine against llama-mtmd-cli
   built with CUDA from the same sources (--cli), each request in a fresh process, alternating, as ratios; decode
   as a share of the memory-bandwidth bound (weight bytes read per token over the bandwidth measured here).
Usage and how to read the numbers: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_llamacpp as bench  # noqa: E402 - the measuring loop, image, CLI log parsing and tables are shared

REPO = bench.REPO
PARITY_MIN_COSINE = 0.999  # f16 weights: CUDA and CPU kernels round differently, well inside this
PARITY_MAX_RELATIVE_L2 = 2e-2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "gpu", help="checkpoints, GGUF, results")
    parser.add_argument("--sizes", default="2b", help="comma-separated real widths to time: 2b, 7b (or none)")
    parser.add_argument("--layers", type=int, help="language layers of the timed checkpoints (default: real depth)")
    parser.add_argument("--vision-depth", type=int, help="vision layers of the timed checkpoints (default: real)")
    parser.add_argument("--skip-parity", action="store_true", help="only the speed part")
    parser.add_argument("--checkpoints-only", action="store_true",
                        help="only build the random checkpoints (torch), e.g. while llama.cpp compiles")
    parser.add_argument("--cli", type=Path, help="llama-mtmd-cli built with CUDA (default: no CLI column)")
    parser.add_argument("--cli-from", type=Path, metavar="BUILD_DIR",
                        help="link llama-mtmd-cli from the CMake tree of `edgevl doctor --fix --build-dir BUILD_DIR`")
    parser.add_argument("--image-tokens", type=int, default=1000, help="image size, in image tokens")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate (greedy)")
    parser.add_argument("--repeats", type=int, default=3, help="processes per engine; the median is reported")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (conversion, CPU side)")
    parser.add_argument("--worker", choices=("parity", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- 1. facts --------------------------------------------------------------------------------------------------

def facts() -> list[tuple[str, bool, str]]:
    """`edgevl doctor`'s lines, from a process of its own (this one stays free of GPU libraries until it needs them)."""
    script = "import json; from edgevl.doctor import checks; print(json.dumps(list(checks())))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode != 0:
        return [("edgevl doctor", False, f"failed (exit {done.returncode}): {done.stderr[-2500:]}")]
    return [tuple(line) for line in json.loads(done.stdout.strip().splitlines()[-1])]


# ---- 2. parity -------------------------------------------------------------------------------------------------

def tiny_checkpoints(out: Path) -> dict[str, Path]:
    """Tiny random checkpoints of both families, made once."""
    from edgevl.testing.minicpmv import build_minicpmv_checkpoint
    from edgevl.testing.qwen2vl import build_qwen2vl_checkpoint

    builders: dict[str, Callable[[Path], object]] = {"qwen2vl": build_qwen2vl_checkpoint,
                                                     "minicpmv-2.6": build_minicpmv_checkpoint}
    for family, build in builders.items():
        if not (out / f"tiny-{family}").is_dir():
            build(out / f"tiny-{family}")
    return {family: out / f"tiny-{family}" for family in builders}


def parity_models(out: Path) -> dict[str, Path]:
    """The tiny checkpoints converted to GGUF f16 (f16 mmproj), made once."""
    from edgevl.converters import convert

    folders = {}
    for family, checkpoint in tiny_checkpoints(out).items():
        folder = checkpoint.with_name(checkpoint.name + "-f16")
        if not folder.is_dir():
            convert(checkpoint, folder, quant="f16", vision_quant="f16")
        folders[family] = folder
    return folders


def parity_images():
    return [bench.page(448, 448), bench.page(560, 336)]


def logits_on(folder: Path, gpu: bool) -> tuple[list[np.ndarray], str, bool]:
    """First-token logits of the OCR request on each parity image, the engine's description, and whether it
    runs on the GPU."""
    from edgevl.api import open_engine
    from edgevl.engines.base import ModelFolderEngine
    from edgevl.request import Request, Sampling

    with open_engine(folder, gpu=gpu) as engine:
        assert isinstance(engine, ModelFolderEngine), "a model folder opens a model-folder engine"
        logits = [engine.first_token_logits(Request("ocr", (image,), bench.PROMPT, sampling=Sampling(max_tokens=1)))
                  for image in parity_images()]
        return logits, engine.description, engine.device in ("gpu", "cuda")


def compare(gpu: list[np.ndarray], cpu: list[np.ndarray]) -> dict:
    cosines = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(gpu, cpu)]
    relative = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(gpu, cpu)]
    same_top = [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(gpu, cpu)]
    passed = min(cosines) >= PARITY_MIN_COSINE and max(relative) <= PARITY_MAX_RELATIVE_L2
    return {"min_cosine": min(cosines), "max_relative_l2": max(relative), "same_argmax": same_top, "passed": passed}


def parity_case(folder: Path) -> dict:
    gpu, gpu_engine, offloaded = logits_on(folder, gpu=True)
    if not offloaded:
        return {"engine": gpu_engine, "skipped": "the engine did not offload (see edgevl doctor)"}
    cpu, cpu_engine, _ = logits_on(folder, gpu=False)
    return {"engine": gpu_engine, "cpu_engine": cpu_engine, **compare(gpu, cpu)}


def onnx_parity(out: Path) -> dict:
    """The Qwen2-VL fp16 ONNX export on CUDA against the CPU, where ONNX Runtime has the CUDA provider."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return {"skipped": f"onnxruntime {onnxruntime.__version__} has no CUDA provider "
                           f"(providers: {', '.join(onnxruntime.get_available_providers())})"}
    from edgevl.converters import convert

    folder = out / "tiny-qwen2vl-onnx-fp16"
    if not folder.is_dir():
        convert(out / "tiny-qwen2vl", folder, to="onnx", quant="fp16")
    return parity_case(folder)


def parity(args: argparse.Namespace) -> dict:
    """All cases in a process of their own: a crash in a GPU library is then reported, and the run goes on."""
    log = args.out / "parity.log"
    code, _ = bench.run_measured([sys.executable, __file__, "--worker", "parity", "--out", str(args.out)], log)
    if code != 0:
        return {"all cases": {"skipped": f"the parity process failed (exit {code}); the end of {log}:\n"
                                         f"{log.read_text(errors='replace')[-2500:]}"}}
    return json.loads((args.out / "parity.json").read_text())


def parity_cases(args: argparse.Namespace) -> dict:
    """Every case, each reported even when another one fails (a one-shot GPU run should tell as much as it can)."""
    cases: dict[str, tuple[Callable[[Path], dict], Path]] = {
        f"llama.cpp {family}": (parity_case, folder) for family, folder in parity_models(args.out).items()}
    cases["onnx qwen2vl"] = (onnx_parity, args.out)
    results = {}
    for case, (check, argument) in cases.items():
        try:
            results[case] = check(argument)
        except Exception as error:  # noqa: BLE001 - reported, and the run goes on
            results[case] = {"skipped": f"failed: {type(error).__name__}: {error}"}
    return results


# ---- 3. speed at real sizes --------------------------------------------------------------------------------------

def real_size(name: str, layers: int | None, vision_depth: int | None):
    from edgevl.testing.qwen2vl import QWEN2VL_2B, QWEN2VL_7B

    size = {"2b": QWEN2VL_2B, "7b": QWEN2VL_7B}[name]
    return replace(size, num_hidden_layers=layers or size.num_hidden_layers,
                   vision_depth=vision_depth or size.vision_depth)


def real_checkpoint(args: argparse.Namespace, name: str) -> Path:
    """Random checkpoint at real widths (once)."""
    size = real_size(name, args.layers, args.vision_depth)
    checkpoint = args.out / f"qwen2vl-{name}-random-l{size.num_hidden_layers}-v{size.vision_depth}"
    if not checkpoint.is_dir():
        bench.say(f"building {checkpoint.name} ...")
        bench.build_checkpoint(checkpoint, size, seed=0)
    return checkpoint


def prepare_real(args: argparse.Namespace, name: str) -> Path:
    """The random checkpoint converted to Q4_K_M + f16 mmproj (once)."""
    from edgevl.converters import convert

    checkpoint = real_checkpoint(args, name)
    folder = checkpoint.with_name(checkpoint.name + "-q4_k_m")
    if not folder.is_dir():
        bench.say(f"converting {checkpoint.name} to q4_k_m ...")
        convert(checkpoint, folder, quant="q4_k_m", vision_quant="f16", threads=args.threads)
    return folder


def job_for(args: argparse.Namespace, folder: Path) -> bench.Job:
    from edgevl import model_cards
    from edgevl.manifest import read_manifest

    manifest = read_manifest(folder)
    image = args.out / f"screenshot-{args.image_tokens}.png"
    bench.screenshot(args.image_tokens).save(image)
    family = model_cards.family_card("qwen2vl").settings
    workdir = args.out / "runs" / folder.name
    workdir.mkdir(parents=True, exist_ok=True)
    return bench.Job(folder=str(folder), text_model=str(manifest.path(folder, "text")),
                     mmproj=str(manifest.path(folder, "mmproj")), image=str(image), prompt=bench.PROMPT,
                     system=family["system_prompt"], image_min_tokens=min(int(family["image_min_tokens"]),
                                                                           args.image_tokens),
                     image_max_tokens=args.image_tokens, tokens=args.tokens, threads=min(args.threads, 8),
                     context=4096, batch=512, workdir=str(workdir))


def link_cli(build: Path) -> Path:
    """llama-mtmd-cli from the CMake tree that built the CUDA llama-cpp-python: llama-cpp-python leaves the CLI
    targets out of its build, so mtmd-cli.cpp is compiled here and linked against that tree's libraries (the same
    ggml, CUDA kernels and flags as edgevl's engine)."""
    cache = (build / "CMakeCache.txt").read_text()
    home = re.search(r"CMAKE_HOME_DIRECTORY:INTERNAL=(.*)", cache)
    if home is None:
        raise SystemExit(f"{build}/CMakeCache.txt names no source folder (CMAKE_HOME_DIRECTORY)")
    llama = Path(home[1]) / "vendor" / "llama.cpp"
    library_dirs = sorted({str(library.parent) for library in build.rglob("lib*.so")})
    binary = build / "llama-mtmd-cli"
    build_info = [str(archive) for archive in build.rglob("libllama-common-base.a")]  # the build number's object
    includes = [f"-I{llama / folder}" for folder in ("common", "include", "ggml/include", "tools/mtmd", "vendor")]
    subprocess.run([os.environ.get("CXX", "g++"), "-std=c++17", "-O2", str(llama / "tools" / "mtmd" / "mtmd-cli.cpp"),
                    *build_info, *includes,
                    *(f"-L{folder}" for folder in library_dirs), *(f"-Wl,-rpath,{folder}" for folder in library_dirs),
                    "-lllama-common", "-lmtmd", "-lllama", "-lggml", "-lggml-base", "-pthread", "-o", str(binary)],
                   check=True)
    return binary


def cli_command(binary: Path, job: bench.Job) -> list[str]:
    """llama-mtmd-cli with the settings of our engine: every layer on the GPU, greedy, same budget and batch."""
    return [str(binary), "-m", job.text_model, "--mmproj", job.mmproj, "--image", job.image, "-p", job.prompt,
            "-sys", job.system, "--chat-template", "chatml", "-n", str(job.tokens), "--samplers", "top_k",
            "--top-k", "1", "-t", str(job.threads), "-c", str(job.context), "-b", str(job.batch), "-ub",
            str(job.batch), "-ngl", "999", "--no-warmup", "--perf", "-lv", "4",
            "--image-min-tokens", str(job.image_min_tokens), "--image-max-tokens", str(job.image_max_tokens)]


def measure(engine: str, job: bench.Job, cli: Path | None) -> dict:
    """One request in a fresh process, with the GPU memory it added at its peak."""
    workdir = Path(job.workdir)
    runs = len(list(workdir.glob(f"{engine}-*.log")))
    log = workdir / f"{engine}-{runs}.log"
    if engine == "cli":
        assert cli is not None, "the CLI is measured only where it was built"
        command = cli_command(cli, job)
    else:
        job_file = workdir / "job.json"
        job_file.write_text(json.dumps(asdict(job)))
        command = [sys.executable, __file__, "--worker", "ours", "--job", str(job_file)]
    with VramPeak() as vram:
        code, _ = bench.run_measured(command, log)
    output = log.read_text(errors="replace")
    timings = bench.parse_cli_timings(output) if engine == "cli" else None
    if code != 0 or (engine == "cli" and timings is None):
        raise MeasureFailed(f"{engine} failed (exit {code}); the end of {log}:\n{output[-3000:]}")
    run = asdict(timings) if timings else json.loads((workdir / "ours.json").read_text())
    return {**run, "vram_mb": vram.peak_mib,
            "vision_flash_attention": "flash attention is enabled" in output}


class MeasureFailed(Exception):
    pass


class VramPeak:
    """Samples the GPU's used memory every 20 ms while a child runs; the peak over the level before it started."""

    def __init__(self) -> None:
        self.peak_mib: float | None = None
        self._stop = threading.Event()

    def __enter__(self) -> VramPeak:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._used = lambda: pynvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
        except Exception:  # no NVML here: no VRAM column
            return self
        baseline = self._used()
        self.peak_mib = 0.0
        self._thread = threading.Thread(target=self._sample, args=(baseline,), daemon=True)
        self._thread.start()
        return self

    def _sample(self, baseline: float) -> None:
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self._used() - baseline)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.peak_mib is not None:
            self._thread.join()


def weight_bytes_per_token(text_model: str) -> int:
    """Bytes of weights a decode step reads: every tensor of the language model, except the token embedding when
    the output matrix is separate (then only one row of it is read)."""
    from gguf import GGUFReader

    tensors = {tensor.name: int(tensor.n_bytes) for tensor in GGUFReader(text_model).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


def memory_bandwidth() -> float | None:
    """Device-to-device copy through torch, bytes read plus written per second (None without a CUDA torch)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    source = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_()
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        target.copy_(source)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / 20
    del source, target
    torch.cuda.empty_cache()
    return 2 * 2**30 / seconds


SPEED_METRICS = (
    ("image_encode_ms", "image encode (ms)", False),
    ("prefill_tps", "prefill (tok/s)", True),
    ("decode_tps", "decode (tok/s)", True),
    ("vram_mb", "GPU memory (MiB)", False),
)  # no peak RSS: this process converts and loads models itself, and a child's peak RSS starts at its parent's


def speed_metrics(run: dict) -> dict:
    return {"image_encode_ms": run["image_encode_ms"], "prefill_tps": 1000 * run["prompt_tokens"] / run["prefill_ms"],
            "decode_tps": 1000 * run["generated_tokens"] / run["decode_ms"], "vram_mb": run["vram_mb"]}


def shown_metrics(runs: dict[str, list[dict]]) -> tuple:
    """GPU memory only where NVML could read it for every run."""
    measured = all(run["vram_mb"] is not None for engine_runs in runs.values() for run in engine_runs)
    return SPEED_METRICS if measured else tuple(metric for metric in SPEED_METRICS if metric[0] != "vram_mb")


def speed(args: argparse.Namespace, name: str, bandwidth: float | None) -> dict:
    folder = prepare_real(args, name)
    job = job_for(args, folder)
    cli = args.cli
    if cli:  # one untimed CLI run first: if the CLI cannot run here, edgevl's numbers are still measured
        try:
            measure("cli", job, cli)
        except MeasureFailed as error:
            bench.say(f"no llama-mtmd-cli column: {error}")
            cli = None
    if cli:
        runs = bench.measure_interleaved(job, args.repeats, engines=("ours", "cli"),
                                         measure=lambda engine, job: measure(engine, job, cli))
    else:
        runs = {"ours": [measure("ours", job, None) for _ in range(args.repeats)]}
    shown = shown_metrics(runs)
    summaries = {engine: bench.summarize(engine_runs, speed_metrics, shown) for engine, engine_runs in runs.items()}
    bytes_per_token = weight_bytes_per_token(job.text_model)
    bound = bandwidth / bytes_per_token if bandwidth else None
    return {"model": folder.name, "runs": runs, "summary": summaries, "weight_bytes_per_token": bytes_per_token,
            "bandwidth_bound_tps": bound, "decode_share_of_bound": {
                engine: summary["decode_tps"] / bound if bound else None for engine, summary in summaries.items()}}


# ---- workers and report ----------------------------------------------------------------------------------------

def worker(args: argparse.Namespace) -> None:
    if args.worker == "parity":
        (args.out / "parity.json").write_text(json.dumps(parity_cases(args)))
        return
    job = bench.Job(**json.loads(args.job.read_text()))
    import llama_cpp.mtmd_cpp  # noqa: F401 - imported before the clock starts, as in bench_llamacpp
    logging.basicConfig(level=logging.INFO)  # llama.cpp's "flash attention is enabled" line reaches the log
    run = bench.measure_ours(job)
    (Path(job.workdir) / "ours.json").write_text(json.dumps(asdict(run)))


def report_facts(facts_found: list) -> None:
    print("\n== edgevl doctor")
    for what, works, detail in facts_found:
        print(f"{'ok ' if works else 'NO '} {what}: {detail}")


def report_parity(results: dict) -> None:
    print("\n== parity: first-token logits with the image, CUDA vs CPU (f16 GGUF / fp16 ONNX)")
    for case, result in results.items():
        if "skipped" in result:
            print(f"{case}: skipped - {result['skipped']}")
        else:
            print(f"{case}: {'PASS' if result['passed'] else 'FAIL'} min cosine {result['min_cosine']:.6f}, "
                  f"max relative L2 {result['max_relative_l2']:.2e}, same argmax {result['same_argmax']} "
                  f"({result['engine']})")


def report_bandwidth(bandwidth: float | None) -> None:
    print(f"\nmemory bandwidth (device copy, read + write): {bandwidth / 1e9:,.0f} GB/s" if bandwidth
          else "\nmemory bandwidth: not measured (no CUDA torch)")


def report_speed(result: dict) -> None:
    print(f"\n== speed: {result['model']} (Q4_K_M + f16 mmproj); ratios > 1: ours better")
    shown = shown_metrics(result["runs"])
    summary = result["summary"]
    if "cli" in summary:
        print(bench.table({"ours": summary["ours"], "llama-mtmd-cli": summary["cli"]},
                          reference="llama-mtmd-cli", metrics_shown=shown))
    else:
        print("\n".join(f"{label}: {bench.number(summary['ours'][key])}" for key, label, _ in shown))
    print(f"weights read per token {result['weight_bytes_per_token'] / 2**20:,.0f} MiB; bandwidth bound "
          f"{result['bandwidth_bound_tps'] or 0:,.0f} tok/s; decode share of it: " + ", ".join(
              f"{engine} {share:.0%}" for engine, share in result["decode_share_of_bound"].items() if share))
    flash = {engine: all(run["vision_flash_attention"] for run in runs) for engine, runs in result["runs"].items()}
    print(f"vision encoder with flash attention (llama.cpp's log): {flash}", flush=True)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cli_from:
        try:
            args.cli = link_cli(args.cli_from)
        except (OSError, subprocess.CalledProcessError, TypeError) as error:  # TypeError: no source in the cache
            bench.say(f"no llama-mtmd-cli column: linking it failed ({error})")
    sizes = [name for name in args.sizes.split(",") if name and name != "none"]
    if args.checkpoints_only:
        tiny_checkpoints(args.out)
        for name in sizes:
            real_checkpoint(args, name)
        return
    results: dict = {"facts": facts()}
    output = args.out / "gpu_check.json"
    report_facts(results["facts"])
    results["bandwidth"] = memory_bandwidth()
    report_bandwidth(results["bandwidth"])
    results["speed"] = {}
    output.write_text(json.dumps(results, indent=2, default=str))
    for name in sizes:  # each size is reported and saved as soon as it is measured
        try:
            results["speed"][name] = speed(args, name, results["bandwidth"])
        except MeasureFailed as error:
            results["speed"][name] = {"error": str(error)}
            print(f"\n== speed: {name}: {error}")
            continue
        report_speed(results["speed"][name])
        output.write_text(json.dumps(results, indent=2, default=str))
    if not args.skip_parity:  # after the timings, which take longer to redo
        results["parity"] = parity(args)
        report_parity(results["parity"])
        output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {output}")


if __name__ == "__main__":
    main()
