"""What the parity tests of every backend share: the image shapes, the prompt, the image budget.

Budgets are low (64 image tokens) so that small test images land both below and above the budget."""

from __future__ import annotations

import numpy as np
from conftest import noise_image

from edgevl.request import Request, Sampling

MIN_TOKENS, MAX_TOKENS = 4, 64
PROMPT = "Read all the text in the image."

IMAGE_CASES = {
    "smaller-than-56px": [(40, 30)],
    "exact-grid": [(112, 140)],
    "needs-resize": [(150, 101)],
    "tall-screenshot-over-budget": [(180, 900)],
    "wide-over-budget": [(700, 160)],
    "two-images": [(112, 84), (60, 150)],
}


def images_for(case: str) -> tuple:
    return tuple(noise_image(w, h, seed=i + w) for i, (w, h) in enumerate(IMAGE_CASES[case]))


def ocr_request(images: tuple, max_tokens: int = 24) -> Request:
    return Request("ocr", images, PROMPT, sampling=Sampling(max_tokens=max_tokens))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
