"""Autoencoders placed after the blend at selected layers.

Their convolutions run over the sequence axis. `padding="causal"` (default) pads on the left only,
so position t never reads t+1; `padding="symmetric"` is the reference's kernel-3/padding-1 form,
kept only to reproduce the paper, and it leaks the next token.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

PADDINGS = ("causal", "symmetric")


class SequenceConv(nn.Module):
    """Conv1d over (B, T, C) inputs; in causal mode it can continue from a saved state during generation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: str = "causal"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if padding == "symmetric" and kernel_size % 2 == 0:
            raise ValueError("symmetric padding needs an odd kernel size")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size)
        self.padding = padding
        self.history = kernel_size - 1

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C_in) -> (B, T, C_out), and the last `kernel_size - 1` inputs for the next call."""
        if self.padding == "symmetric":
            if state is not None:
                raise ValueError("symmetric convolutions read future tokens and cannot run incrementally")
            side = self.history // 2
            padded = F.pad(x.transpose(1, 2), (side, side))  # (B, C_in, T + k - 1)
            return self.conv(padded).transpose(1, 2), x[:, :0]
        if state is None:
            state = x.new_zeros(x.shape[0], self.history, x.shape[2])
        window = torch.cat([state, x], dim=1)  # (B, k - 1 + T, C_in)
        out = self.conv(window.transpose(1, 2)).transpose(1, 2)  # (B, T, C_out)
        return out, window[:, window.shape[1] - self.history :]


def _masked(x: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    # Padding positions feed zeros to the convolution, so left padding looks like the start of a sequence.
    return x if token_mask is None else x * token_mask.unsqueeze(-1).to(x.dtype)


class LinearConvAE(nn.Module):
    """1D variant: Linear(d -> m) + GELU, then a kernel-3 convolution m -> d over the sequence."""

    def __init__(self, hidden_size: int, bottleneck: float = 0.75, padding: str = "causal"):
        super().__init__()
        width = round(bottleneck * hidden_size)
        self.encoder = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU())
        self.decoder = SequenceConv(width, hidden_size, 3, padding)

    def forward(
        self, h: torch.Tensor, token_mask: torch.Tensor | None = None, state: dict | None = None
    ) -> tuple[torch.Tensor, dict]:
        """h (B, T, d) -> reconstruction (B, T, d) and the conv state for incremental decoding."""
        z = _masked(self.encoder(h), token_mask)  # (B, T, m)
        out, decoder_state = self.decoder(z, None if state is None else state["decoder"])
        return out, {"decoder": decoder_state}

    def zero_output(self) -> None:
        _zero(self.decoder)


def _zero(conv: SequenceConv) -> None:
    """The decoder's last layer at zero: a residual autoencoder h + AE(h) then starts as the identity."""
    nn.init.zeros_(conv.conv.weight)
    nn.init.zeros_(conv.conv.bias)


class DualPathAE(nn.Module):
    """2D variant: a local convolutional path (80 %) and a global low-rank path (20 %) of the bottleneck."""

    def __init__(self, hidden_size: int, bottleneck: float = 0.65, padding: str = "causal", dropout: float = 0.1):
        super().__init__()
        width = round(bottleneck * hidden_size)
        local = round(0.8 * width)
        global_width = width - local
        rank = max(1, min(32, global_width))
        self.local_conv = SequenceConv(hidden_size, local, 3, padding)
        self.local_post = nn.Sequential(nn.GELU(), nn.LayerNorm(local))
        self.global_path = nn.Sequential(
            nn.Linear(hidden_size, rank), nn.ReLU(), nn.Linear(rank, global_width)
        )
        self.dropout = nn.Dropout(dropout)
        self.decoder = SequenceConv(width, hidden_size, 3, padding)

    def forward(
        self, h: torch.Tensor, token_mask: torch.Tensor | None = None, state: dict | None = None
    ) -> tuple[torch.Tensor, dict]:
        state = state or {}
        local, local_state = self.local_conv(_masked(h, token_mask), state.get("local"))  # (B, T, 0.8m)
        code = torch.cat([self.local_post(local), self.global_path(h)], dim=-1)  # (B, T, m)
        code = _masked(self.dropout(code), token_mask)
        out, decoder_state = self.decoder(code, state.get("decoder"))
        return out, {"local": local_state, "decoder": decoder_state}

    def zero_output(self) -> None:
        _zero(self.decoder)


AUTOENCODERS: dict[str, type[nn.Module]] = {"1d": LinearConvAE, "2d": DualPathAE}


def warn_if_leaky(padding: str) -> None:
    if padding == "symmetric":
        warnings.warn(
            "conv_padding='symmetric' reproduces the reference's autoencoders, whose kernel-3 convolutions "
            "read position t+1: the model sees the next token and its perplexity is not honest. "
            "Use it only to reproduce the paper.",
            UserWarning,
            stacklevel=3,
        )
