"""Model families: the registry ((format, family) -> engine), what a family module holds (card defaults, prompt
wording, image hooks), that nothing outside edgevl/families/ compares family names, and MiniCPM-V checkpoints
whose config.json has no `version`."""

from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgevl
from edgevl import api, model_cards
from edgevl.engines.base import ModelFolderEngine
from edgevl.errors import CheckpointError, ModelError
from edgevl.families import ENGINES, FAMILIES, engine_class, get_family, wording
from edgevl.families.base import EncodedImages, Family
from edgevl.families.minicpmv import VisionSettings, minicpmv_placeholder
from edgevl.families.qwen2vl import Qwen2VLOnnxImages, image_placeholder
from edgevl.manifest import FileEntry, Manifest, write_manifest
from edgevl.tasks import get_task
from edgevl.tasks.ocr import DEFAULT_PROMPT

ROOT = Path(edgevl.__file__).parent.parent


def test_every_registered_engine_is_a_model_folder_engine_of_its_format() -> None:
    assert {("gguf", "qwen2vl"), ("onnx", "qwen2vl"), ("gguf", "minicpmv"), ("onnx", "minicpmv")} <= set(ENGINES)
    for (fmt, family), _ in ENGINES.items():
        engine = engine_class(fmt, family)
        assert issubclass(engine, ModelFolderEngine) and engine.format == fmt


def test_unknown_format_or_family_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="cannot run qwen2vl models in safetensors format; qwen2vl models run as "
                                         "gguf, onnx"):
        engine_class("safetensors", "qwen2vl")
    with pytest.raises(ModelError, match="unknown model family 'llava'; this version of edgevl knows qwen2vl"):
        get_family("llava")


def test_open_engine_refuses_a_folder_no_engine_runs(tmp_path: Path) -> None:
    files = {"text": FileEntry("llava.gguf", 0, "0" * 64)}  # a manifest must list files (model_files.py)
    write_manifest(tmp_path, Manifest(format="gguf", family="llava", quant="q4_k_m", files=files))
    with pytest.raises(ModelError, match="cannot run llava models in gguf format"):
        api.open_engine(tmp_path)


def test_model_cards_start_from_their_family_module_settings() -> None:
    assert model_cards.families() == {name: dict(family.settings) for name, family in FAMILIES.items()}
    card = model_cards.card_by_id("minicpm-llama3-v-2_5")
    assert card.settings["max_slices"] == FAMILIES["minicpmv"].settings["max_slices"]


def test_tasks_take_a_family_wording_where_it_has_one() -> None:
    assert wording("minicpmv", "ocr", "default") == FAMILIES["minicpmv"].prompts["ocr"]
    assert wording("qwen2vl", "ocr", "default") == wording("classic", "ocr", "default") == "default"
    assert get_task("ocr").prompt("qwen2vl") == get_task("ocr").prompt("some-server-model") == DEFAULT_PROMPT
    assert get_task("table").prompt("minicpmv") == FAMILIES["minicpmv"].prompts["table"]


def test_family_names_are_compared_only_inside_the_family_modules() -> None:
    comparison = re.compile(r"family\s*[!=]=|[!=]=\s*[\w.]*family\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("edgevl", "gui", "converters")
        for path in (ROOT / folder).rglob("*.py") if "families" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if comparison.search(line)
    ]
    assert offenders == []


def test_qwen2vl_resize_follows_the_budget_and_minicpmv_leaves_images_to_its_slicing() -> None:
    image = Image.new("RGB", (1000, 700))
    assert FAMILIES["qwen2vl"].resize(image, (4, 64)).size == (252, 168)  # 9 x 6 cells of 28 px
    assert FAMILIES["minicpmv"].resize(image, (4, 64)) is image


