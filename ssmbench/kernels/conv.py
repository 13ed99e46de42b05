"""Depthwise causal 1-D convolution (Mamba's short conv), with a state-carrying step for decode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.kernels._tables import CONV_BACKENDS as BACKENDS  # noqa: F401 - the op's table


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in (None, "identity"):
        return y
    if activation in ("silu", "swish"):
        return F.silu(y)
    raise ValueError(f"unknown activation '{activation}'")


def causal_conv1d_torch(x, weight, bias=None, activation=None):
    """x: (b, d, l); weight: (d, w); bias: (d,). y_t = sum_k w_k x_{t-w+1+k} (+ bias)."""
    width = weight.shape[1]
    y = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return _activate(y, activation)


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    width = weight.shape[1]
    xp = F.pad(x, (width - 1, 0))
    length = x.shape[-1]
    y = sum(weight[:, k, None] * xp[..., k:k + length] for k in range(width))
    if bias is not None:
        y = y + bias[:, None]
    return _activate(y, activation)


def causal_conv1d_step(x_t, conv_state, weight, bias=None, activation=None):
    """One decode step. x_t: (b, d); conv_state: (b, d, w) updated in place (oldest first). Returns (b, d)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x_t
    y = (conv_state * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return _activate(y, activation)


def fill_conv_state(conv_state, x):
    """Set a decode conv state (b, d, w) to what ``causal_conv1d_step`` would hold after the inputs x (b, d, l):
    the last w inputs, oldest first, zeros before the sequence's start (when l < w)."""
    width, length = conv_state.shape[-1], x.shape[-1]
    conv_state.copy_(F.pad(x[..., -width:], (max(0, width - length), 0)))


def probe_upstream() -> str | None:
    try:
        import causal_conv1d  # noqa: F401
    except ImportError as exc:
        return f"pip install causal-conv1d ({exc})"
    return None


def causal_conv1d_upstream(x, weight, bias=None, activation=None):
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn(x, weight, bias, activation=activation)
