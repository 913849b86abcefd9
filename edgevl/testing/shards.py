"""Safetensors shards with an index, as the hub lays checkpoints out - and random ones at the released models' size,
drawn tensor by tensor so that an 8B checkpoint needs about one shard's memory, never the model's.

Random weights cost a converter exactly what trained ones cost (shapes and dtypes are what it reads), so the
real-size measurements of the README use them. The model is built with its parameters on the meta device for
its tensor names and shapes (converters.onnx_export.parameters_on_meta), never initialised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

#: the most bytes a random shard holds (a larger tensor gets a shard of its own): the writer holds one shard
#: and safetensors' serialised copy of it
SHARD_BYTES = 1 << 30
INIT_STD = 0.02  # the released configs' initializer_range


def save_shards(out: Path, shards: list[list[str]], tensor: Callable[[str], torch.Tensor]) -> None:
    """Write each shard's tensors (`tensor(name)` makes one) as model-0000i-of-0000n.safetensors with
    model.safetensors.index.json, or one model.safetensors when there is one shard; each shard's tensors are
    made just before it is written and dropped after."""
    from safetensors.torch import save_file

    weight_map, total, count = {}, 0, len(shards)
    for index, names in enumerate(shards):
        file_name = f"model-{index + 1:05d}-of-{count:05d}.safetensors" if count > 1 else "model.safetensors"
        tensors = {name: tensor(name) for name in names}
        save_file(tensors, str(out / file_name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(names, file_name))
        del tensors
    if count > 1:
        shard_index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(shard_index, indent=2), encoding="utf-8")


def meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """The state dict's names and shapes of the model `build()` makes, which never gets memory for its weights."""
    from edgevl.converters.onnx_export import parameters_on_meta

    with parameters_on_meta():
        model = build()
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def write_random_shards(out: Path, shapes: Mapping[str, tuple[int, ...]], dtype: str, seed: int,
                        shard_bytes: int = SHARD_BYTES) -> None:
    """Random tensors of these names and shapes in `dtype`, saved shard by shard (`save_shards`), deterministic
    for a seed: norm weights near 1 and every bias small but non-zero (a converter that drops or swaps one changes
    the output), everything else normal with the released configs' initializer range."""
    torch_dtype = getattr(torch, dtype)
    item = torch.empty(0, dtype=torch_dtype).element_size()
    shards: list[list[str]] = [[]]
    filled = 0
    for name, shape in shapes.items():
        size = item * torch.Size(shape).numel()
        if shards[-1] and filled + size > shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    generator = torch.Generator().manual_seed(seed)

    def random_tensor(name: str) -> torch.Tensor:
        values = torch.empty(shapes[name], dtype=torch_dtype)
        if "norm" in name or ".ln_" in name:  # LayerNorm / RMSNorm weights and biases
            values.uniform_(-0.2, 0.2, generator=generator)
            return values.add_(1.0) if name.endswith("weight") else values
        if name.endswith("bias"):
            return values.uniform_(-0.05, 0.05, generator=generator)
        return values.normal_(0.0, INIT_STD, generator=generator)

    save_shards(out, shards, random_tensor)
