"""What the parity tests of every backend share: the image shapes, the prompt, the image budget.

Budgets are low (64 image tokens) so that small test images land both below and above the budget."""

from __future__ import annotations

from conftest import noise_image

from edgevl.request import Request, Sampling
from edgevl.verify import cosine  # noqa: F401 - the parity tests' measure, as --verify's

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


#: MiniCPM-V slices by area (448x448 px per piece), so its cases are larger; every backend runs these
MINICPMV_IMAGE_CASES = {
    "small-one-slice": (320, 240),  # under one 448x448 area: upscaled, seen whole
    "wide-screenshot": (1400, 420),  # 3 slices side by side: checks slice order
    "tall-screenshot": (300, 1500),  # 4 slices stacked
}


def minicpmv_image(case: str):
    width, height = MINICPMV_IMAGE_CASES[case]
    return noise_image(width, height, seed=width)


def images_for(case: str) -> tuple:
    return tuple(noise_image(w, h, seed=i + w) for i, (w, h) in enumerate(IMAGE_CASES[case]))


def ocr_request(images: tuple, max_tokens: int = 24) -> Request:
    return Request("ocr", images, PROMPT, sampling=Sampling(max_tokens=max_tokens))
