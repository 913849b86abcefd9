"""`--verify`: after a conversion, the converted model and the checkpoint's reference implementation read the same
two drawn probe images (a text screenshot and a ruled table), and their answers are compared.

Three numbers per probe: the cosine of the first answer token's logits, the share of 32 teacher-forced steps whose
top token is the reference's (the converted model is fed the reference's greedy tokens), and the greedy match
length (how many of those 32 tokens greedy decoding of the converted model reproduces; it is the leading run of
agreeing steps, since greedy decoding takes the same steps while the choices agree). Each quant has thresholds
(those of the parity tests, see THRESHOLDS); a result below them is stored and shown as a warning, not an error:
the model folder is kept either way.

The reference is transformers on the CPU (edgevl.testing: the released classes for Qwen2-VL and Qwen2.5-VL,
MiniCPM-V assembled from transformers parts), in fp32, or in the checkpoint's own 16-bit dtype where fp32 would
not fit the free memory. Without torch and transformers, or without the memory, verification is skipped and the
reason stored.
"""

from __future__ import annotations

import gc
import importlib.util
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

import edgevl
from edgevl.drawing import render_table, render_text
from edgevl.engines.base import ModelFolderEngine
from edgevl.manifest import Manifest, read_manifest, write_manifest
from edgevl.request import Request, Sampling

#: teacher-forced steps per probe
PROBE_TOKENS = 32
#: image-token budget of both sides: the probes are small, so this only keeps a full-size reference quick
PROBE_IMAGE_TOKENS = 256
#: the reference's memory from its weights' bytes: activations, Python and torch's own on top (a rough rule; the
#: tiny test checkpoint's verification, reference and converted model together, peaks at 0.84 GB RSS)
REFERENCE_OVERHEAD, REFERENCE_BASE_BYTES = 1.2, 1 << 30
#: the converted model's memory from its files' bytes: ONNX Runtime widens fp16 weights for the CPU (the 2B fp16
#: ONNX model next to an fp32 reference went past 19 GB RSS when this was counted once)
ENGINE_OVERHEAD = 2


@dataclass(frozen=True)
class Thresholds:
    """The lowest first-token cosine and top-1 agreement (0..1) a conversion at one quant passes with."""

    cosine: float
    top1: float


#: by quant: the parity tests' cosines (tests/test_parity_*.py, tests/test_onnx_*.py: f32 to 2e-3 of the logits,
#: f16 and q8_0 0.999, q4_k_m and int4 0.98); top-1 agreement loosens as the quant coarsens
THRESHOLDS = {
    "f32": Thresholds(0.9999, 0.95), "fp32": Thresholds(0.9999, 0.95),
    "f16": Thresholds(0.999, 0.9), "fp16": Thresholds(0.999, 0.9), "bf16": Thresholds(0.999, 0.9),
    "q8_0": Thresholds(0.999, 0.9),
    "q6_k": Thresholds(0.99, 0.85), "q5_k_m": Thresholds(0.99, 0.85),
}
COARSE = Thresholds(0.98, 0.75)  # q4_k_m, int4 and anything coarser


def thresholds_for(quant: str, reference_dtype: str) -> Thresholds:
    """A 16-bit reference is itself rounded: against it, a full-precision conversion gets the 16-bit thresholds."""
    if reference_dtype != "float32" and quant in ("f32", "fp32"):
        quant = "f16"
    return THRESHOLDS.get(quant, COARSE)


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    cosine: float
    top1: float  # share of the PROBE_TOKENS steps
    greedy_match: int  # of PROBE_TOKENS


