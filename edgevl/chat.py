"""Chat templates, written out in code so the prompt is exactly what the model was trained on.

The model card names the template family. Images come first in the user turn, as in the models' own examples;
each engine passes its media marker (llama.cpp's mtmd expands it to the image tokens and the wrapping
vision-start/end tokens; the ONNX engine passes the expanded image-pad run). No BOS here: the tokenizer adds it
where the vocabulary asks for one (Llama-3).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgevl.errors import EdgevlError

#: the token that ends a turn in each template: the model stops there (as well as at its end-of-sequence token)
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


def format_prompt(template: str, system: str | None, user_text: str, image_markers: Sequence[str]) -> str:
    """The whole prompt for one user turn; `image_markers` holds each image's text in the order of the images."""
    images = "".join(image_markers)
    if template == "chatml":
        system_turn = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        return f"{system_turn}<|im_start|>user\n{images}{user_text}<|im_end|>\n<|im_start|>assistant\n"
    if template == "llama3":
        system_turn = f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>" if system else ""
        return (
            f"{system_turn}<|start_header_id|>user<|end_header_id|>\n\n{images}{user_text}"
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    raise EdgevlError(f"unknown chat template {template!r} in the model card")
