"""Model cards: one TOML file per supported model; what a family's models share comes from its family module
(edgevl.families), and a card's own values win over it.

This folder is installed as the package `edgevl.model_cards`. Code asks it for facts (image budgets, chat
template, recommended quant) instead of hard-coding them.
"""

from __future__ import annotations

import functools
import importlib.resources
import sys
from dataclasses import dataclass, field
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # requires-python is 3.10, which has no tomllib
    import tomli as tomllib

from edgevl.families import ENGINES, FAMILIES


@dataclass(frozen=True)
class ModelCard:
    id: str
    name: str
    family: str
    hub_id: str = ""
    architecture: str = ""
    match: dict[str, Any] = field(default_factory=dict)
    parameters_b: float = 0.0
    recommended_quant: str = "q4_k_m"
    license: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    sizes_mb: dict[str, int] = field(default_factory=dict)
    #: memory needed to run the model at a quant (text + mmproj loaded, one OCR request), MB
    ram_mb: dict[str, int] = field(default_factory=dict)
    #: the quants whose ram_mb was measured (the README's real-size table); the others' are estimates from the
    #: file sizes
    ram_measured: list[str] = field(default_factory=list)
    #: family defaults merged with the card's own overrides (chat_template, image budgets, ...)
    settings: dict[str, Any] = field(default_factory=dict)

    def image_max_tokens(self, task: str) -> int:
        """Image-token budget for a task (OCR wants more detail than captioning)."""
        budget = self.settings["image_max_tokens"]
        return int(budget[task] if task in budget else budget["default"]) if isinstance(budget, dict) else int(budget)

    @property
    def checkpoint_mb(self) -> float:
        """The released checkpoint's download: its weights in bf16."""
        return self.parameters_b * 2000

    def ram_text(self, quant: str) -> str:
        """The memory needed at `quant` for people: "~2.9 GB" (~: estimated, not measured), or "?"."""
        ram_mb = self.ram_mb.get(quant)
        return f"{'' if quant in self.ram_measured else '~'}{ram_mb / 1e3:,.1f} GB" if ram_mb else "?"

    @property
    def formats(self) -> list[str]:
        """The formats edgevl runs this model in ("gguf", "onnx")."""
        return sorted({fmt for fmt, family in ENGINES if family == self.family})

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether an HF `config.json` (flattened with its text_config) is this model."""
        return bool(self.match) and all(config.get(key) == value for key, value in self.match.items())


def _read_toml(name: str) -> dict[str, Any]:
    return tomllib.loads(importlib.resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


def families() -> dict[str, dict[str, Any]]:
    """Family name -> the settings every card of that family starts from."""
    return {name: dict(family.settings) for name, family in FAMILIES.items()}


@functools.cache
def all_cards() -> tuple[ModelCard, ...]:
    cards = []
    card_fields = set(ModelCard.__dataclass_fields__) - {"settings"}
    for entry in sorted(importlib.resources.files(__name__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        data = _read_toml(entry.name)
        own = {key: value for key, value in data.items() if key in card_fields}
        overrides = {key: value for key, value in data.items() if key not in card_fields}
        settings = {**families()[data["family"]], **overrides}
        cards.append(ModelCard(**own, settings=settings))
    return tuple(cards)


def card_by_id(card_id: str) -> ModelCard:
    for card in all_cards():
        if card.id == card_id:
            return card
    raise KeyError(f"no model card {card_id!r}; known: {', '.join(c.id for c in all_cards())}")


def card_for_config(family: str, config: dict[str, Any]) -> ModelCard | None:
    """The released model a checkpoint is, or None for sizes we have no card for (fine-tunes of new sizes)."""
    return next((card for card in all_cards() if card.family == family and card.matches(config)), None)


def family_card(family: str) -> ModelCard:
    """A card holding only a family's defaults, for checkpoints that match no released model (e.g. test fixtures)."""
    return ModelCard(id=f"{family}-custom", name=f"custom {family} model", family=family, settings=families()[family])
