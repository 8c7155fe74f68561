"""Generators and discriminator: built from configs, streaming equals the whole-signal forward, SEGAN's latent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.dsp import overlap_add_gain, window
from realtime.errors import ConfigError
from training.models import (
    Discriminator,
    LowLatGenerator,
    SeganGenerator,
    build_generator,
    config_dict,
    count_parameters,
    gru_written_out,
    macs_per_second,
    make_config,
    make_discriminator_config,
)

TINY_LOWLAT = {"channels": [4, 8], "bottleneck": 16, "gru_hidden": 16}
TINY_SEGAN = {"window": 1024, "hop": 512, "channels": [4, 8, 8, 16], "kernel": 9, "z_channels": 8}


@pytest.mark.parametrize("preset, values", [("lowlat", TINY_LOWLAT), ("segan", TINY_SEGAN)])
def test_presets_build_from_config_and_keep_length(preset: str, values: dict) -> None:
    torch.manual_seed(0)
    gen = build_generator(preset, values)
    x = 0.1 * torch.randn(2, 3000)
    y = gen(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # The config dict rebuilds an identical architecture (what a checkpoint relies on).
    twin = build_generator(preset, config_dict(gen.cfg))
    twin.load_state_dict(gen.state_dict())
    assert torch.equal(twin.eval()(x), gen.eval()(x))


def test_windows_of_both_presets_reconstruct_perfectly() -> None:
    for gen in (build_generator("lowlat", TINY_LOWLAT), build_generator("segan", TINY_SEGAN)):
        gain = overlap_add_gain(window(gen.analysis_window, gen.window), window(gen.synthesis_window, gen.window),
                                gen.hop)
        np.testing.assert_allclose(gain, 1.0, atol=1e-6)


def stream(gen: LowLatGenerator, x: torch.Tensor) -> torch.Tensor:
    """Run ``gen.step`` hop by hop like the realtime engine (own framing, not models.frame_signal)."""
    w, hop, lat = gen.window, gen.hop, gen.latency_samples
    t = x.shape[-1]
    buf = torch.zeros(x.shape[0], w)
    state = gen.initial_state(x.shape[0])
    ola = torch.zeros(x.shape[0], t + lat + w)
    padded = torch.cat([x, torch.zeros(x.shape[0], lat + hop)], 1)  # flush: push the tail through
    for k in range(padded.shape[1] // hop):
        buf = torch.cat([buf[:, hop:], padded[:, k * hop:(k + 1) * hop]], 1)
        out, *state = gen.step(buf * gen.win_a, *state)
        ola[:, k * hop:k * hop + w] += out * gen.win_s
    # OLA position j holds input sample j - lat (frame k covers inputs [k*hop - lat, k*hop + hop)).
    return ola[:, lat:lat + t]


def with_band_memory(gen: LowLatGenerator) -> LowLatGenerator:
    """Give the per-band GRU's zero-initialised output projection random weights, so the path matters."""
    assert gen.band_out is not None
    with torch.no_grad():
        gen.band_out.weight.normal_(0.0, 0.3)
        gen.band_out.bias.normal_(0.0, 0.1)
    return gen


def with_random(gen: LowLatGenerator, *layers: str) -> LowLatGenerator:
    """Give zero-initialised fine-tuning layers (input layer, filter taps) random weights, so their path matters."""
    with torch.no_grad():
        for name in layers:
            layer = getattr(gen, name)
            assert layer is not None, name
            for t in layer.parameters():
                t.normal_(0.0, 0.3)
    return gen


def with_past_frames(gen: LowLatGenerator) -> LowLatGenerator:
    return with_random(gen, "ctx_inp", "df_head")


def with_lookahead(gen: LowLatGenerator) -> LowLatGenerator:
    return with_random(gen, "fut_inp", "fut_head")


@pytest.mark.parametrize("band_gru, past_frames, lookahead", [(0, 0, 0), (6, 0, 0), (0, 2, 0), (6, 3, 0), (6, 2, 1),
                                                               (0, 0, 2)])
