"""The superposed model: two frozen stacks sharing one running hidden state (SPEC §4).

    h = (1 - a_emb) * Embed_base(x) + a_emb * Embed_expert(x)
    for each layer l:  h = (1 - alpha(l)) * Block_base[l](h) + alpha(l) * Block_expert[l](h);  h = AE_l(h)
    logits = Head(FinalNorm(h))

It is a `transformers` `PreTrainedModel` with generation support, so `generate()`, `pipeline()` and
evaluation harnesses take it like any causal LM. Only alpha and the autoencoders are trainable, and
only they are saved.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from .architecture import adapter_for, check_compatible
from .autoencoders import AUTOENCODERS, warn_if_leaky
from .blending import ALPHA_VARIANTS
from .cache import SuperposedCache
from .settings import ModelSettings

WEIGHTS_NAME = "superposed.safetensors"
TRAINABLE_PREFIXES = ("alpha.", "autoencoders.")


class SuperposedConfig(PreTrainedConfig):
    """Names the base and expert checkpoints (local path or hub id) and every blending setting."""

    model_type = "superposed"
    base_model: str | None = None
    experts: dict | None = None  # expert name -> local path or hub id
    settings: dict | None = None  # ModelSettings as a dict
    num_hidden_layers: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    max_position_embeddings: int | None = None  # None lets harnesses fall back to their default length
    tie_word_embeddings: bool = False

    @property
    def model_settings(self) -> ModelSettings:
        return ModelSettings(**(self.settings or {}))

    @property
    def expert_name(self) -> str:
        return next(iter(self.experts or {"expert": None}))


def _execution_device(module: nn.Module, default: str | torch.device) -> torch.device:
    """Where `module` computes: its accelerate hook's device when dispatched by a device map, else `default`."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device if device is not None else default)


def _mark_initialised(model: nn.Module) -> None:
    # PreTrainedModel.post_init re-initialises modules not flagged as initialised; the stacks are trained weights.
    for module in model.modules():
        module._is_hf_initialized = True
    for tensor in list(model.parameters()) + list(model.buffers()):
        tensor._is_hf_initialized = True


