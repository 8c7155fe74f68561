"""Generators and discriminators, built from dataclass configs so that a checkpoint rebuilds its own model.

Every generator is a *frame model* (see ``realtime/spec.py``): ``step`` maps one analysis-windowed frame of
``window`` pre-emphasised samples, plus recurrent state, to one enhanced frame that is synthesis-windowed and
overlap-added every ``hop`` samples. ``forward`` runs the same computation over a whole signal in one pass
(frames batched, recurrence over time), so training sees exactly what streaming inference computes.

Presets
-------
``lowlat``  SEGAN-style encoder/decoder with skip connections over the frequency axis of a 16 ms frame
            (window 256, hop 128 at 16 kHz: 8 ms algorithmic latency), a GRU bottleneck carrying state across
            hops, optionally a per-band GRU over time at the bottleneck (``band_gru``; the training preset turns
            it on), and a bounded complex mask on the frame's spectrum. The DFT is a fixed matrix product so the
            exported graph needs no FFT operator.
``segan``   The published SEGAN generator: 16384-sample windows, 11 strided conv layers (kernel 31, stride 2,
            16->1024 channels), mirrored transposed convs with skip connections, PReLU, latent z at the bottleneck
            (an explicit input; zeros unless asked, so inference is deterministic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from realtime.dsp import window as np_window
from realtime.errors import ConfigError


# --------------------------------------------------------------------------------------------------- configs
@dataclass
class LowLatConfig:
    sample_rate: int = 16000
    window: int = 256
    hop: int = 128
    full_res_channels: int = 16  # a stride-1 layer in and out at every frequency bin (harmonic-level detail)
    channels: tuple[int, ...] = (16, 32, 48)  # encoder channels; each layer halves the frequency axis
    kernel: int = 5
    bottleneck: int = 192  # linear projection into the GRU
    gru_hidden: int = 192
    gru_layers: int = 1
    band_gru: int = 0  # hidden size of a per-band GRU over time at the bottleneck (0: none)
    past_frames: int = 0  # past frames seen by the input layer and filtered by the output (a deep filter; 0: none)
    lookahead_frames: int = 0  # future frames seen and filtered likewise; each adds one hop of latency (0: causal)
    dropout: float = 0.0
    compress: float = 0.3  # magnitude compression exponent of the input features
    mask_bound: float = 1.0  # the complex mask's magnitude is bound to [0, mask_bound)


@dataclass
class SeganConfig:
    sample_rate: int = 16000
    window: int = 16384
    hop: int = 8192
    channels: tuple[int, ...] = (16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 1024)
    kernel: int = 31
    z_channels: int = 1024  # 0 removes the latent
    dropout: float = 0.0


CONFIGS: dict[str, type] = {"lowlat": LowLatConfig, "segan": SeganConfig}


def make_config(preset: str, values: dict[str, Any] | None = None) -> LowLatConfig | SeganConfig:
    """Build the config dataclass of ``preset`` from a (possibly JSON-loaded) mapping; unknown keys raise."""
    if preset not in CONFIGS:
        raise ConfigError(f"Unknown generator preset {preset!r}.", f"use one of {sorted(CONFIGS)}.")
    cls = CONFIGS[preset]
    values = dict(values or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"Unknown {preset} generator keys {unknown}.", f"valid keys: {sorted(names)}.")
    for f in fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


# --------------------------------------------------------------------------------------------------- framing
def torch_window(name: str, length: int) -> torch.Tensor:
    return torch.from_numpy(np_window(name, length))


def frame_signal(x: torch.Tensor, window: int, hop: int, lookahead: int = 0) -> tuple[torch.Tensor, int]:
    """Frame ``x`` [B, T] exactly as the streaming engine does: ``window - hop`` zeros in front, hop-spaced frames.

    Returns frames [B, N, window] and the padded length. Frame k covers input samples [k*hop - L, k*hop + hop)
    with L = window - hop, so the overlap-added output, trimmed by L (+ the model's ``lookahead`` samples), is
    aligned with the input; ``lookahead`` more zeros at the end let such a model emit the last frames.
    """
    lat = window - hop
    total = x.shape[-1] + 2 * lat + lookahead
    n = max(1, math.ceil((total - window) / hop) + 1)
    padded = (n - 1) * hop + window
    xp = F.pad(x, (lat, padded - x.shape[-1] - lat))
    return xp.unfold(-1, window, hop), padded


def overlap_add(frames: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Overlap-add frames [B, N, W] with stride ``hop`` into [B, length]."""
    b, _n, w = frames.shape
    out = F.fold(frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, w), stride=(1, hop))
    return out.reshape(b, length)


