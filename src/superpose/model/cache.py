"""One KV cache per stack, plus the autoencoders' convolution history and the gates' evidence, behind one
`Cache` object.

`generate()` handles this object like any cache: its `layers` are the layers of every stack's own
`DynamicCache`, so reordering, repeating and resetting reach all of them; the extra states are batch-first
tensors mapped the same way.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache


class SuperposedCache(Cache):
    def __init__(self, stack_configs: list):
        self.stacks = [DynamicCache(config=config) for config in stack_configs]
        super().__init__(layers=[layer for stack in self.stacks for layer in stack.layers])
        self.conv_states: dict[int, dict[str, torch.Tensor]] = {}  # AE layer -> {conv name: (B, k-1, C)}
        self.evidence: dict[object, dict[str, torch.Tensor]] = {}  # evidence source -> batch-first states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.stacks[0].get_seq_length(layer_idx)

    def _map_states(self, fn) -> None:
        for states in (self.conv_states, self.evidence):
            for key, named in list(states.items()):
                states[key] = {name: fn(tensor) for name, tensor in named.items()}

    def reset(self) -> None:
        super().reset()
        self.conv_states = {}
        self.evidence = {}

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_states(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_states(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        # The convolution history and evidence of removed positions are gone: `transformers`' assisted decoding
        # cannot roll them back (speculative.py can: it snapshots them and replays the kept positions).
        if tokens_to_remove != 0 and (self.conv_states or self.evidence):
            raise ValueError("a superposed cache with autoencoders or gate evidence cannot be cropped "
                             "(assisted decoding is unsupported; superposed generate() decodes speculatively)")
        super().crop(tokens_to_remove)

    # ---- speculative decoding's rollback (speculative.py) -------------------------------------------

    def crop_stacks(self, tokens_to_remove: int) -> None:
        """Drop the last `tokens_to_remove` positions from every stack's KV cache (the side states are left to
        `restore_side_states`)."""
        if tokens_to_remove > 0:
            for stack in self.stacks:
                stack.crop(-tokens_to_remove)

    def has_side_states(self) -> bool:
        return bool(self.conv_states or self.evidence)

    def side_states(self) -> tuple[dict, dict]:
        """A snapshot of the convolution and evidence states. The model replaces these tensors and never writes
        into them, so copying the mappings is enough."""
        return ({k: dict(v) for k, v in self.conv_states.items()}, {k: dict(v) for k, v in self.evidence.items()})

    def restore_side_states(self, snapshot: tuple[dict, dict]) -> None:
        conv, evidence = snapshot
        self.conv_states = {k: dict(v) for k, v in conv.items()}
        self.evidence = {k: dict(v) for k, v in evidence.items()}
