"""The superposed model: a frozen base and N frozen experts (M = N + 1 stacks), blended layer by layer.

Two graphs (`graph` setting, defined in `graphs.py`), trained and served the same way:

* sequential (the paper's superposition): the stacks share one running state,
      h = Σ_m w_emb[m] Embed_m(x);  for each layer l:  h = Σ_m w[l, t, m] Block_m[l](h);  h = AE_l(h)
* parallel: each stack runs on its own states with its own cache; the blends, autoencoders and gates form a
  side path from the stacks' states to the head (the reference's training graph), so each stack's evidence
  is its own exact likelihood.

The weights w come from `blending.Blend` (static spline or per-token gate). The head is the base's, the first
expert's, a blend of all heads' logits, or a mixture Σ_m w[last, t, m] softmax(head_m(norm_m(h))).

It is a `transformers` `PreTrainedModel` with generation support, so `generate()`, `pipeline()` and
evaluation harnesses take it like any causal LM. Only the blend (spline and gates) and the autoencoders
are trainable, and only they are saved.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from superpose.model import graphs
from superpose.model.architecture import adapter_for, check_compatible
from superpose.model.autoencoders import AUTOENCODERS, warn_if_leaky
from superpose.model.blending import Blend
from superpose.model.cache import SuperposedCache
from superpose.model.calibration import calibrated, calibrating
from superpose.model.settings import ModelSettings

WEIGHTS_NAME = "superposed.safetensors"
TRAINABLE_PREFIXES = ("blend.", "autoencoders.")
# Runs saved under older names: the spline was `alpha.` before the gates existed, then `blend.alpha.`.
LEGACY_PREFIXES = {"alpha.": "blend.spline.", "blend.alpha.": "blend.spline."}


class SuperposedConfig(PreTrainedConfig):
    """Names the base and expert checkpoints (local path or hub id) and every blending setting."""

    model_type = "superposed"
    base_model: str | None = None
    experts: dict | None = None  # expert name -> local path or hub id
    expert_order: list | None = None  # the experts' stack order (config.json sorts its keys); None: one expert
    settings: dict | None = None  # ModelSettings as a dict
    num_hidden_layers: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    max_position_embeddings: int | None = None  # None lets harnesses fall back to their default length
    tie_word_embeddings: bool = False

    @property
    def model_settings(self) -> ModelSettings:
        return ModelSettings.from_saved(self.settings)

    @property
    def expert_names(self) -> list[str]:
        """Experts in stack order (stack m = expert m - 1)."""
        return list(self.expert_order or self.experts or {"expert": None})


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


@dataclass
class SuperposedOutput(CausalLMOutputWithPast):
    """A causal-LM output plus, when asked for, each layer's blend weights per position."""

    gate_weights: tuple[torch.Tensor, ...] | None = None  # per layer (B, T, M), mean over the hidden size (2d)


def _expert_mapping(experts, default_name: str) -> dict[str, PreTrainedModel]:
    mapping = dict(experts) if isinstance(experts, dict) else {default_name: experts}
    if not mapping:
        raise ValueError("a superposed model needs at least one expert")
    for name in mapping:
        if not isinstance(name, str) or not name or name == "base" or any(c in name for c in "./\\"):
            raise ValueError(f"expert names must be plain names other than 'base' (no '.', '/'); got {name!r}")
    return mapping