class SuperposedModel(PreTrainedModel, GenerationMixin):
    config_class = SuperposedConfig
    base_model_prefix = "superposed"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: SuperposedConfig, base: PreTrainedModel, expert: PreTrainedModel):
        super().__init__(config)
        settings = config.model_settings
        self.base, self.expert = base, expert
        base_stack, expert_stack = adapter_for(base), adapter_for(expert)
        check_compatible(base_stack, expert_stack, config.expert_name)
        self.stacks = (base_stack, expert_stack)
        for stack in (base, expert):
            stack.requires_grad_(False)
            stack.eval()
            _mark_initialised(stack)
        n_layers, hidden = base_stack.num_layers, base_stack.hidden_size
        self.ae_layers = settings.resolved_ae_layers(n_layers)
        warn_if_leaky(settings.conv_padding)
        self.alpha = ALPHA_VARIANTS[settings.variant](
            n_layers, hidden, settings.n_control_points, settings.spline_degree
        )
        ae_class = AUTOENCODERS[settings.variant]
        self.autoencoders = nn.ModuleDict(
            {str(layer): ae_class(hidden, settings.resolved_bottleneck(), settings.conv_padding) for layer in self.ae_layers}
        )
        self.settings = settings
        # The trainable parts stay float32 whatever the stacks' dtype: AdamW's small steps on control points
        # near 0.5 round to nothing in bf16/fp16. Blends are computed in float32 and cast back for each block.
        self.alpha.float()
        self.autoencoders.float()
        self.post_init()
        self.generation_config = base.generation_config

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_models(
        cls,
        base: PreTrainedModel,
        expert: PreTrainedModel,
        settings: ModelSettings | None = None,
        base_name_or_path: str | None = None,
        expert_name: str = "expert",
        expert_name_or_path: str | None = None,
    ) -> "SuperposedModel":
        """Superpose two loaded models; the names/paths recorded let `from_pretrained` reload them."""
        settings = settings or ModelSettings()
        base_stack = adapter_for(base)
        config = SuperposedConfig(
            base_model=base_name_or_path or getattr(base, "name_or_path", None) or None,
            experts={expert_name: expert_name_or_path or getattr(expert, "name_or_path", None) or None},
            settings=json.loads(json.dumps(settings.__dict__)),
            num_hidden_layers=base_stack.num_layers,
            hidden_size=base_stack.hidden_size,
            vocab_size=base_stack.vocab_size,
            max_position_embeddings=getattr(base.config, "max_position_embeddings", None),
            bos_token_id=base.config.bos_token_id,
            eos_token_id=base.config.eos_token_id,
            pad_token_id=getattr(base.config, "pad_token_id", None),
        )
        return cls(config, base, expert)

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        base: PreTrainedModel | None = None,
        expert: PreTrainedModel | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device | None = "cpu",
        device_map: str | None = None,
        **_ignored,
    ) -> "SuperposedModel":
        """Restore a saved superposed model in inference mode, as `transformers` does.

        The base and expert are reloaded from the paths in its config straight into `dtype` and onto
        `device` (or spread by `device_map`, e.g. "auto"); the trainable parts stay float32 and sit beside
        the layers they serve. Call `.train()` to train further.
        """
        if isinstance(dtype, str):
            from .settings import torch_dtype

            dtype = torch_dtype(dtype)
        from .loading import resolve_device

        device = resolve_device(device)
        run_dir = Path(run_dir)
        weights = run_dir / WEIGHTS_NAME
        if not (run_dir / "config.json").is_file() or not weights.is_file():
            raise FileNotFoundError(f"{run_dir} is not a superposed model folder (needs config.json and {WEIGHTS_NAME})")
        config = SuperposedConfig.from_pretrained(run_dir)
        from .loading import ModelLoadError, load_causal_lm

        placement = device_map or (None if device.type == "cpu" else device)  # cpu: transformers' plain load
        try:
            if base is None:
                base = load_causal_lm(config.base_model, dtype, placement)
            if expert is None:
                expert = load_causal_lm(config.experts[config.expert_name], dtype, placement)
        except ModelLoadError as err:
            raise ModelLoadError(f"{err} (named in {run_dir / 'config.json'}; pass base=/expert= to override)") from err
        model = cls(config, base, expert)
        model.load_trainable_state_dict(load_file(str(weights)))
        model.place_trainable(device)
        return model.eval()

    def save_pretrained(self, save_directory: str | Path, **_ignored) -> None:
        """Write only what was trained (safetensors) and the config naming the base and expert."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt"})
        self.config.save_pretrained(save_directory)

    def place_trainable(self, device: str | torch.device) -> None:
        """Alpha on `device`; each autoencoder on the device of the base layer it follows (beside it when a
        device map spreads the stacks over several devices, else on `device` with everything else)."""
        self.alpha.to(device)
        for layer in self.ae_layers:
            self.autoencoders[str(layer)].to(_execution_device(self.stacks[0].layers[layer], device))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"saved weights do not match the settings: missing {missing[:5]}, unexpected {extra[:5]}")
        self.load_state_dict(state, strict=False)

    def _init_weights(self, module: nn.Module) -> None:
        # Trainable parts initialise themselves as the paper does; the stacks must not be touched.
        return

    def train(self, mode: bool = True) -> "SuperposedModel":
        super().train(mode)
        self.base.eval()  # frozen experts run deterministically (no dropout)
        self.expert.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def new_cache(self) -> SuperposedCache:
        return SuperposedCache([self.base.config, self.expert.config])

    # ---- forward --------------------------------------------------------------------------------

    def alphas(self) -> torch.Tensor:
        """(L,) for 1d or (L, d) for 2d, in float32 even under bf16 autocast (small steps stay visible)."""
        with torch.autocast(self.alpha.control.device.type, enabled=False):
            return self.alpha()

    @property
    def stack_dtype(self) -> torch.dtype:
        """The frozen stacks' dtype; the running blended state is float32 and is cast to this for each block."""
        return self.base.dtype

    def _embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        base_embeds = self.stacks[0].embed(input_ids, position_ids).float()  # (B, T, d)
        if self.settings.embed_blend == "base":
            return base_embeds
        a = alpha.mean(0).to(base_embeds.device)  # scalar (1d) or (d,) (2d)
        return (1 - a) * base_embeds + a * self.stacks[1].embed(input_ids, position_ids).float().to(base_embeds.device)

    def _logits(self, hidden: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.stack_dtype)
        if self.settings.head == "base":
            return self.stacks[0].logits(hidden)
        if self.settings.head == "expert":
            return self.stacks[1].logits(hidden)
        base_logits = self.stacks[0].logits(hidden).float()
        a = alpha.mean().to(base_logits.device)
        return (1 - a) * base_logits + a * self.stacks[1].logits(hidden).float().to(base_logits.device)

    def _autoencode(self, layer: int, hidden: torch.Tensor, token_mask, cache) -> torch.Tensor:
        state = cache.conv_states.get(layer) if cache is not None else None
        hidden, new_state = self.autoencoders[str(layer)](hidden, token_mask, state)
        if cache is not None:
            cache.conv_states[layer] = new_state
        return hidden.float()  # under bf16 autocast the AE computes in bf16; the running state stays float32

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: SuperposedCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **_unused,
    ) -> CausalLMOutputWithPast:
        """Sequential graph: each stack's block runs exactly once per layer on the shared state."""
        _, length = input_ids.shape
        cache = self._cache_for(cache, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=input_ids.device).unsqueeze(0)  # (1, T)
        token_mask = attention_mask[:, -length:] if attention_mask is not None else None  # (B, T)
        alpha = self.alphas()
        hidden = self._embed(input_ids, position_ids, alpha)  # (B, T, d)
        stack_caches = cache.stacks if cache is not None else (None, None)
        contexts = [
            stack.prepare(hidden.to(self.stack_dtype), attention_mask, position_ids, stack_cache)
            for stack, stack_cache in zip(self.stacks, stack_caches)
        ]
        states = [hidden] if output_hidden_states else None
        for layer in range(len(alpha)):
            x = hidden.to(self.stack_dtype)
            u = self.stacks[0].run_layer(layer, x, contexts[0], stack_caches[0])
            v = self.stacks[1].run_layer(layer, x, contexts[1], stack_caches[1])
            a = alpha[layer].to(u.device)  # a device map may place the two stacks' layers apart
            hidden = (1 - a) * u.float() + a * v.float().to(u.device)  # (B, T, d) float32
            if token_mask is not None:
                token_mask = token_mask.to(u.device)
            if layer in self.ae_layers:
                hidden = self._autoencode(layer, hidden, token_mask, cache)
            if states is not None:
                states.append(hidden)
        kept = hidden if not logits_to_keep else hidden[:, -logits_to_keep:]
        logits = self._logits(kept, alpha)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=cache, hidden_states=tuple(states) if states is not None else None
        )

    def _cache_for(self, cache, use_cache: bool | None) -> SuperposedCache | None:
        if isinstance(cache, SuperposedCache):
            return cache
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("a superposed model needs a SuperposedCache (one cache per stack); got a filled "
                             f"{type(cache).__name__}")
        # generate() hands an empty default cache; replace it with one that holds both stacks.
        if use_cache or cache is not None:
            if self.settings.conv_padding == "symmetric" and self.ae_layers:
                return None
            return self.new_cache()
        return None

    def generate(self, *args, **kwargs):
        if self.settings.conv_padding == "symmetric" and self.ae_layers:
            # Symmetric convolutions read the next token, so every step recomputes the whole prefix.
            kwargs["use_cache"] = False
        return super().generate(*args, **kwargs)

    # ---- training helpers -----------------------------------------------------------------------

    @torch.no_grad()
    def independent_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each expert run alone (no grad): the state after every layer, per stack."""
        return tuple(stack.run_stack(input_ids, attention_mask) for stack in self.stacks)

    def forward_parallel(
        self, base_states: list[torch.Tensor], expert_states: list[torch.Tensor], token_mask: torch.Tensor | None
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """The reference's training graph: blends and AEs see the independent states, and only the
        last layer's output reaches the head. Returns (state per layer, logits)."""
        alpha = self.alphas()
        outputs = {}
        for layer, (u, v) in enumerate(zip(base_states, expert_states)):
            a = alpha[layer].to(u.device)
            hidden = (1 - a) * u.float() + a * v.float().to(u.device)
            if token_mask is not None:
                token_mask = token_mask.to(u.device)
            if layer in self.ae_layers:
                hidden = self._autoencode(layer, hidden, token_mask, None)
            outputs[layer] = hidden
        return outputs, self._logits(outputs[len(alpha) - 1], alpha)


# Lets AutoConfig / AutoTokenizer read a run folder, and AutoModelForCausalLM.from_pretrained(run_dir) load it.
AutoConfig.register(SuperposedConfig.model_type, SuperposedConfig, exist_ok=True)
AutoModelForCausalLM.register(SuperposedConfig, SuperposedModel, exist_ok=True)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1).to(logits.device),
        ignore_index=-100
    )
