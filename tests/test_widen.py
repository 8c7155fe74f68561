"""Function-preserving growth of the recurrent core (training.widen) and `--init` into a wider generator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from train_helpers import make_data, tiny_config

from training.checkpoint import load_checkpoint, load_generator, save_checkpoint
from training.models import build_generator
from training.trainer import train
from training.widen import grow_into, growable_difference

SMALL = {"channels": [4, 8], "bottleneck": 16, "gru_hidden": 16, "band_gru": 4, "past_frames": 2}


def _randomised(preset_values: dict) -> torch.nn.Module:
    """A small lowlat generator whose weights are all non-trivial (band_out starts at zero otherwise)."""
    torch.manual_seed(0)
    g = build_generator("lowlat", preset_values).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return g


@pytest.mark.parametrize("grow", [{"gru_hidden": 24}, {"bottleneck": 20, "gru_hidden": 32, "band_gru": 7}])
def test_grown_generator_computes_the_same_output_and_its_new_units_are_live(grow: dict) -> None:
    small = _randomised(SMALL)
    big = build_generator("lowlat", {**SMALL, **grow}).eval()
    state, grown = grow_into(big, small.state_dict())
    big.load_state_dict(state)
    assert "rnn.weight_hh_l0" in grown and "from_rnn.0.weight" in grown
    x = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-5, rtol=0)
    # the new units are not a dead copy: their weights are random, so a gradient reaches the columns that read them
    big.train()
    big(x).pow(2).mean().backward()
    h = grow["gru_hidden"]
    assert big.from_rnn[0].weight.grad[:, SMALL["gru_hidden"]:h].abs().sum() > 0


def test_only_the_recurrent_widths_may_grow() -> None:
    assert growable_difference(SMALL, {**SMALL, "gru_hidden": 32}) == ["gru_hidden"]
    with pytest.raises(ValueError, match="channels"):
        growable_difference(SMALL, {**SMALL, "channels": [4, 16], "gru_hidden": 32})
    with pytest.raises(ValueError, match="shrinks"):
        growable_difference(SMALL, {**SMALL, "gru_hidden": 8})
    with pytest.raises(ValueError, match="band_gru 0"):
        growable_difference({**SMALL, "band_gru": 0}, {**SMALL, "band_gru": 4})
    big = build_generator("lowlat", {**SMALL, "channels": [4, 16]})
    with pytest.raises(ValueError, match="only GRU and linear"):
        grow_into(big, _randomised(SMALL).state_dict())


@pytest.mark.parametrize("older", [False, True])
def test_init_grows_a_checkpoint_into_a_wider_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  older: bool) -> None:
    data = make_data(tmp_path)
    base = tmp_path / "base"
    train(tiny_config("run.max_steps=2", "optim.ema=0"), data, base)
    if older:  # written before lookahead_frames existed: the key is missing, its default applies
        for file in (base / "checkpoints").glob("*.pt"):
            ckpt = load_checkpoint(file)
            del ckpt["generator_config"]["lookahead_frames"]
            save_checkpoint(file, ckpt)
    small, _ = load_generator(base / "checkpoints" / "latest.pt")
    wide = tmp_path / "wide"
    # a learning rate of ~0 keeps the grown model what the init made it
    train(tiny_config("run.max_steps=1", "generator.gru_hidden=24", "generator.bottleneck=20", "optim.ema=0",
                      "optim.lr_g=1e-12", "optim.lr_d=1e-12", f"run.init={base}"), data, wide)
    err = capsys.readouterr().err
    assert re.search(r"grown, function kept: bottleneck 16 -> 20, gru_hidden 16 -> 24", err), err
    big, _ = load_generator(wide / "checkpoints" / "latest.pt")
    assert load_checkpoint(wide / "checkpoints" / "latest.pt")["generator_config"]["gru_hidden"] == 24
    x = 0.1 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-5, rtol=0)
