"""Model cards: every card loads, family defaults merge, and checkpoints are recognised."""

from __future__ import annotations

import pytest

from edgevl import model_cards


def test_every_supported_model_has_a_card():
    ids = {card.id for card in model_cards.all_cards()}
    assert {"qwen2-vl-2b-instruct", "qwen2-vl-7b-instruct", "minicpm-v-2_6", "minicpm-llama3-v-2_5"} <= ids
    for card in model_cards.all_cards():
        assert card.hub_id and card.family in model_cards.families() and card.sizes_mb


def test_qwen2vl_ocr_budget_follows_the_qwen_advice():
    card = model_cards.card_by_id("qwen2-vl-2b-instruct")
    assert 1024 <= card.image_max_tokens("ocr") <= 2048
    assert card.image_max_tokens("caption") < card.image_max_tokens("ocr")
    assert card.image_max_tokens("ask") == card.settings["image_max_tokens"]["default"]
    assert card.settings["chat_template"] == "chatml"


def test_card_values_override_family_values():
    assert model_cards.card_by_id("minicpm-llama3-v-2_5").settings["chat_template"] == "llama3"
    assert model_cards.card_by_id("minicpm-v-2_6").settings["chat_template"] == "chatml"


def test_checkpoints_are_recognised_by_their_config():
    config = {"hidden_size": 1536, "num_hidden_layers": 28}
    assert model_cards.card_for_config("qwen2vl", config).id == "qwen2-vl-2b-instruct"
    assert model_cards.card_for_config("qwen2vl", {"hidden_size": 256, "num_hidden_layers": 2}) is None
    assert model_cards.family_card("qwen2vl").settings["image_min_tokens"] == 4
    with pytest.raises(KeyError, match="no model card"):
        model_cards.card_by_id("gpt-5")


def test_qwen25vl_cards_carry_their_licences_and_the_published_scores():
    three, seven = (model_cards.card_by_id(f"qwen2.5-vl-{size}-instruct") for size in ("3b", "7b"))
    assert (three.license, seven.license) == ("qwen-research", "apache-2.0")  # the 3B is non-commercial
    assert seven.scores["ocrbench"] > model_cards.card_by_id("qwen2-vl-7b-instruct").scores["ocrbench"]
    assert three.scores["docvqa_test"] > model_cards.card_by_id("qwen2-vl-2b-instruct").scores["docvqa_test"]


def test_every_quant_says_the_memory_it_needs():
    for card in model_cards.all_cards():
        quants = {quant for quant in card.sizes_mb if not quant.startswith("mmproj")}
        assert set(card.ram_mb) == quants, card.id
        assert all(isinstance(mb, int) and mb > card.sizes_mb[quant] for quant, mb in card.ram_mb.items()), card.id
        assert set(card.ram_measured) <= set(card.ram_mb), card.id  # the quants whose figure was measured


def test_measured_memory_is_shown_without_the_estimate_mark():
    seven = model_cards.card_by_id("qwen2-vl-7b-instruct")
    assert "q4_k_m" in seven.ram_measured
    assert seven.ram_text("q4_k_m") == f"{seven.ram_mb['q4_k_m'] / 1e3:.1f} GB"
    assert seven.ram_text("f16").startswith("~")
