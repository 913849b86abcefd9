"""MiniCPM-V 2.5 / 2.6: the released slicing rules (hand-computed cases), the tiny checkpoints in the released
layout, and the transformers-parts reference that later parity tests compare llama.cpp against."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgevl.families.minicpmv import (find_best_resize, get_refine_size, get_sliced_grid, minicpmv25_placeholder,
                                      minicpmv26_placeholder, minicpmv_slices)
from conftest import noise_image


# --- slicing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, grid", [
    ((448, 448), None),       # exactly one 448² area: seen whole
    ((448, 447), None),       # just under
    ((449, 448), (2, 1)),     # just over: ceil(area) = 2 -> candidates 1x2, 2x1, 1x3, 3x1; log ratio picks 2x1
    ((1344, 448), (3, 1)),    # area 3, aspect 3:1
    ((300, 1500), (1, 4)),    # area 2.24 -> n in {2,3,4}; log(1/5) is closest to log(1/4)
    ((20, 20), None),
    ((4000, 4000), (3, 3)),   # capped at 9 slices: candidates of 8 and 9 only
])
def test_sliced_grid(size, grid):
    assert get_sliced_grid(size) == grid


def test_best_resize_and_refine_size_by_hand():
    # 300x1500 overview: r = 0.2, h = int(448/sqrt(0.2)) = 1001, w = int(200.2) = 200 -> 196 x 1008 (71.5 rounds to 72)
    assert find_best_resize((300, 1500), 448, 14) == (196, 1008)
    # its 1x4 cells are 300x375 -> r = 0.8, h = int(500.9) = 500, w = 400 -> 406 x 504 each
    assert get_refine_size((300, 1500), (1, 4), 448, 14, allow_upscale=True) == (406, 4 * 504)
    # small images are only rounded to whole patches unless upscaling is allowed
    assert find_best_resize((20, 20), 448, 14) == (14, 14)
    assert find_best_resize((20, 20), 448, 14, allow_upscale=True) == (448, 448)


@pytest.mark.parametrize("size, overview, slice_size, count", [
    ((448, 448), (448, 448), None, 0),
    ((20, 20), (448, 448), None, 0),          # upscaled
    ((1344, 448), (770, 252), (448, 448), 3),  # overview: h = int(448/sqrt(3)) = 258 -> 252, w = 774 -> 770
    ((300, 1500), (196, 1008), (406, 504), 4),
    ((449, 448), (448, 448), (322, 630), 2),
])
def test_slices(size, overview, slice_size, count):
    image, slices, grid = minicpmv_slices(noise_image(*size))
    assert image.size == overview
    assert len(slices) == count == (0 if grid is None else grid[0] * grid[1])
    assert all(s.size == slice_size for s in slices)


def test_slices_are_row_major():
    """The 2x2 grid of a 896x896 image: slice k is the k-th cell reading left to right, top to bottom."""
    quadrants = np.zeros((896, 896, 3), dtype=np.uint8)
    for k, (top, left) in enumerate([(0, 0), (0, 448), (448, 0), (448, 448)]):
        quadrants[top:top + 448, left:left + 448] = 60 * (k + 1)
    from PIL import Image

    _, slices, grid = minicpmv_slices(Image.fromarray(quadrants))
    assert grid == (2, 2)
    assert [int(np.asarray(s)[200, 200, 0]) for s in slices] == [60, 120, 180, 240]


def test_placeholders():
    unk = "<unk>" * 2
    assert minicpmv26_placeholder(None, 2, 3) == f"<image_id>3</image_id><image>{unk}</image>"
    assert minicpmv26_placeholder((2, 2), 2, use_image_id=False) == (
        f"<image>{unk}</image>"
        f"<slice>{unk}</slice><slice>{unk}</slice>\n<slice>{unk}</slice><slice>{unk}</slice>")
    assert minicpmv25_placeholder(None, 2) == f"<image>{unk}</image>"
    assert minicpmv25_placeholder((2, 2), 2) == (
        f"<image>{unk}</image>"
        f"<slice><image>{unk}</image><image>{unk}</image>\n<image>{unk}</image><image>{unk}</image></slice>")


# --- checkpoints and reference ---------------------------------------------------------------------------------

@pytest.fixture(params=["2.6", "2.5"])
def minicpmv(request, minicpmv_checkpoint, minicpmv_reference):
    return minicpmv_checkpoint(request.param), minicpmv_reference(request.param)


@pytest.mark.slow
def test_checkpoint_has_the_released_layout(minicpmv):
    from safetensors import safe_open

    folder, reference = minicpmv
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MiniCPMV"] and config["model_type"] == "minicpmv"
    assert config["query_num"] == {"2.6": 64, "2.5": 96}[reference.version]
    assert config["hidden_size"] % 128 == 0
    names = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            names.update(f.keys())
    assert names == set(reference.model.state_dict())  # and load_minicpmv refused any mismatch
    for name in ["vpm.embeddings.patch_embedding.weight", "vpm.embeddings.position_embedding.weight",
                 "vpm.encoder.layers.1.self_attn.q_proj.weight", "vpm.post_layernorm.weight",
                 "resampler.query", "resampler.kv_proj.weight", "resampler.attn.in_proj_weight",
                 "resampler.attn.in_proj_bias", "resampler.attn.out_proj.weight", "resampler.ln_q.weight",
                 "resampler.ln_kv.bias", "resampler.ln_post.weight", "resampler.proj",
                 "llm.model.embed_tokens.weight", "llm.model.layers.1.mlp.gate_proj.weight", "llm.model.norm.weight",
                 "llm.lm_head.weight"]:
        assert name in names
    assert {n.split(".")[0] for n in names} == {"vpm", "resampler", "llm"}


@pytest.mark.slow
def test_special_tokens_are_single_tokens(minicpmv):
    _, reference = minicpmv
    specials = ["<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>", "<unk>", "\n"]
    if reference.version == "2.5":
        specials += ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        assert reference.tokenizer.convert_tokens_to_ids(["<|begin_of_text|>", "<image>", "<slice>"]) == [
            128000, 128010, 128020]
    else:
        specials += ["<|im_start|>", "<|im_end|>"]
    for token in specials:
        assert len(reference.tokenizer.encode(token, add_special_tokens=False)) == 1, token


@pytest.mark.slow
def test_resampler_position_embedding_is_the_2d_sincos_formula(minicpmv):
    _, reference = minicpmv
    dim, rows, cols = 256, 3, 5
    from edgevl.families.minicpmv import resampler_key_positions

    table = resampler_key_positions(dim, rows, cols)
    omega = [1 / 10000 ** (i / (dim / 4)) for i in range(dim // 4)]
    for h in range(rows):
        for w in range(cols):
            expected = ([math.sin(w * o) for o in omega] + [math.cos(w * o) for o in omega]
                        + [math.sin(h * o) for o in omega] + [math.cos(h * o) for o in omega])
            np.testing.assert_allclose(table[h * cols + w], expected, atol=2e-6)


@pytest.mark.slow
def test_placeholder_count_and_order_in_the_prompt(minicpmv):
    _, reference = minicpmv
    input_ids, pieces = reference.input_ids([noise_image(1344, 448)], "Read the text.")
    bounds = reference.feature_bounds(input_ids)
    assert len(pieces) == len(bounds) == 4  # overview + 3 slices
    assert all(end - start == reference.query_num for start, end in bounds)
    unk = reference.tokenizer.convert_tokens_to_ids("<unk>")
    assert input_ids.count(unk) == 4 * reference.query_num
    assert [start for start, _ in bounds] == sorted(start for start, _ in bounds)


@pytest.mark.slow
def test_image_changes_the_logits(minicpmv):
    _, reference = minicpmv
    first = reference.first_token_logits([noise_image(448, 448, seed=1)], "Describe.")
    second = reference.first_token_logits([noise_image(448, 448, seed=2)], "Describe.")
    assert np.isfinite(first).all()
    assert np.abs(first - second).max() > 1e-4


@pytest.mark.slow
def test_slice_order_matters(minicpmv):
    """Swapping two slices' features must change the answer, or a parity test could not catch a wrong order."""
    import torch

    _, reference = minicpmv
    image = noise_image(1344, 448, seed=3)
    _, embeds = reference.inputs([image], "Describe.")
    input_ids, _ = reference.input_ids([image], "Describe.")
    (a0, a1), (b0, b1) = reference.feature_bounds(input_ids)[1:3]
    swapped = embeds.clone()
    swapped[0, a0:a1], swapped[0, b0:b1] = embeds[0, b0:b1], embeds[0, a0:a1]
    with torch.no_grad():
        logits = reference.model.llm(inputs_embeds=embeds).logits[0, -1]
        logits_swapped = reference.model.llm(inputs_embeds=swapped).logits[0, -1]
    assert (logits - logits_swapped).abs().max() > 1e-5