def test_lowlat_streaming_equals_forward(band_gru: int, past_frames: int, lookahead: int) -> None:
    torch.manual_seed(1)
    gen = build_generator("lowlat", {**TINY_LOWLAT, "band_gru": band_gru, "past_frames": past_frames,
                                     "lookahead_frames": lookahead}).eval()
    if band_gru:
        gen = with_band_memory(gen)
    if past_frames:
        gen = with_past_frames(gen)
    if lookahead:
        gen = with_lookahead(gen)
    assert gen.latency_samples == gen.window - gen.hop + lookahead * gen.hop
    names = ["h_in", *(["hb_in"] if band_gru else []), *(["past_in"] if past_frames or lookahead else [])]
    assert [s[0] for s in gen.state_spec()] == names
    x = 0.1 * torch.randn(2, 128 * 20 + 37)
    with torch.no_grad():
        offline = gen(x)
        online = stream(gen, x)
    assert online.shape == offline.shape
    assert torch.max(torch.abs(online - offline)) <= 1e-5


def test_band_memory_starts_as_the_model_without_it_then_changes_the_output() -> None:
    torch.manual_seed(2)
    plain = build_generator("lowlat", TINY_LOWLAT).eval()
    banded = build_generator("lowlat", {**TINY_LOWLAT, "band_gru": 6}).eval()
    missing, unexpected = banded.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("band_") for k in missing)
    x = 0.1 * torch.randn(1, 128 * 12)
    with torch.no_grad():
        assert torch.equal(banded(x), plain(x))  # the fine-tuning start point is exactly the old model
        assert not torch.allclose(with_band_memory(banded)(x), plain(x), atol=1e-4)


def test_past_frames_start_as_the_model_without_them_then_filter_over_time() -> None:
    torch.manual_seed(3)
    plain = build_generator("lowlat", {**TINY_LOWLAT, "band_gru": 6}).eval()
    deep = build_generator("lowlat", {**TINY_LOWLAT, "band_gru": 6, "past_frames": 2}).eval()
    missing, unexpected = deep.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["ctx_inp.weight", "df_head.bias", "df_head.weight"]
    x = 0.1 * torch.randn(1, 128 * 12)
    with torch.no_grad():
        # the same model up to float rounding (the fused input layer sums its zero-weight channels too)
        assert torch.allclose(deep(x), plain(x), rtol=0, atol=1e-6)
        deep = with_past_frames(deep)
        y = deep(x)
        assert not torch.allclose(y, plain(x), atol=1e-4)
        # causal: changing the future leaves the past output untouched (no latency is added)
        x2 = x.clone()
        x2[:, 128 * 8:] += 0.3 * torch.randn(1, 128 * 4)
        edge = 128 * 8 - deep.latency_samples
        assert torch.equal(deep(x2)[:, :edge], y[:, :edge])