def test_qwen2vl_onnx_hooks_place_one_pad_per_image_token_on_an_m_rope_grid() -> None:
    config = {"merge_size": 2, "patch_size": 14, "temporal_patch_size": 2, "hidden_size": 8, "image_token_id": 9,
              "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    seen = []

    def vision(inputs: dict[str, np.ndarray]) -> np.ndarray:
        seen.append(inputs["image_grid_thw"].tolist())
        return np.ones((len(inputs["pixel_values"]) // 4, 8), dtype=np.float32)

    encoded = Qwen2VLOnnxImages(config).encode([Image.new("RGB", (56, 84))], (4, 64), vision)
    assert seen == [[[1, 6, 4]]] and encoded.features.shape == (6, 8)
    assert encoded.markers == [image_placeholder(6)] and encoded.layouts == [(1, 6, 4)]
    positions = Qwen2VLOnnxImages(config).position_ids([1] + [9] * 6 + [2], encoded)
    assert positions.shape == (3, 8) and positions[:, -1].tolist() == [4, 4, 4]  # 1 + max(3 rows, 2 columns)


def test_minicpmv_onnx_hooks_encode_the_overview_then_the_slices_and_count_positions_up() -> None:
    settings = VisionSettings(release="2.6", query_num=4, width=8, layers=1, heads=1, eps=1e-6, patch=14,
                              slice_size=448, mean=[0.5] * 3, std=[0.5] * 3)
    hooks = FAMILIES["minicpmv"].onnx_images({"vision": asdict(settings)})
    seen = []

    def vision(inputs: dict[str, np.ndarray]) -> np.ndarray:
        seen.append({name: value.shape for name, value in inputs.items()})
        return np.full((4, 8), len(seen), dtype=np.float32)

    wide = Image.new("RGB", (1400, 420))
    encoded = hooks.encode([wide], (0, 960), vision)
    assert len(seen) == 4  # the overview, then 3 slices side by side
    assert all(shape["patches"][0] == shape["position_ids"][0] == shape["key_positions"][0] for shape in seen)
    assert encoded.features.shape == (16, 8) and encoded.features[::4, 0].tolist() == [1, 2, 3, 4]
    assert encoded.markers == [minicpmv_placeholder("2.6", (3, 1), 4, 0) + "\n"]
    assert hooks.position_ids([7] * 20, encoded).tolist() == [list(range(20))]
    seen.clear()
    assert hooks.encode([wide], (0, 2 * 4), vision).features.shape == (4, 8) and len(seen) == 1  # seen whole


def test_families_without_an_onnx_route_say_so() -> None:
    class TextOnly(Family):
        name, settings, engines = "text-only", {}, {}

    with pytest.raises(ModelError, match="cannot run text-only models exported to ONNX yet"):
        TextOnly().onnx_images({})


def test_encoded_images_of_no_image_are_empty() -> None:
    config = {"merge_size": 2, "hidden_size": 8}
    encoded = Qwen2VLOnnxImages(config).encode([], (4, 64), lambda inputs: pytest.fail("no image to encode"))
    assert encoded == EncodedImages(encoded.features, [], []) and encoded.features.shape == (0, 8)


def test_qwen25vl_sees_images_as_qwen2vl_runs_both_formats_and_knows_its_released_sizes() -> None:
    image = Image.new("RGB", (1000, 700))
    assert FAMILIES["qwen25vl"].resize(image, (4, 64)).size == FAMILIES["qwen2vl"].resize(image, (4, 64)).size
    assert engine_class("gguf", "qwen25vl").__name__ == "LlamaCppEngine"
    assert ENGINES["onnx", "qwen25vl"] == ENGINES["onnx", "qwen2vl"]
    released = {"qwen2.5-vl-3b-instruct": (2048, 36), "qwen2.5-vl-7b-instruct": (3584, 28)}
    for card_id, (hidden_size, layers) in released.items():
        config = {"hidden_size": hidden_size, "num_hidden_layers": layers}
        assert model_cards.card_for_config("qwen25vl", config).id == card_id


# ---------------------------------------------------------------------------------- MiniCPM-V without `version`


def checkpoint_config_only(folder: Path, config: dict) -> Path:
    """A checkpoint folder with this config.json and an empty safetensors file: enough to pick its converter."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    return folder


def minicpmv_config(hidden_size: int, query_num: int) -> dict:
    vision = {"hidden_size": 1152, "num_hidden_layers": 27, "num_attention_heads": 16, "intermediate_size": 4304}
    return {"architectures": ["MiniCPMV"], "hidden_size": hidden_size, "num_hidden_layers": 32,
            "num_attention_heads": 32, "vocab_size": 128256, "intermediate_size": 14336, "query_num": query_num,
            "vision_config": vision}


def test_a_released_2_5_config_without_version_is_read_as_2_5_and_says_why(tmp_path: Path, caplog) -> None:
    pytest.importorskip("gguf")
    from edgevl.converters import open_converter

    folder = checkpoint_config_only(tmp_path / "MiniCPM-Llama3-V-2_5", minicpmv_config(4096, 96))
    with caplog.at_level(logging.WARNING):
        converter = open_converter(folder)
    assert converter.version == "2.5" and converter.llama_cpp_version == 2
    assert converter.card is not None and converter.card.id == "minicpm-llama3-v-2_5"
    assert converter.prompt_settings() == {"chat_template": "llama3", "system_prompt": ""}
    assert "no 'version'; converting it as 2.5" in caplog.text and "LLM width 4096, 96 resampler queries" in caplog.text


def test_a_2_0_shaped_config_without_version_is_refused_clearly(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from edgevl.converters import open_converter

    folder = checkpoint_config_only(tmp_path / "MiniCPM-V-2", minicpmv_config(2304, 64))
    with pytest.raises(CheckpointError, match=r"no 'version' and the model looks like MiniCPM-V 2.0 \(LLM width 2304, "
                                              r"64 resampler queries\), which edgevl does not convert; edgevl converts "
                                              r"2.5"):
        open_converter(folder)


def test_benchmark_sizes_keep_qwen25vl_full_attention_period():
    from edgevl.testing.qwen25vl import QWEN25VL_3B

    assert QWEN25VL_3B.shortened(4, 8).fullatt_block_indexes == (7,)  # block 8 of 8, as every 8th in the release
    assert QWEN25VL_3B.shortened(4, 16).fullatt_block_indexes == (7, 15)
    assert QWEN25VL_3B.shortened(4, 8).hidden_size == 2048


def test_vision_encode_estimate_grows_with_the_square_of_the_budget():
    from edgevl.families.qwen2vl import vision_encode_seconds

    assert round(vision_encode_seconds(1000)) == 63  # the measurement the speed constant comes from
    assert vision_encode_seconds(4096) > 8 * vision_encode_seconds(1024) > 16 * vision_encode_seconds(128)


def test_the_registry_and_the_api_import_no_numpy():
    """The desktop app imports these at start-up (before any model is opened); numpy's import alone is ~0.15 s."""
    script = ("import sys; import edgevl.api, edgevl.families, edgevl.model_cards, edgevl.tasks; "
              "print(sorted(name for name in sys.modules if name.split('.')[0] == 'numpy')[:3])")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