@pytest.mark.slow
def test_greedy_generation(minicpmv):
    _, reference = minicpmv
    tokens = reference.greedy_tokens([noise_image(300, 1500)], "What is written here?", 4)
    assert len(tokens) == 4
    assert all(0 <= t < reference.config["vocab_size"] for t in tokens)
    logits = reference.first_token_logits([noise_image(300, 1500)], "What is written here?")
    assert tokens[0] == int(np.argmax(logits))


@pytest.mark.slow
def test_one_row_layout_keeps_the_patches_in_row_major_order(minicpmv):
    """2.5 feeds the vision tower the released one-row layout; its patch embeddings must be the image's patches
    in row-major order (only the position ids differ from 2.6's 2-D input)."""
    import torch

    from edgevl.testing.minicpmv import patches_in_one_row

    _, reference = minicpmv
    pixels = reference.normalise(noise_image(42, 28))
    conv = reference.model.vpm.embeddings.patch_embedding
    with torch.no_grad():
        two_d = conv(pixels[None]).flatten(2)
        one_row = conv(patches_in_one_row(pixels, 14)[None]).flatten(2)
    torch.testing.assert_close(one_row, two_d)


@pytest.mark.slow
def test_drop_vision_last_layer_is_honoured(minicpmv, tmp_path):
    from edgevl.testing.minicpmv import load_minicpmv

    folder, reference = minicpmv
    for file in folder.iterdir():
        (tmp_path / file.name).symlink_to(file)
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({**config, "drop_vision_last_layer": True}))
    layers = config["vision_config"]["num_hidden_layers"]
    assert len(load_minicpmv(tmp_path).vpm.encoder.layers) == layers - 1
    assert len(reference.model.vpm.encoder.layers) == layers
