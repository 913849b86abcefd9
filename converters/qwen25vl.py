"""Qwen2.5-VL (3B, 7B Instruct) -> a `qwen2vl` language-model GGUF and a `qwen2.5vl_merger` mmproj GGUF.

The files are laid out as Qwen2-VL's (same tensor names apart from the vision MLP, same QKV and patch-embedding
splits), so this converter only says what differs in the vision encoder: RMSNorm (eps 1e-6) and a SiLU-gated MLP
in its blocks, window attention in every block but the full-attention ones. llama.cpp describes those as a
period (`clip.vision.n_wa_pattern`: block i attends fully when (i + 1) % period == 0) and uses 112 px windows
whatever the file says, so checkpoints outside that pattern are refused rather than converted into a model that
sees differently.
"""

from __future__ import annotations

import gguf

from edgevl.converters.qwen2vl import Qwen2VLConverter
from edgevl.errors import CheckpointError

LLAMA_CPP_WINDOW_SIZE = 112  # pixels: what mtmd's qwen2.5vl graph uses (every released checkpoint has it)


class Qwen25VLConverter(Qwen2VLConverter):
    architectures = ("Qwen2_5_VLForConditionalGeneration",)
    family = "qwen25vl"
    projector_type = gguf.VisionProjectorType.QWEN25VL

    def __init__(self, checkpoint) -> None:
        super().__init__(checkpoint)
        self.full_attention_period = self._full_attention_period()

    def _full_attention_period(self) -> int:
        """llama.cpp's n_wa_pattern for the checkpoint's fullatt_block_indexes (8 for the released [7, 15, 23, 31])."""
        vision, where = self.vision, f"{self.checkpoint.folder}/config.json"
        if vision.get("window_size", LLAMA_CPP_WINDOW_SIZE) != LLAMA_CPP_WINDOW_SIZE:
            raise CheckpointError(f"{where}: window_size {vision['window_size']} - llama.cpp runs Qwen2.5-VL with "
                                  f"{LLAMA_CPP_WINDOW_SIZE} px windows only")
        full = list(vision.get("fullatt_block_indexes") or [])
        period = full[0] + 1 if full else 0
        # period 1 (no windowed block) makes mtmd abort on a window mask its graph never uses
        if period < 2 or full != list(range(period - 1, vision["depth"], period)):
            raise CheckpointError(f"{where}: fullatt_block_indexes {full} - llama.cpp needs every n-th (n > 1) of "
                                  f"the {vision['depth']} blocks to attend fully (as in the released [7, 15, 23, 31])")
        return period

    def vision_widths(self) -> tuple[int, int]:
        return self.vision["hidden_size"], self.vision["intermediate_size"]

    def _vision_metadata(self, writer: gguf.GGUFWriter, quant) -> None:
        super()._vision_metadata(writer, quant)
        writer.add_vision_use_silu(True)  # the blocks' gated MLP
        writer.add_vision_n_wa_pattern(self.full_attention_period)
        writer.add_vision_window_size(LLAMA_CPP_WINDOW_SIZE)