@dataclass(frozen=True)
class Verification:
    """What the manifest stores under "verification"."""

    status: str  # "passed", "below" (under the thresholds) or "skipped"
    reason: str = ""  # why skipped, or what fell below
    reference: str = ""  # "transformers float32, CPU"
    thresholds: dict[str, float] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    edgevl_version: str = edgevl.__version__

    def short(self) -> str:
        """A table cell: "ok 0.9931" (the lowest cosine), "LOW 0.4102" or "skipped"."""
        if self.status == "skipped":
            return "skipped"
        return f"{'ok' if self.status == 'passed' else 'LOW'} {min(p['cosine'] for p in self.probes):.4f}"

    def summary(self) -> str:
        """One line: `edgevl models`, the GUI and the convert command show it."""
        if self.status == "skipped":
            return f"verification skipped: {self.reason}"
        worst = (f"cosine {min(p['cosine'] for p in self.probes):.4f}, top-1 "
                 f"{min(p['top1'] for p in self.probes):.0%}, greedy {min(p['greedy_match'] for p in self.probes)}"
                 f"/{PROBE_TOKENS}")
        return f"verified {'ok' if self.status == 'passed' else 'BELOW THRESHOLDS'}: {worst} vs {self.reference}"


def probe_images() -> dict[str, tuple[Image.Image, str]]:
    """The probes: name -> (image, prompt). Small enough for MiniCPM-V to see each whole, in one piece."""
    text = render_text(["Invoice 2024-0193", "Total due: 1,284.50 EUR", "Pay by 15 March"])
    table = render_table([["Item", "Qty", "Price"], ["Paper A4", "12", "4.20"], ["Toner", "1", "61.90"]])
    return {"text": (text, "Read all the text in the image."),
            "table": (table, "Read the table in the image as Markdown.")}