class SuperposedModel(PreTrainedModel, GenerationMixin):
    config_class = SuperposedConfig
    base_model_prefix = "superposed"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: SuperposedConfig, base: PreTrainedModel,
                 experts: dict[str, PreTrainedModel] | PreTrainedModel):
        super().__init__(config)
        settings = config.model_settings
        experts = _expert_mapping(experts, config.expert_names[0])
        if list(experts) != config.expert_names:
            raise ValueError(f"experts {list(experts)} do not match the config's {config.expert_names}")
        self.base = base
        self.experts = nn.ModuleDict(experts)
        base_stack = adapter_for(base)
        expert_stacks = [adapter_for(model) for model in experts.values()]
        for name, stack in zip(experts, expert_stacks):
            check_compatible(base_stack, stack, name)
        self.stacks = (base_stack, *expert_stacks)
        for stack in self.stack_models:
            stack.requires_grad_(False)
            stack.eval()
            _mark_initialised(stack)
        n_layers, hidden = base_stack.num_layers, base_stack.hidden_size
        self.ae_layers = settings.resolved_ae_layers(n_layers)
        warn_if_leaky(settings.conv_padding)
        self.blend = Blend(settings, n_layers, hidden, len(self.stacks))
        ae_class = AUTOENCODERS[settings.variant]
        self.autoencoders = nn.ModuleDict(
            {str(layer): ae_class(hidden, settings.resolved_bottleneck(), settings.conv_padding)
             for layer in self.ae_layers}
        )
        if settings.ae_residual:
            for autoencoder in self.autoencoders.values():
                autoencoder.zero_output()  # h + AE(h) starts as the identity: an untrained model is the plain blend
        self.settings = settings
        # The trainable parts stay float32 whatever the stacks' dtype: AdamW's small steps on control points
        # near 0.5 round to nothing in bf16/fp16. Blends are computed in float32 and cast back for each block.
        self.blend.float()
        self.autoencoders.float()
        self.post_init()
        self.generation_config = base.generation_config

    # ---- what it is made of ---------------------------------------------------------------------

    @property
    def stack_models(self) -> list[PreTrainedModel]:
        """The base, then every expert in the config's order (stack index m)."""
        return [self.base, *self.experts.values()]

    @property
    def stack_names(self) -> list[str]:
        return ["base", *self.experts]

    @property
    def expert_models(self) -> dict[str, PreTrainedModel]:
        return dict(self.experts)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_models(
        cls,
        base: PreTrainedModel,
        experts: dict[str, PreTrainedModel] | PreTrainedModel,
        settings: ModelSettings | None = None,
        base_name_or_path: str | None = None,
        expert_paths: dict[str, str] | None = None,
        *old_positional,
        **deprecated,
    ) -> SuperposedModel:
        """Superpose loaded models: `experts` maps name -> model (one model alone is named "expert").

        The paths recorded (`expert_paths`: name -> local path or hub id; default each model's
        `name_or_path`) let `from_pretrained` reload them.
        """
        settings = settings or ModelSettings()
        if isinstance(expert_paths, str):  # the old positional form (..., base_path, expert_name, expert_path)
            deprecated["expert_name"] = expert_paths
            if old_positional:
                deprecated["expert_name_or_path"] = old_positional[0]
            expert_paths = None
        elif old_positional:
            raise TypeError(f"from_models() got {len(old_positional)} positional arguments too many")
        expert_paths = dict(expert_paths or {})
        default_name = _renamed_argument(deprecated, "expert_name", None) or "expert"
        experts = _expert_mapping(experts, default_name)
        old_paths = _renamed_argument(deprecated, "expert_name_or_path", "expert_paths")
        if old_paths:
            expert_paths.update(old_paths if isinstance(old_paths, dict) else {next(iter(experts)): old_paths})
        if deprecated:
            raise TypeError(f"from_models() got unexpected keyword arguments {sorted(deprecated)}")
        paths = {name: expert_paths.get(name) or getattr(model, "name_or_path", None) or None
                 for name, model in experts.items()}
        base_stack = adapter_for(base)
        config = SuperposedConfig(
            base_model=base_name_or_path or getattr(base, "name_or_path", None) or None,
            experts=paths,
            expert_order=list(paths),
            settings=json.loads(json.dumps(settings.__dict__)),
            num_hidden_layers=base_stack.num_layers,
            hidden_size=base_stack.hidden_size,
            vocab_size=base_stack.vocab_size,
            max_position_embeddings=getattr(base.config, "max_position_embeddings", None),
            bos_token_id=base.config.bos_token_id,
            eos_token_id=base.config.eos_token_id,
            pad_token_id=getattr(base.config, "pad_token_id", None),
        )
        return cls(config, base, experts)

    @classmethod
    def from_pretrained(
        cls,
        run_dir: str | Path,
        base: PreTrainedModel | None = None,
        experts: dict[str, PreTrainedModel] | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device | None = "cpu",
        device_map: str | None = None,
        **ignored,
    ) -> SuperposedModel:
        """Restore a saved superposed model in inference mode, as `transformers` does.

        The base and experts are reloaded from the paths in its config straight into `dtype` and onto
        `device` (or spread by `device_map`, e.g. "auto"); the trainable parts stay float32 and sit beside
        the layers they serve. `experts` maps names to already loaded experts (the others are loaded). Call
        `.train()` to train further.
        """
        if isinstance(dtype, str):
            from superpose.core.settings import torch_dtype

            dtype = torch_dtype(dtype)
        from superpose.core.loading import resolve_device

        device = resolve_device(device)
        run_dir = Path(run_dir)
        weights = run_dir / WEIGHTS_NAME
        if not (run_dir / "config.json").is_file() or not weights.is_file():
            raise FileNotFoundError(f"{run_dir} is not a superposed model folder "
                                    f"(needs config.json and {WEIGHTS_NAME})")
        config = SuperposedConfig.from_pretrained(run_dir)
        from superpose.core.loading import ModelLoadError, load_causal_lm

        given = dict(experts or {})
        old = _renamed_argument(ignored, "expert", "experts")
        if old is not None:
            given.update(old if isinstance(old, dict) else {config.expert_names[0]: old})
        placement = device_map or (None if device.type == "cpu" else device)  # cpu: transformers' plain load
        try:
            if base is None:
                base = load_causal_lm(config.base_model, dtype, placement)
            experts = {name: given.get(name) or load_causal_lm(config.experts[name], dtype, placement)
                       for name in config.expert_names}
        except ModelLoadError as err:
            raise ModelLoadError(f"{err} (named in {run_dir / 'config.json'}; "
                                 "pass base=/experts= to override)") from err
        model = cls(config, base, experts)
        model.load_trainable_state_dict(load_file(str(weights)))
        model.place_trainable(device)
        return model.eval()

    def save_pretrained(self, save_directory: str | Path, **_ignored) -> None:
        """Write only what was trained (safetensors) and the config naming the base and experts."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt"})
        self.config.save_pretrained(save_directory)

    def place_trainable(self, device: str | torch.device) -> None:
        """Blend weights on `device`; each autoencoder on the device of the base layer it follows (beside it
        when a device map spreads the stacks over several devices, else on `device` with everything else)."""
        self.blend.to(device)
        for layer in self.ae_layers:
            self.autoencoders[str(layer)].to(_execution_device(self.stacks[0].layers[layer], device))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = {_current_key(k): v for k, v in state.items()}
        expected = set(self.trainable_state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"saved weights do not match the settings: missing {missing[:5]}, unexpected {extra[:5]}")
        self.load_state_dict(state, strict=False)

    def _init_weights(self, module: nn.Module) -> None:
        # Trainable parts initialise themselves as the paper does; the stacks must not be touched.
        return

    def train(self, mode: bool = True) -> SuperposedModel:
        super().train(mode)
        for stack in self.stack_models:
            stack.eval()  # frozen experts run deterministically (no dropout)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def new_cache(self) -> SuperposedCache:
        return SuperposedCache([model.config for model in self.stack_models])

    # ---- forward --------------------------------------------------------------------------------

    def static_weights(self) -> torch.Tensor:
        """(L, M) or (L, M, d) float32 weights of the static prior (the gates' starting point)."""
        return self.blend.static_weights()

    def alphas(self) -> torch.Tensor:
        """The paper's alpha of a one-expert model: (L,) or (L, d), the weight on the expert."""
        if len(self.stacks) != 2:
            raise ValueError(f"alpha is the one-expert weight; this model has {len(self.stacks) - 1} experts: use "
                             "static_weights() for the (L, M) weights over the stacks")
        return self.static_weights()[:, 1]

    @property
    def stack_dtype(self) -> torch.dtype:
        """The frozen stacks' dtype; the running blended state is float32 and is cast to this for each block."""
        return self.base.dtype

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
        output_gates: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **_unused,
    ) -> SuperposedOutput:
        """Each stack's block runs exactly once per layer, in the graph the settings name."""
        _, length = input_ids.shape
        cache = self._cache_for(cache, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=input_ids.device).unsqueeze(0)  # (1, T)
        static = self.static_weights()  # the spline, computed once per forward
        token_mask = attention_mask[:, -length:] if attention_mask is not None else None  # (B, T)
        if self.settings.graph == "sequential":
            result = graphs.sequential(self, input_ids, position_ids, cache, attention_mask, static)
        else:
            stack_states = graphs.run_stacks(self, input_ids, position_ids, cache, attention_mask)
            result = graphs.parallel(self, stack_states, input_ids, position_ids, cache, token_mask, static)
        if calibrating(self):  # its state reads every position's output, not only the kept ones
            logits = calibrated(self, graphs.head_logits(self, result, static), input_ids, token_mask, cache)
            logits = logits[:, -logits_to_keep:] if logits_to_keep else logits
        else:
            logits = graphs.head_logits(self, result.keep_last(logits_to_keep), static)
        states, gates = result.states, result.gates
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return SuperposedOutput(
            loss=loss, logits=logits, cache=cache, hidden_states=tuple(states) if output_hidden_states else None,
            gate_weights=tuple(gates) if output_gates else None,
        )

    def _cache_for(self, cache, use_cache: bool | None) -> SuperposedCache | None:
        if isinstance(cache, SuperposedCache):
            return cache
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError("a superposed model needs a SuperposedCache (one cache per stack); got a filled "
                             f"{type(cache).__name__}")
        # generate() hands an empty default cache; replace it with one that holds every stack.
        if use_cache or cache is not None:
            if self.settings.conv_padding == "symmetric" and self.ae_layers:
                return None
            return self.new_cache()
        return None

    def generate(self, *args, speculative: int | str | None = "auto", **kwargs):
        """`transformers` generation; batch-1 greedy and sampled decoding run speculatively (`speculative.py`):
        the same output, fewer stack steps. `speculative`: "auto" (adaptive draft length), K drafted tokens
        per round, or 0 for plain dense decoding. `self.speculation_stats` then describes the last call."""
        from superpose.model.speculative import (
            DenseFallback,
            SpeculationStats,
            dense_reason,
            draft_mode,
            speculative_loop,
        )

        if self.settings.conv_padding == "symmetric" and self.ae_layers:
            # Symmetric convolutions read the next token, so every step recomputes the whole prefix.
            kwargs["use_cache"] = False
        draft = draft_mode(speculative)
        reason = dense_reason(self, args, kwargs, draft)
        if reason is None:
            try:  # transformers prepares the call (config, defaults, processors) and runs our loop on it
                return super().generate(*args, custom_generate=speculative_loop(draft), **kwargs)
            except DenseFallback as fallback:
                reason = fallback.reason
        self.speculation_stats = SpeculationStats(mode="dense", reason=reason)
        return super().generate(*args, **kwargs)

    # ---- training helpers -----------------------------------------------------------------------

    @torch.no_grad()
    def independent_states(self, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor | None) -> list[list[torch.Tensor]]:
        """Each stack run alone (no grad): the state after every layer, per stack (base first)."""
        return graphs.run_stacks(self, input_ids, attention_mask=attention_mask)

    def forward_parallel(
        self, stack_states: list[list[torch.Tensor]], token_mask: torch.Tensor | None, input_ids: torch.Tensor,
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """The parallel graph on given independent states (no cache): (state per layer, logits, weights per layer).

        It is the served graph when `graph: parallel`, and the reference's training graph otherwise."""
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        static = self.static_weights()
        result = graphs.parallel(self, stack_states, input_ids, position_ids, None, token_mask, static)
        return dict(enumerate(result.states[1:])), graphs.head_logits(self, result, static), result.gates


def _current_key(key: str) -> str:
    old = next((prefix for prefix in LEGACY_PREFIXES if key.startswith(prefix)), None)
    return LEGACY_PREFIXES[old] + key[len(old):] if old else key


def _renamed_argument(given: dict, old: str, new: str | None):
    """The value of a keyword argument from the two-model days (with a notice), or None."""
    if old not in given:
        return None
    warnings.warn(f"{old}= is deprecated" + (f": use {new}= (a mapping name -> ...)" if new else ""), FutureWarning,
                  stacklevel=3)
    return given.pop(old)


# Lets AutoConfig / AutoTokenizer read a run folder, and AutoModelForCausalLM.from_pretrained(run_dir) load it.
AutoConfig.register(SuperposedConfig.model_type, SuperposedConfig, exist_ok=True)
AutoModelForCausalLM.register(SuperposedConfig, SuperposedModel, exist_ok=True)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1).to(logits.device),
        ignore_index=-100
    )
