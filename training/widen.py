"""Function-preserving growth of a generator's recurrent core (Net2Net-style widening).

A model fine-tuned from a smaller one normally loses every tensor whose shape changed. For the widths that only
enlarge fully-connected and recurrent layers — the ``lowlat`` preset's ``bottleneck``, ``gru_hidden`` and
``band_gru`` — the smaller model's weights can instead be embedded in the larger one so that the larger one computes
exactly the same output at the start:

* a GRU's old units keep their weights, gate by gate; their weights from the new inputs and new units are zero, so
  they evolve as before. The new units keep their fresh random weights, so they are active from the first step and
  gradients reach the layers that read them.
* a linear layer's old outputs keep their weights and read nothing from its new inputs (zero columns); new outputs
  keep their initialisation and are read by zero columns downstream.

Everything else must match in shape: :func:`growable_difference` refuses (``ValueError``) a config in which another
width changed, and :func:`grow_into` a tensor of any other kind of layer that changed shape, since then no embedding
preserves the function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# Config keys whose growth is function-preserving for the lowlat preset; any other difference is refused.
GROWABLE = ("bottleneck", "gru_hidden", "band_gru")


def growable_difference(source_cfg: Mapping[str, Any], target_cfg: Mapping[str, Any]) -> list[str]:
    """The GROWABLE keys that grow from ``source_cfg`` to ``target_cfg``; ValueError if anything else differs or
    a width shrinks (or a per-band GRU appears from none: that case the plain shape-matching copy already handles,
    since the new layer's output starts at zero)."""
    keys = set(source_cfg) | set(target_cfg)
    others = sorted(k for k in keys if k not in GROWABLE and source_cfg.get(k) != target_cfg.get(k))
    if others:
        raise ValueError("only " + ", ".join(GROWABLE) + " can grow; these differ too: " + ", ".join(
            f"{k} {source_cfg.get(k)!r} -> {target_cfg.get(k)!r}" for k in others))
    grown = []
    for k in GROWABLE:
        old, new = int(source_cfg.get(k) or 0), int(target_cfg.get(k) or 0)
        if new < old:
            raise ValueError(f"{k} shrinks ({old} -> {new}); only growth preserves the model.")
        if k == "band_gru" and old == 0 and new > 0:
            raise ValueError("band_gru 0 -> N adds a layer; initialise without growing (it starts at zero).")
        if new > old:
            grown.append(k)
    return grown


def _embed_linear(own: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``own`` [O, I] with ``src`` [Os, Is] in its top-left; the old rows read zeros from the new inputs."""
    out = own.detach().clone()
    os_, is_ = src.shape
    out[:os_, :is_] = src
    out[:os_, is_:] = 0.0
    return out


def _embed_gru(own: torch.Tensor, src: torch.Tensor, hidden: int, src_hidden: int) -> torch.Tensor:
    """A GRU weight [3H, X] (or bias [3H]) with the source's [3Hs, Xs] embedded gate by gate (r, z, n)."""
    out = own.detach().clone()
    for g in range(3):
        rows = src[g * src_hidden:(g + 1) * src_hidden]
        if out.dim() == 1:
            out[g * hidden:g * hidden + src_hidden] = rows
        else:
            out[g * hidden:g * hidden + src_hidden, :rows.shape[1]] = rows
            out[g * hidden:g * hidden + src_hidden, rows.shape[1]:] = 0.0
    return out


def grow_into(model: nn.Module, source: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A state dict for ``model`` holding ``source`` (a narrower model's state dict of the same architecture)
    embedded so that ``model`` computes what the source did; returns (state, names of the grown tensors).

    Tensors of equal shape are copied; GRU and linear tensors that grew are embedded as the module docstring says;
    a tensor of any other module that changed shape, or that is missing from ``source``, raises ValueError."""
    own = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    grown: list[str] = []
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for p_name, _ in mod.named_parameters(recurse=False):
            key = prefix + p_name
            if key not in source:
                raise ValueError(f"{key} is not in the source model.")
            src, mine = source[key].to(own[key].dtype), own[key]
            if src.shape == mine.shape:
                state[key] = src.clone()
                continue
            if src.dim() != mine.dim() or any(s > m for s, m in zip(src.shape, mine.shape)):
                raise ValueError(f"{key}: {tuple(src.shape)} does not fit in {tuple(mine.shape)}.")
            if isinstance(mod, nn.GRU):
                state[key] = _embed_gru(mine, src, mod.hidden_size, src.shape[0] // 3)
            elif isinstance(mod, nn.Linear) and p_name == "weight":
                state[key] = _embed_linear(mine, src)
            elif isinstance(mod, nn.Linear) and p_name == "bias":
                state[key] = mine.detach().clone()
                state[key][:src.shape[0]] = src
            else:
                raise ValueError(f"{key} ({type(mod).__name__}) changed shape {tuple(src.shape)} -> "
                                 f"{tuple(mine.shape)}; only GRU and linear layers can grow.")
            grown.append(key)
    for key, value in own.items():  # buffers (none are learnt in the presets) keep the model's own
        state.setdefault(key, value)
    return state, grown
