"""The reference implementation our engines are compared against: transformers in fp32 on the CPU (or the
checkpoint's own 16-bit dtype where fp32 would not fit the memory: edgevl.verify), with the checkpoint's own
tokenizer chat template and transformers' own image processor (PIL backend).

Both sides get the same image-token budget, so both see the same grid (see edgevl.families.qwen2vl).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CELL_PIXELS = 28 * 28


class Qwen2VLReference:
    #: the transformers model class; Qwen2.5-VL keeps Qwen2-VL's processor, tokenizer and inputs
    model_class = "Qwen2VLForConditionalGeneration"

    def __init__(self, folder: str | Path, dtype: str = "float32") -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.torch = torch
        self.folder = Path(folder)
        model_class = getattr(transformers, self.model_class)
        self.model = model_class.from_pretrained(self.folder, dtype=getattr(torch, dtype)).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.processor_class = Qwen2VLImageProcessorPil
        self.image_token_id = self.model.config.image_token_id

    def inputs(self, images: list[Image.Image], prompt: str, min_tokens: int, max_tokens: int) -> dict:
        """Model inputs exactly as the released processor would build them."""
        processor = self.processor_class(min_pixels=min_tokens * CELL_PIXELS, max_pixels=max_tokens * CELL_PIXELS)
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        # transformers types a message's content as str only, but its templates take the list of parts too
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],  # type: ignore[arg-type]
                                                  add_generation_prompt=True, tokenize=False)
        assert isinstance(text, str), "tokenize=False gives the prompt text"
        vision = processor(images=images, return_tensors="pt") if images else {}
        for grid in vision.get("image_grid_thw", []):
            n_tokens = int(grid.prod()) // 4
            text = text.replace("<|image_pad|>", "<|placeholder|>" * n_tokens, 1)
        text = text.replace("<|placeholder|>", "<|image_pad|>")
        input_ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        mm_token_type_ids = (input_ids == self.image_token_id).int()
        return {"input_ids": input_ids, "mm_token_type_ids": mm_token_type_ids, **dict(vision)}

    def first_token_logits(self, images, prompt, min_tokens, max_tokens) -> np.ndarray:
        with self.torch.no_grad():
            output = self.model(**self.inputs(images, prompt, min_tokens, max_tokens))
        return output.logits[0, -1].float().numpy()

    def greedy_tokens(self, images, prompt, min_tokens, max_tokens, n_tokens: int) -> list[int]:
        return self.greedy_with_logits(images, prompt, min_tokens, max_tokens, n_tokens)[0]

    def greedy_with_logits(self, images, prompt, min_tokens, max_tokens, n_tokens: int) -> tuple[list[int], np.ndarray]:
        """n_tokens greedy tokens (end-of-text ones included) and the logits that chose them [n_tokens, vocab]."""
        inputs = self.inputs(images, prompt, min_tokens, max_tokens)
        with self.torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=n_tokens, do_sample=False, eos_token_id=None,
                                         pad_token_id=None, output_logits=True, return_dict_in_generate=True)
        tokens = output.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        return tokens, self.torch.stack(output.logits)[:, 0].float().numpy()


class Qwen25VLReference(Qwen2VLReference):
    model_class = "Qwen2_5_VLForConditionalGeneration"
