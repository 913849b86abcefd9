"""Qwen2.5-VL: everything an image goes through before the model is Qwen2-VL's (smart resize to 28 px cells,
the same patches, the same image tokens and M-RoPE positions), so this family is Qwen2-VL's with its own name.

What differs lives in the checkpoint and the converter, not here: the vision encoder attends within windows of
112 px in most blocks and over the whole image in a few (`fullatt_block_indexes`), with RMSNorm and a gated MLP;
and M-RoPE's time axis steps by `tokens_per_second` per second of video - a still image has one time step, so
image positions are exactly Qwen2-VL's.
"""

from __future__ import annotations

from edgevl.families.qwen2vl import Qwen2VL


class Qwen25VL(Qwen2VL):
    """GGUF: llama.cpp with libmtmd (projector `qwen2.5vl_merger`), fed images resized here. ONNX: the three
    exported graphs (the vision graph masks attention to windows), fed by Qwen2VLOnnxImages."""

    name = "qwen25vl"
    engines = Qwen2VL.engines
    imported_gguf = (("qwen2vl", "qwen2.5vl_merger"),)  # as llama.cpp's convert_hf_to_gguf.py writes them
