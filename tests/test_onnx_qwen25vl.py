"""Qwen2.5-VL exported to ONNX against transformers fp32: Qwen2-VL's ONNX parity tests (same image cases, same
bounds), pointed at the tiny Qwen2.5-VL checkpoint. Its vision graph masks attention to 112 px windows in the
blocks outside fullatt_block_indexes; the over-budget tall screenshot spans several windows, the last partial."""

from __future__ import annotations

import pytest
from test_onnx_qwen2vl import (  # noqa: F401 - pytest collects the imported tests and the engine fixture
    fp32_engine, test_fp32_matches_reference, test_smaller_variants_stay_close_to_fp32,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def family_onnx(qwen25vl_onnx):
    return qwen25vl_onnx


@pytest.fixture(scope="module")
def family_reference(qwen25vl_reference):
    return qwen25vl_reference
