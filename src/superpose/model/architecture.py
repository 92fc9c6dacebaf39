"""The one place that knows where each model family keeps its parts.

Everything else asks a `StackAdapter` for embeddings, decoder layers, final norm and head, and
runs a decoder layer through it with the right mask, positions (rotary where used) and cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import (
    GPT2LMHeadModel,
    LlamaForCausalLM,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2ForCausalLM,
)
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask


class UnsupportedModelError(ValueError):
    """The model's family is not one superpose knows how to run layer by layer."""


class IncompatibleModelsError(ValueError):
    """Base and expert cannot be superposed (different architecture or shapes)."""


@dataclass
class LayerContext:
    """Per-forward inputs every decoder layer of one stack needs."""

    position_ids: torch.Tensor  # (B, T)
    masks: dict[str, object] = field(default_factory=dict)  # layer type -> mask (tensor, None or BlockMask)
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None  # rotary (cos, sin)


def _attribute_path(model: nn.Module, path: str) -> object | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class StackAdapter:
    """Uniform access to one frozen causal LM ("stack")."""

    required: tuple[str, ...] = ()
    layer_prefix_format = ""

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.config = model.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.head.weight.shape[0]

    @property
    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    @property
    def head(self) -> nn.Linear:
        return self.model.lm_head

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embedding_prefixes(self) -> list[str]:
        """State-dict prefixes of the input embeddings (token and, where used, position)."""
        raise NotImplementedError

    def final_prefixes(self) -> list[str]:
        """State-dict prefixes of the final norm and LM head."""
        raise NotImplementedError

    def layer_prefix(self, index: int) -> str:
        return self.layer_prefix_format.format(index)

    def layer_type(self, index: int) -> str:
        types = getattr(self.config, "layer_types", None)
        if types:
            return types[index]
        return "sliding_attention" if getattr(self.config, "sliding_window", None) else "full_attention"

    def prepare(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> LayerContext:
        """Masks for every layer type of this stack, built once per forward."""
        kwargs = dict(
            config=self.config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        masks = {}
        for kind in {self.layer_type(i) for i in range(self.num_layers)}:
            make = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
            masks[kind] = make(**kwargs)
        return LayerContext(position_ids=position_ids, masks=masks)

    def run_layer(
        self, index: int, hidden: torch.Tensor, context: LayerContext, cache: Cache | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def run_stack(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None = None, cache: Cache | None = None,
    ) -> list[torch.Tensor]:
        """This model alone (continuing `cache` when given): the state after every decoder layer, each (B, T, d)."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.embed(input_ids, position_ids)
        context = self.prepare(hidden, attention_mask, position_ids, cache)
        states = []
        for index in range(self.num_layers):
            hidden = self.run_layer(index, hidden, context, cache)
            states.append(hidden)
        return states

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_norm(hidden))


def _layer_output(output: torch.Tensor | tuple) -> torch.Tensor:
    # transformers 5 decoder layers return a tensor; older ones a tuple whose first item is the state.
    return output[0] if isinstance(output, tuple) else output


class GPT2Adapter(StackAdapter):
    required = ("transformer.wte", "transformer.wpe", "transformer.h", "transformer.ln_f", "lm_head")
    layer_prefix_format = "transformer.h.{}."

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.transformer.h

    @property
    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        transformer = self.model.transformer
        return transformer.drop(transformer.wte(input_ids) + transformer.wpe(position_ids))

    def embedding_prefixes(self) -> list[str]:
        return ["transformer.wte.", "transformer.wpe."]

    def final_prefixes(self) -> list[str]:
        return ["transformer.ln_f.", "lm_head."]

    def run_layer(self, index, hidden, context, cache):
        return _layer_output(
            self.layers[index](
                hidden,
                cache,
                context.masks[self.layer_type(index)],
                use_cache=cache is not None,
                position_ids=context.position_ids,
            )
        )


class LlamaLayoutAdapter(StackAdapter):
    """Llama and the families that share its layout (Mistral, Qwen2): RMSNorm, rotary positions."""

    required = ("model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head")
    layer_prefix_format = "model.layers.{}."

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(input_ids)

    def embedding_prefixes(self) -> list[str]:
        return ["model.embed_tokens."]

    def final_prefixes(self) -> list[str]:
        return ["model.norm.", "lm_head."]

    def prepare(self, embeds, attention_mask, position_ids, cache):
        context = super().prepare(embeds, attention_mask, position_ids, cache)
        context.position_embeddings = self.model.model.rotary_emb(embeds, position_ids=position_ids)
        return context

    def run_layer(self, index, hidden, context, cache):
        return _layer_output(
            self.layers[index](
                hidden,
                attention_mask=context.masks[self.layer_type(index)],
                position_ids=context.position_ids,
                cache=cache,
                use_cache=cache is not None,
                position_embeddings=context.position_embeddings,
            )
        )


# Explicit registry: a family is listed only once its layer-by-layer run is verified against the
# model's own forward (tests/test_architecture.py). Structure alone is not enough: e.g. Gemma has
# Llama's layout but scales its embeddings.
ADAPTERS: dict[type, type[StackAdapter]] = {
    GPT2LMHeadModel: GPT2Adapter,
    LlamaForCausalLM: LlamaLayoutAdapter,
    MistralForCausalLM: LlamaLayoutAdapter,
    Qwen2ForCausalLM: LlamaLayoutAdapter,
}


def adapter_for(model: nn.Module) -> StackAdapter:
    """The adapter for `model`, or an error naming what superpose could not find."""
    for cls, adapter_cls in ADAPTERS.items():
        if type(model) is cls:
            return adapter_cls(model)
    supported = ", ".join(cls.__name__ for cls in ADAPTERS)
    layouts = []
    for adapter_cls in dict.fromkeys(ADAPTERS.values()):
        missing = [path for path in adapter_cls.required if _attribute_path(model, path) is None]
        layouts.append(f"{adapter_cls.__name__} layout is missing {', '.join(missing) or 'nothing'}")
    raise UnsupportedModelError(
        f"unsupported architecture {type(model).__name__}: superpose runs {supported} layer by layer. "
        + "; ".join(layouts)
        + ". A model with a matching layout still needs a verified entry in superpose.architecture.ADAPTERS."
    )


def check_compatible(base: StackAdapter, expert: StackAdapter, expert_name: str = "expert") -> None:
    """Fail before any compute when two stacks cannot share one running hidden state."""
    problems = []
    if type(base.model) is not type(expert.model):
        problems.append(f"architecture {type(base.model).__name__} vs {type(expert.model).__name__}")
    for what, a, b in (
        ("decoder layers", base.num_layers, expert.num_layers),
        ("hidden size", base.hidden_size, expert.hidden_size),
        ("vocabulary size", base.vocab_size, expert.vocab_size),
        ("attention heads", getattr(base.config, "num_attention_heads", None),
         getattr(expert.config, "num_attention_heads", None)),
    ):
        if a != b:
            problems.append(f"{what} {a} vs {b}")
    if problems:
        raise IncompatibleModelsError(
            f"base and {expert_name} cannot be superposed: " + "; ".join(problems)
            + ". The expert must be a fine-tune of the base (same architecture and shapes)."
        )