class FrameGenerator(nn.Module):
    """Shared framing logic. Subclasses implement ``forward_frames``/``step`` and the state description."""

    preset: str
    analysis_window: str
    synthesis_window: str
    lookahead: int = 0

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.window = cfg.window
        self.hop = cfg.hop
        self.register_buffer("win_a", torch_window(self.analysis_window, cfg.window), persistent=False)
        self.register_buffer("win_s", torch_window(self.synthesis_window, cfg.window), persistent=False)

    @property
    def latency_samples(self) -> int:
        return self.window - self.hop + self.lookahead

    def state_spec(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(input name, output name, shape without batch) of each recurrent state tensor."""
        return []

    def initial_state(self, batch: int, device: torch.device | None = None) -> list[torch.Tensor]:
        return [torch.zeros((batch, *shape), device=device) for _, _, shape in self.state_spec()]

    def forward_frames(self, frames: torch.Tensor, state: list[torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """frames [B, N, W] (analysis-windowed) -> enhanced frames [B, N, W] and the state after the last frame."""
        raise NotImplementedError

    def step(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One hop: frame [B, W] (analysis-windowed) + state -> (enhanced frame [B, W], *new state). Exported."""
        out, new_state = self.forward_frames(frame.unsqueeze(1), list(state))
        return (out.squeeze(1), *new_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance a whole pre-emphasised signal: x [B, T] -> [B, T], aligned with x (latency compensated)."""
        t = x.shape[-1]
        frames, length = frame_signal(x, self.window, self.hop, self.lookahead)
        out, _ = self.forward_frames(frames * self.win_a)
        y = overlap_add(out * self.win_s, self.hop, length)
        lat = self.latency_samples
        return y[:, lat:lat + t]


def gru_written_out(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``gru(x, h0)`` computes (batch_first, any layer count), written out as matrix products and gate ops.

    The same arithmetic as PyTorch's GRU (gates r, z, n in that order; the reset gate applied to the recurrent
    candidate after its matrix product). The exporter traces this instead of the GRU operator when it quantizes to
    int8: ONNX Runtime quantizes ``MatMul`` but has no integer GRU, and the recurrent weights are most of the
    model's bytes, which a one-hop call must stream from memory."""
    b, n, _ = x.shape
    hidden = gru.hidden_size
    seq, finals = x, []
    for layer in range(gru.num_layers):
        w_ih, w_hh = getattr(gru, f"weight_ih_l{layer}"), getattr(gru, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(gru, f"bias_ih_l{layer}", None), getattr(gru, f"bias_hh_l{layer}", None)
        gates_in = torch.matmul(seq, w_ih.t())
        if b_ih is not None:
            gates_in = gates_in + b_ih
        h = h0[layer] if h0 is not None else x.new_zeros(b, hidden)
        outs = []
        for t in range(n):
            gates_h = torch.matmul(h, w_hh.t())
            if b_hh is not None:
                gates_h = gates_h + b_hh
            i_r, i_z, i_n = gates_in[:, t].chunk(3, -1)
            h_r, h_z, h_n = gates_h.chunk(3, -1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            cand = torch.tanh(i_n + r * h_n)
            h = cand + z * (h - cand)
            outs.append(h)
        seq = torch.stack(outs, 1)
        finals.append(h)
    return seq, torch.stack(finals, 0)


# --------------------------------------------------------------------------------------------------- lowlat
class LowLatGenerator(FrameGenerator):
    """Spectral U-Net over frequency + GRU over time, per 256-sample frame. See the module docstring."""

    preset = "lowlat"
    analysis_window = "sqrt_hann"
    synthesis_window = "sqrt_hann"
    gru_as_matmul = False  # trace the GRUs written out (see gru_written_out); set on an export copy only

    def __init__(self, cfg: LowLatConfig) -> None:
        super().__init__(cfg)
        w = cfg.window
        self.bins = w // 2 + 1
        k = torch.arange(self.bins, dtype=torch.float64)
        n = torch.arange(w, dtype=torch.float64)
        ang = 2.0 * math.pi * n[:, None] * k[None, :] / w  # [W, F]
        self.register_buffer("dft", torch.cat([torch.cos(ang), -torch.sin(ang)], 1).float(), persistent=False)
        scale = torch.full((self.bins,), 2.0 / w, dtype=torch.float64)
        scale[0] = 1.0 / w
        if w % 2 == 0:
            scale[-1] = 1.0 / w
        idft = torch.cat([torch.cos(ang).T * scale[:, None], -torch.sin(ang).T * scale[:, None]], 0)  # [2F, W]
        self.register_buffer("idft", idft.float(), persistent=False)

        pad = cfg.kernel // 2
        c0 = cfg.full_res_channels
        self.inp = nn.Sequential(nn.Conv1d(3, c0, cfg.kernel, padding=pad), nn.PReLU(c0)) if c0 else nn.Identity()
        chans = (c0 or 3, *cfg.channels)
        self.enc = nn.ModuleList(
            nn.Sequential(nn.Conv1d(chans[i], chans[i + 1], cfg.kernel, stride=2, padding=pad), nn.PReLU(chans[i + 1]))
            for i in range(len(cfg.channels))
        )
        lengths = [self.bins]
        for _ in cfg.channels:
            lengths.append((lengths[-1] + 2 * pad - cfg.kernel) // 2 + 1)
        self.lengths = lengths
        flat = cfg.channels[-1] * lengths[-1]
        self.to_rnn = nn.Sequential(nn.Linear(flat, cfg.bottleneck), nn.PReLU())
        self.rnn = nn.GRU(cfg.bottleneck, cfg.gru_hidden, num_layers=cfg.gru_layers, batch_first=True)
        self.from_rnn = nn.Sequential(nn.Linear(cfg.gru_hidden, flat), nn.PReLU())
        # Per-band memory: one GRU, shared by the bottleneck's frequency bands, runs over time in each band and adds
        # its projection to the band's features (a residual that starts at zero, so a model without it can be
        # fine-tuned into one with it). It tracks each band's noise floor, which the single global GRU summarises
        # in a few hundred numbers for the whole spectrum.
        self.band_rnn = nn.GRU(cfg.channels[-1], cfg.band_gru, batch_first=True) if cfg.band_gru else None
        self.band_out = nn.Linear(cfg.band_gru, cfg.channels[-1]) if cfg.band_gru else None
        # Past-frame context (``past_frames`` = P): the input layer also sees the P previous frames' spectra, and the
        # output is a complex filter over the current and P previous frames of each bin, not a one-tap mask: a bin
        # 31 Hz wide cannot separate a harmonic from the noise beside it within one frame, but a filter over time
        # can follow its phase. Both additions start at zero (a model without them fine-tunes into one with them
        # from its exact output) and cost no latency; the P past spectra are a third recurrent state.
        # Lookahead (``lookahead_frames`` = L) extends the same window forward: the network works on the frame L
        # hops back, its input layer also sees the L newer frames and its filter gets L taps on them. Latency grows
        # by L hops; a causal model fine-tunes into one with lookahead from its exact (delayed) output, since the
        # future paths start at zero too.
        p, la = cfg.past_frames, cfg.lookahead_frames
        if p < 0 or la < 0:
            raise ConfigError(f"generator.past_frames ({p}) and lookahead_frames ({la}) cannot be negative.",
                              "set them to 0 or more.")
        if (p or la) and not c0:
            raise ConfigError("generator.past_frames and lookahead_frames need full_res_channels > 0 (the filter "
                              "taps come from the head).", "set generator.full_res_channels (e.g. 16), or both to 0.")
        self.lookahead = la * cfg.hop
        self.ctx_inp = nn.Conv1d(3 * p, c0, cfg.kernel, padding=pad, bias=False) if p else None
        self.df_head = nn.Conv1d(2 * c0, 2 * p, cfg.kernel, padding=pad) if p else None
        self.fut_inp = nn.Conv1d(3 * la, c0, cfg.kernel, padding=pad, bias=False) if la else None
        self.fut_head = nn.Conv1d(2 * c0, 2 * la, cfg.kernel, padding=pad) if la else None
        # the additive paths above start at zero, so fine-tuning begins from the old model's exact output
        for layer in (self.band_out, self.ctx_inp, self.df_head, self.fut_inp, self.fut_head):
            if layer is not None:
                with torch.no_grad():
                    for t in layer.parameters():
                        t.zero_()
        self.drop = nn.Dropout(cfg.dropout)
        dec_out = (*cfg.channels[:-1][::-1], c0 or 2)
        self.dec = nn.ModuleList()
        for i, c_out in enumerate(dec_out):
            c_skip = cfg.channels[::-1][i]
            l_in, l_out = lengths[-1 - i], lengths[-2 - i]
            out_pad = l_out - ((l_in - 1) * 2 - 2 * pad + cfg.kernel)
            conv = nn.ConvTranspose1d(2 * c_skip, c_out, cfg.kernel, stride=2, padding=pad, output_padding=out_pad)
            self.dec.append(conv if i == len(dec_out) - 1 and not c0 else nn.Sequential(conv, nn.PReLU(c_out)))
        # the mask head sees the decoder and the full-resolution input features; its bias starts the mask near
        # pass-through (|m| = tanh(1)), so training begins from the noisy input rather than from silence
        self.head = nn.Conv1d(2 * c0, 2, cfg.kernel, padding=pad) if c0 else None
        last = self.head if self.head is not None else self.dec[-1]
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0]))

    def _gru(self, gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # ``gru_as_matmul`` is an export-time switch (the int8 export sets it on its copy); the weights are the same
        return gru_written_out(gru, x, h0) if self.gru_as_matmul else gru(x, h0)

    def state_spec(self) -> list[tuple[str, str, tuple[int, ...]]]:
        spec = [("h_in", "h_out", (self.cfg.gru_layers, self.cfg.gru_hidden))]
        if self.cfg.band_gru:
            spec.append(("hb_in", "hb_out", (self.lengths[-1], self.cfg.band_gru)))
        if self.context:
            spec.append(("past_in", "past_out", (self.context, 2 * self.bins)))
        return spec

    @property
    def context(self) -> int:
        """Frames besides the one being enhanced in each filter window (past + lookahead); the state keeps the
        newest ``context`` spectra."""
        return self.cfg.past_frames + self.cfg.lookahead_frames

    def _features(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex spectra [..., 2F] -> input features [..., 3, F]: compressed magnitude and the compressed complex."""
        re, im = spec[..., :self.bins], spec[..., self.bins:]
        mag = torch.sqrt(re * re + im * im + 1e-10)
        mag_c = mag ** self.cfg.compress
        unit = mag_c / mag
        return torch.stack([mag_c, re * unit, im * unit], -2)

    @staticmethod
    def _bounded(m: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex coefficients [..., 2, F] -> (re, im), each coefficient's magnitude bound to [0, bound)."""
        mr, mi = m[..., 0, :], m[..., 1, :]
        m_abs = torch.sqrt(mr * mr + mi * mi + 1e-10)
        gain = bound * torch.tanh(m_abs) / m_abs
        return mr * gain, mi * gain

    def _windows(self, seq: torch.Tensor, n: int, one_hop: bool) -> torch.Tensor:
        """[B, P+N, D] -> [B*N, P+1, D]: for each of the last n frames, it and the P = ``context`` frames before it,
        oldest first."""
        b, p = seq.shape[0], self.context
        if one_hop:  # n == 1 (the exported graph): the sequence is the window, no slicing
            return seq.reshape(b, p + 1, seq.shape[-1])
        return torch.stack([seq[:, k:k + n] for k in range(p + 1)], 2).reshape(b * n, p + 1, seq.shape[-1])

    def step(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # one frame is known here without reading a (traced) shape, so the exported graph takes the one-hop path
        out, new_state = self.forward_frames(frame.unsqueeze(1), list(state), one_hop=True)
        return (out.squeeze(1), *new_state)

    def forward_frames(self, frames: torch.Tensor, state: list[torch.Tensor] | None = None, one_hop: bool = False
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, n, w = frames.shape
        p, f = self.context, self.bins
        spec = frames.reshape(b * n, w) @ self.dft  # [BN, 2F]
        slot = 1 + (1 if self.cfg.band_gru else 0)  # where the past spectra sit in the state list
        if p:
            # the window of frames t-p .. t of each newest frame t, oldest first: the state's p past spectra, then
            # this call's n; the frame enhanced is the one lookahead_frames before the newest. Features are
            # computed once per frame and windowed; one convolution (the past frames', the enhanced frame's and the
            # future frames' weights side by side) reads the window, and one complex filter of p + 1 taps (past
            # taps, the enhanced frame's mask, future taps) is applied to it below.
            past = state[slot] if state else spec.new_zeros(b, p, 2 * f)
            seq = torch.cat([past, spec.reshape(b, n, 2 * f)], 1)  # [B, P+N, 2F]
            seq_feats = self._features(seq).reshape(b, p + n, 3 * f)
            win_spec = self._windows(seq, n, one_hop)  # [BN, P+1, 2F]
            win_feats = self._windows(seq_feats, n, one_hop)  # [BN, P+1, 3F]
            conv, act = self.inp[0], self.inp[1]
            weight = torch.cat([m.weight for m in (self.ctx_inp, conv, self.fut_inp) if m is not None], 1)
            h = act(F.conv1d(win_feats.reshape(b * n, 3 * (p + 1), f), weight, conv.bias, padding=conv.padding))
        else:
            h = self.inp(self._features(spec))  # [BN, C0, F]
        top = h
        skips = []
        for layer in self.enc:
            h = layer(h)
            skips.append(h)
        c, length = h.shape[1], h.shape[2]
        new_state: list[torch.Tensor] = []
        if self.band_rnn is not None and self.band_out is not None:
            hb = h.reshape(b, n, c, length).permute(0, 3, 1, 2).reshape(b * length, n, c)
            hb0 = None if not state else state[1].reshape(1, b * length, self.cfg.band_gru)
            zb, hbn = self._gru(self.band_rnn, hb, hb0)
            h = h + self.band_out(zb).reshape(b, length, n, c).permute(0, 2, 3, 1).reshape(b * n, c, length)
            skips[-1] = h
            new_state.append(hbn.reshape(b, length, self.cfg.band_gru))
        z = self.to_rnn(h.reshape(b, n, c * length))
        h0 = None if not state else state[0].transpose(0, 1).contiguous()
        z, hn = self._gru(self.rnn, self.drop(z), h0)
        h = self.from_rnn(self.drop(z)).reshape(b * n, c, length)
        for layer, skip in zip(self.dec, reversed(skips)):
            h = layer(torch.cat([h, skip], 1))
        if p and self.head is not None:
            # one head for all p + 1 taps; each tap is bound like the mask, and the filtered window is summed
            heads = [m for m in (self.df_head, self.head, self.fut_head) if m is not None]
            weight = torch.cat([m.weight for m in heads], 0)
            bias = torch.cat([m.bias for m in heads], 0)
            taps = F.conv1d(torch.cat([h, top], 1), weight, bias, padding=self.head.padding)
            tr, ti = self._bounded(taps.reshape(b * n, p + 1, 2, f), self.cfg.mask_bound)  # [BN, P+1, F] each
            xr, xi = win_spec[..., :f], win_spec[..., f:]
            out_re = (xr * tr - xi * ti).sum(1)
            out_im = (xr * ti + xi * tr).sum(1)
            new_state.append(seq[:, n:])
        else:
            if self.head is not None:
                h = self.head(torch.cat([h, top], 1))
            mr, mi = self._bounded(h, self.cfg.mask_bound)
            re, im = spec[:, :f], spec[:, f:]
            out_re, out_im = re * mr - im * mi, re * mi + im * mr
        out = torch.cat([out_re, out_im], 1) @ self.idft  # [BN, W]
        return out.reshape(b, n, w), [hn.transpose(0, 1), *new_state]


# --------------------------------------------------------------------------------------------------- segan
class SeganGenerator(FrameGenerator):
    """The published SEGAN generator applied per 16384-sample window (50% overlap, Hann synthesis)."""

    preset = "segan"
    analysis_window = "ones"
    synthesis_window = "hann"

    def __init__(self, cfg: SeganConfig) -> None:
        super().__init__(cfg)
        k, pad = cfg.kernel, cfg.kernel // 2
        chans = (1, *cfg.channels)
        self.enc = nn.ModuleList(
            nn.Conv1d(chans[i], chans[i + 1], k, stride=2, padding=pad) for i in range(len(cfg.channels))
        )
        self.enc_act = nn.ModuleList(nn.PReLU(c) for c in cfg.channels)
        self.drop = nn.Dropout(cfg.dropout)
        dec_in = cfg.channels[-1] + cfg.z_channels
        self.dec = nn.ModuleList()
        self.dec_act = nn.ModuleList()
        outs = (*cfg.channels[:-1][::-1], 1)
        for i, c_out in enumerate(outs):
            self.dec.append(nn.ConvTranspose1d(dec_in, c_out, k, stride=2, padding=pad, output_padding=1))
            if i < len(outs) - 1:
                self.dec_act.append(nn.PReLU(c_out))
                dec_in = 2 * c_out  # concatenated with the mirrored encoder skip
        self.z_len = cfg.window // 2 ** len(cfg.channels)

    def latent(self, batch: int, generator: torch.Generator | None = None, device: torch.device | None = None
               ) -> torch.Tensor:
        """A latent z [B, z_channels, window / 2^layers]; zeros unless a seeded ``generator`` is given."""
        shape = (batch, self.cfg.z_channels, self.z_len)
        if generator is None:
            return torch.zeros(shape, device=device)
        return torch.randn(shape, generator=generator).to(device)

    def forward_frames(self, frames: torch.Tensor, state: list[torch.Tensor] | None = None,
                       z: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, n, w = frames.shape
        h = frames.reshape(b * n, 1, w)
        skips = []
        for conv, act in zip(self.enc, self.enc_act):
            h = act(conv(h))
            skips.append(h)
        skips.pop()  # the bottleneck is not concatenated with itself
        if self.cfg.z_channels:
            h = torch.cat([h, z if z is not None else self.latent(b * n, device=h.device)], 1)
        h = self.drop(h)
        for i, conv in enumerate(self.dec):
            h = conv(h)
            if i < len(self.dec_act):
                h = torch.cat([self.dec_act[i](h), skips[-1 - i]], 1)
        return torch.tanh(h).reshape(b, n, w), []


# --------------------------------------------------------------------------------------------------- D
@dataclass
class DiscriminatorConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 256)
    kernel: int = 15
    stride: int = 4
    spectral_norm: bool = True
    leak: float = 0.3


class Discriminator(nn.Module):
    """Conditional waveform discriminator: (candidate, noisy) [B, 2, T] -> patch scores [B, 1, T'].

    SEGAN's D is a strided conv stack over the two-channel pair; here every layer is spectrally normalised
    (stable on small batches, unlike SEGAN's virtual batch norm) and the output is a map of patch scores so
    the least-squares loss judges every region of the segment.
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        norm = nn.utils.parametrizations.spectral_norm if cfg.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in = 2
        for c in cfg.channels:
            layers += [norm(nn.Conv1d(c_in, c, cfg.kernel, stride=cfg.stride, padding=cfg.kernel // 2)),
                       nn.LeakyReLU(cfg.leak)]
            c_in = c
        layers.append(norm(nn.Conv1d(c_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, candidate: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """candidate, noisy: [B, T] -> scores [B, 1, T']."""
        return self.net(torch.stack([candidate, noisy], 1))


def segan_discriminator_config() -> DiscriminatorConfig:
    """SEGAN's D mirrors its encoder: kernel 31, stride 2, 16->1024 channels."""
    return DiscriminatorConfig(channels=(16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 1024), kernel=31, stride=2)


# --------------------------------------------------------------------------------------------------- build
GENERATORS: dict[str, type[FrameGenerator]] = {"lowlat": LowLatGenerator, "segan": SeganGenerator}


def build_generator(preset: str, values: dict[str, Any] | None = None) -> FrameGenerator:
    cfg = make_config(preset, values)
    return GENERATORS[preset](cfg)


def make_discriminator_config(values: dict[str, Any] | None = None, preset: str = "lowlat") -> DiscriminatorConfig:
    base = asdict(segan_discriminator_config() if preset == "segan" else DiscriminatorConfig())
    values = dict(values or {})
    unknown = sorted(set(values) - set(base))
    if unknown:
        raise ConfigError(f"Unknown discriminator keys {unknown}.", f"valid keys: {sorted(base)}.")
    base.update(values)
    base["channels"] = tuple(base["channels"])
    return DiscriminatorConfig(**base)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs_per_second(gen: FrameGenerator) -> float:
    """Multiply-accumulates per second of audio of one streaming step, counted with forward hooks."""
    total = [0.0]

    def conv_hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(m, nn.ConvTranspose1d):
            total[0] += inp[0].numel() * m.out_channels * m.kernel_size[0] / m.groups
        else:
            total[0] += out.numel() * m.in_channels * m.kernel_size[0] / m.groups

    def linear_hook(m: nn.Linear, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        total[0] += out.numel() * m.in_features

    def gru_hook(m: nn.GRU, inp: tuple[torch.Tensor, ...], out: tuple[torch.Tensor, torch.Tensor]) -> None:
        steps = out[0].shape[0] * out[0].shape[1]
        h = m.hidden_size
        for layer in range(m.num_layers):
            i = m.input_size if layer == 0 else h
            total[0] += steps * 3 * h * (i + h)

    hooks = []
    for mod in gen.modules():
        if isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d)):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, nn.GRU):
            hooks.append(mod.register_forward_hook(gru_hook))
    with torch.no_grad():
        frame = torch.zeros(1, gen.window)
        gen.step(frame, *gen.initial_state(1))
    for hk in hooks:
        hk.remove()
    if isinstance(gen, LowLatGenerator):
        total[0] += 2 * gen.window * 2 * gen.bins  # the DFT and inverse DFT matrix products
    return total[0] * gen.sample_rate / gen.hop


def config_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