def test_lookahead_starts_as_the_causal_model_one_hop_later_then_uses_the_future() -> None:
    torch.manual_seed(4)
    causal = with_past_frames(build_generator("lowlat", {**TINY_LOWLAT, "band_gru": 6, "past_frames": 2})).eval()
    ahead = build_generator("lowlat", {**TINY_LOWLAT, "band_gru": 6, "past_frames": 2, "lookahead_frames": 1}).eval()
    missing, unexpected = ahead.load_state_dict(causal.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["fut_head.bias", "fut_head.weight", "fut_inp.weight"]
    assert ahead.latency_samples == causal.latency_samples + ahead.hop
    frames = 0.1 * torch.randn(2, 30, ahead.window)
    with torch.no_grad():
        # frame by frame, the model with lookahead emits what the causal one emits one hop earlier: the causal
        # model run on the same frames after one silent frame (the lookahead model's first "current" frame is
        # the silent one its state starts with)
        delayed, _ = causal.forward_frames(torch.cat([torch.zeros(2, 1, ahead.window), frames], 1))
        out, _ = ahead.forward_frames(frames)
        assert torch.allclose(out, delayed[:, :30], rtol=0, atol=1e-6)
        ahead = with_lookahead(ahead)
        x = 0.1 * torch.randn(1, 128 * 16)
        y = ahead(x)
        assert not torch.allclose(y, causal(x), atol=1e-4)
        # the future now matters, but only one hop of it: output up to the latency before a change is untouched,
        # and output within it changes
        x2 = x.clone()
        x2[:, 128 * 10:] += 0.3 * torch.randn(1, 128 * 6)
        y2 = ahead(x2)
        edge = 128 * 10 - ahead.latency_samples
        assert torch.equal(y2[:, :edge], y[:, :edge])
        assert not torch.allclose(y2[:, edge:edge + ahead.hop], y[:, edge:edge + ahead.hop], atol=1e-6)


@pytest.mark.parametrize("key", ["past_frames", "lookahead_frames"])
def test_past_frames_and_lookahead_need_the_full_resolution_layer(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_generator("lowlat", {**TINY_LOWLAT, "full_res_channels": 0, key: 2})


def test_negative_lookahead_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot be negative"):
        build_generator("lowlat", {**TINY_LOWLAT, "lookahead_frames": -1})


def test_segan_latent_zero_is_deterministic_and_seeded_latent_differs() -> None:
    torch.manual_seed(2)
    gen = build_generator("segan", TINY_SEGAN).eval()
    assert isinstance(gen, SeganGenerator)
    frames = 0.1 * torch.randn(1, 3, gen.window)
    with torch.no_grad():
        a, _ = gen.forward_frames(frames)
        b, _ = gen.forward_frames(frames, z=torch.zeros(3, TINY_SEGAN["z_channels"], gen.z_len))
        c, _ = gen.forward_frames(frames, z=gen.latent(3, torch.Generator().manual_seed(0)))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("layers", [1, 2])
def test_gru_written_out_computes_what_the_gru_does(layers: int) -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 5, num_layers=layers, batch_first=True)
    x, h0 = torch.randn(3, 7, 6), torch.randn(layers, 3, 5)
    for start in (h0, None):
        want, want_h = gru(x, start)
        got, got_h = gru_written_out(gru, x, start)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=1e-5)


def test_the_export_switch_keeps_the_generators_output() -> None:
    torch.manual_seed(1)
    gen = build_generator("lowlat", {**TINY_LOWLAT, "band_gru": 8, "past_frames": 1}).eval()
    x = 0.1 * torch.randn(2, 4000)
    with torch.no_grad():
        want = gen(x)
        gen.gru_as_matmul = True
        torch.testing.assert_close(gen(x), want, atol=1e-5, rtol=1e-4)


def test_parameter_counts_and_macs() -> None:
    gen = build_generator("lowlat")
    n = count_parameters(gen)
    assert n == sum(p.numel() for p in gen.state_dict().values() if p.is_floating_point())
    # The live model must stay small: well under a million parameters and 0.5 GMAC per second of audio.
    assert 100_000 < n < 1_000_000
    macs = macs_per_second(gen)
    assert 20e6 < macs < 500e6
    tiny = build_generator("lowlat", TINY_LOWLAT)
    assert count_parameters(tiny) < n and macs_per_second(tiny) < macs
    seg = build_generator("segan")
    assert count_parameters(seg) > 50_000_000  # SEGAN's G is tens of millions of parameters


def test_discriminator_scores_pairs_and_uses_spectral_norm() -> None:
    cfg = make_discriminator_config({"channels": [4, 8], "kernel": 5})
    d = Discriminator(cfg)
    scores = d(torch.randn(3, 1024), torch.randn(3, 1024))
    assert scores.shape[0] == 3 and scores.shape[1] == 1
    assert any("parametrizations" in name for name, _ in d.named_parameters())
    plain = Discriminator(make_discriminator_config({"channels": [4, 8], "kernel": 5, "spectral_norm": False}))
    assert not any("parametrizations" in name for name, _ in plain.named_parameters())


def test_unknown_config_keys_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="gru_hiden"):
        make_config("lowlat", {"gru_hiden": 3})
    with pytest.raises(ConfigError, match="valid keys"):
        make_discriminator_config({"chanels": [1]})
    with pytest.raises(ConfigError, match="lowlat"):
        build_generator("wavenet")
