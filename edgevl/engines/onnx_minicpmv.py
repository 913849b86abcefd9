"""TEMPORARY (until the family redesign lands): MiniCPM-V on the ONNX engine."""

from __future__ import annotations

import time

import numpy as np

from edgevl.engines.base import Request, Stats
from edgevl.engines.minicpmv_vision import VisionSettings
from edgevl.engines.onnx import OnnxEngine
from edgevl.errors import EdgevlError
from edgevl.preprocess import (minicpmv_patches, minicpmv_placeholder, minicpmv_slices, resampler_key_positions,
                               siglip_position_ids)


class MiniCPMVOnnxEngine(OnnxEngine):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.settings = VisionSettings(**self.config["vision"])

    def max_slices(self) -> int:
        limit = int(self.card.settings["max_slices"])
        if self.image_max_tokens:
            limit = min(limit, self.image_max_tokens // self.settings.query_num - 1)
        return max(1, limit)

    def _encode_piece(self, piece) -> np.ndarray:
        settings = self.settings
        patches, (rows, cols) = minicpmv_patches(piece, settings.mean, settings.std, settings.patch)
        one_row = settings.release == "2.5"
        positions = siglip_position_ids(1, rows * cols) if one_row else siglip_position_ids(rows, cols)
        keys = resampler_key_positions(settings.width, rows, cols)
        return self.sessions["vision"].run(None, {"patches": patches, "position_ids": positions,
                                                  "key_positions": keys})[0]

    def _prefill(self, request: Request):
        self.last_stats = stats = Stats()
        settings = self.settings
        started = time.perf_counter()
        sliced = [minicpmv_slices(image, self.max_slices(), settings.slice_size, settings.patch)
                  for image in request.images]
        markers = [minicpmv_placeholder(settings.release, grid, settings.query_num, index) + "\n"
                   for index, (_, _, grid) in enumerate(sliced)]
        pieces = [piece for overview, slices, _ in sliced for piece in (overview, *slices)]
        features = np.concatenate([self._encode_piece(piece) for piece in pieces] or [self._no_features()])
        stats.image_encode_ms = 1000 * (time.perf_counter() - started)

        started = time.perf_counter()
        input_ids = self.tokenizer.encode(self.prompt(request, markers), add_special_tokens=True).ids
        if sum(token == self.config["image_token_id"] for token in input_ids) != len(features):
            raise EdgevlError("the question itself contains image markers; remove them")
        positions = np.arange(len(input_ids), dtype=np.int64)[None, None]
        embeds = self._embed(np.asarray([input_ids], dtype=np.int64), features)
        binding = self.sessions["decoder"].io_binding()
        logits = self._run_decoder(binding, embeds, positions, past=None)
        stats.prompt_tokens = len(input_ids)
        stats.prefill_ms = 1000 * (time.perf_counter() - started)
        return logits, binding, len(input_ids)

    def _decode_step(self, token: int, position: int, binding) -> np.ndarray:
        embeds = self._embed(np.asarray([[token]], dtype=np.int64), self._no_features())
        positions = np.full((1, 1, 1), position, dtype=np.int64)
        return self._run_decoder(binding, embeds, positions, past=binding.get_outputs()[1:])