def skip_reason(manifest: Manifest) -> str | None:
    """Why the reference cannot run here, or None."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        return f"the reference needs {' and '.join(missing)} (pip install 'edgevl[export]')"
    if manifest.family not in REFERENCES:
        return f"no reference implementation for the {manifest.family} family"
    return None


def reference_dtype(checkpoint: Path, manifest: Manifest) -> tuple[str | None, str]:
    """("float32" or the checkpoint's 16-bit dtype, "") when the reference fits the free memory next to the
    converted model; else (None, why)."""
    from edgevl.converters.checkpoint import Checkpoint

    tensors = Checkpoint(checkpoint).tensors.values()
    parameters = sum(math.prod(tensor.shape) for tensor in tensors)
    stored = {tensor.dtype for tensor in tensors}
    free = psutil.virtual_memory().available - ENGINE_OVERHEAD * manifest.total_bytes()
    options = [("float32", 4)] + [(name, 2) for dtype, name in (("BF16", "bfloat16"), ("F16", "float16"))
                                  if stored == {dtype}]
    for name, width in options:
        needed = parameters * width * REFERENCE_OVERHEAD + REFERENCE_BASE_BYTES
        if needed <= free:
            return name, ""
    return None, (f"the reference needs {needed / 1e9:,.1f} GB of memory in {name}, {max(free, 0) / 1e9:,.1f} GB "
                  "are free")


def verify_conversion(folder: str | Path, checkpoint: str | Path | None = None, *,
                      threads: int | None = None) -> Verification:
    """Compare the converted model in `folder` with the reference of `checkpoint` (default: the one it was
    converted from, as the manifest says); store the result in the manifest and return it."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    source = checkpoint or manifest.source.get("path")
    if not isinstance(source, (str, Path)) or not (Path(source).expanduser() / "config.json").is_file():
        return Verification("skipped", "the checkpoint it was converted from is not here (imported files?)")
    checkpoint = Path(source).expanduser()
    reason = skip_reason(manifest)
    dtype = None
    if reason is None:
        dtype, reason = reference_dtype(checkpoint, manifest)
    if dtype is None:
        verification = Verification("skipped", reason)
    else:
        try:
            verification = _compare(checkpoint, folder, manifest, dtype, threads)
        except Exception as error:  # noqa: BLE001 - the conversion is done and kept whatever fails here
            verification = Verification("skipped", f"the comparison failed ({type(error).__name__}: {error})")
    store(folder, verification)
    return verification


def _compare(checkpoint: Path, folder: Path, manifest: Manifest, dtype: str, threads: int | None) -> Verification:
    from edgevl.api import open_engine

    limits = thresholds_for(manifest.quant, dtype)
    results = []
    with open_engine(folder, threads=threads, gpu=False, image_max_tokens=PROBE_IMAGE_TOKENS) as engine:
        assert isinstance(engine, ModelFolderEngine), "a model folder opens a model-folder engine"
        min_tokens, max_tokens = engine.image_budget("ocr")
        reference = REFERENCES[manifest.family](checkpoint, dtype)
        for name, (image, prompt) in probe_images().items():
            expected, expected_logits = reference([image], prompt, min_tokens, max_tokens)
            request = Request("ocr", (image,), prompt, sampling=Sampling(max_tokens=PROBE_TOKENS))
            ours = engine.teacher_forced_logits(request, expected[:-1])
            results.append(compare(name, ours, expected, expected_logits[0]))
        del reference
        gc.collect()
    low = [f"{r.probe}: cosine {r.cosine:.4f}, top-1 {r.top1:.0%}" for r in results
           if r.cosine < limits.cosine or r.top1 < limits.top1]
    return Verification("below" if low else "passed",
                        "; ".join(low) + f" (needs cosine {limits.cosine}, top-1 {limits.top1:.0%})" if low else "",
                        f"transformers {dtype}, CPU", asdict(limits), [asdict(r) for r in results])


def compare(name: str, ours: np.ndarray, expected: list[int], expected_first: np.ndarray) -> ProbeResult:
    """ours: [len(expected), vocab] teacher-forced logits; expected: the reference's greedy tokens."""
    # the vocabularies may differ in padding rows (MiniCPM-V pads its embedding), which no one ever picks
    width = min(ours.shape[1], len(expected_first))
    agree = ours.argmax(axis=1) == np.asarray(expected)
    greedy_match = int(agree.argmin()) if not agree.all() else len(agree)
    return ProbeResult(name, round(cosine(ours[0, :width], expected_first[:width]), 6), round(float(agree.mean()), 4),
                       greedy_match)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms else 0.0  # all-zero logits (a broken model) point nowhere: no match


def store(folder: Path, verification: Verification) -> None:
    write_manifest(folder, replace(read_manifest(folder), verification=asdict(verification)))


def awaits_verification(manifest: Manifest) -> bool:
    """Converted here from a checkpoint (imported GGUF files have none to compare with) and not yet verified: a
    pull that found its model already converted does not compare it again."""
    return "path" in manifest.source and stored_verification(manifest) is None


def stored_verification(manifest: Manifest) -> Verification | None:
    """The manifest's verification (None: not verified), or None for a record this edgevl cannot read."""
    try:
        return Verification(**manifest.verification) if manifest.verification else None
    except TypeError:
        return None


# ---- the references: (images, prompt, min image tokens, max image tokens) -> (greedy tokens, their logits) ------

def _qwen_reference(class_name: str):
    def load(checkpoint: Path, dtype: str):
        from edgevl.testing import reference

        model = getattr(reference, class_name)(checkpoint, dtype)
        return lambda images, prompt, low, high: model.greedy_with_logits(images, prompt, low, high, PROBE_TOKENS)

    return load


def _minicpmv_reference(checkpoint: Path, dtype: str):
    from edgevl.testing.minicpmv import MiniCPMVReference

    model = MiniCPMVReference(checkpoint, dtype)
    # MiniCPM-V's slices follow its preprocessor config; the probes are small enough to be seen whole
    return lambda images, prompt, low, high: model.greedy_with_logits(images, prompt, PROBE_TOKENS)


REFERENCES = {"qwen2vl": _qwen_reference("Qwen2VLReference"), "qwen25vl": _qwen_reference("Qwen25VLReference"),
              "minicpmv": _minicpmv_reference}
