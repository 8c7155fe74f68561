"""Training data: dynamic noisy/clean mixing from a corpus, paired folders, and fixed validation pairs.

Two kinds of input are accepted everywhere:

* a corpus written by ``denoise data build`` (``manifest.jsonl`` + ``speech/`` + ``noise/`` + fixed ``valid/`` and
  ``test/`` pair sets): the ``train`` split is mixed on the fly, so every epoch sees new (speech, noise, SNR, gain,
  room) combinations while the corpus on disk stays small;
* a paired folder in the VoiceBank-DEMAND layout (``clean/`` and ``noisy/`` with the same file names), validated when
  opened.

Reverb policy: when a simulated room is applied, the *input* is the clean speech convolved with the full room
response (plus noise), while the *target* keeps only the direct path and the first 50 ms of early reflections. The
model therefore learns to remove late reverberation (which hurts intelligibility) but is not asked to undo the
early reflections that colour every real microphone, which would be an ill-posed inverse problem at 8 ms latency.

Signals are returned without pre-emphasis (the trainer applies it), float32, in [-1, 1], time-aligned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy import signal as sps

from realtime.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SYNTHETIC_KINDS = ("white", "pink", "brown", "hum", "clicks")
_EPS = 1e-10
# Frames whose level is this far below the loudest frame count as pauses when picking speech segments.
_ACTIVE_BELOW_PEAK_DB = 35.0


# ---------------------------------------------------------------------------------------------------------------------
# numpy signal helpers (shared with training.corpus for the fixed valid/test sets)
# ---------------------------------------------------------------------------------------------------------------------


def power(x: np.ndarray) -> float:
    """Mean square of ``x`` [T]."""
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def frame_levels_db(x: np.ndarray, frame: int = 320, hop: int = 160) -> np.ndarray:
    """Per-frame RMS level in dBFS of ``x`` [T] → [F] (20 ms frames, 10 ms hop at 16 kHz); one frame if shorter."""
    if x.size < frame:
        return np.array([10.0 * math.log10(power(x) + _EPS)])
    n = 1 + (x.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    return 10.0 * np.log10(np.mean(np.square(x[idx], dtype=np.float64), axis=1) + _EPS)


def active_level_db(x: np.ndarray) -> float:
    """Level in dBFS of the active (non-pause) frames of ``x`` [T], a cheap stand-in for ITU-T P.56 speech level."""
    levels = frame_levels_db(x)
    active = levels[levels > levels.max() - _ACTIVE_BELOW_PEAK_DB]
    return float(10.0 * np.log10(np.mean(10.0 ** (active / 10.0)) + _EPS))


def scale_to_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Return ``noise`` [T] scaled so that 10·log10(P(clean)/P(noise)) equals ``snr_db`` over the whole segment."""
    pn = power(noise)
    if pn <= _EPS:
        return noise
    return (noise * math.sqrt(power(clean) / (pn * 10.0 ** (snr_db / 10.0)))).astype(np.float32)


def synthetic_noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """A synthetic noise [n] float32 with unit RMS: white, pink (1/f), brown (1/f²), mains hum or clicks."""
    if kind in ("white", "pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / sample_rate)
        f[0] = f[1] if n > 1 else 1.0
        # Power ∝ 1/f^α, so amplitude ∝ f^(-α/2); the 20 Hz floor keeps brown noise from being one DC wander.
        alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        spec *= np.maximum(f, 20.0) ** (-alpha / 2.0)
        x = np.fft.irfft(spec, n)
    elif kind == "hum":
        t = np.arange(n) / sample_rate
        base = float(rng.choice([50.0, 60.0])) * (1.0 + rng.uniform(-0.005, 0.005))
        x = np.zeros(n)
        # Rectifier and transformer hum are rich in odd harmonics; amplitudes fall off at a random rate.
        for h in range(1, int(rng.integers(4, 12)) + 1):
            amp = rng.uniform(0.2, 1.0) / h ** rng.uniform(0.5, 1.5) * (1.5 if h % 2 else 0.7)
            if base * h < sample_rate / 2:
                x += amp * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi))
        x += 0.01 * rng.standard_normal(n)
    elif kind == "clicks":
        x = 0.003 * rng.standard_normal(n)
        rate = rng.uniform(1.0, 20.0)  # clicks per second
        for pos in rng.integers(0, max(n, 1), size=max(1, int(rate * n / sample_rate))):
            length = int(rng.integers(8, 160))
            burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4.0)) * rng.uniform(0.3, 1.0)
            end = min(n, pos + length)
            x[pos:end] += burst[: end - pos]
    else:
        raise ValueError(f"unknown synthetic noise kind {kind!r}; expected one of {SYNTHETIC_KINDS}")
    rms = math.sqrt(power(x))
    return (x / rms if rms > 0 else x).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, sample_rate: int = 16000, rt60: tuple[float, float] = (0.2, 0.8),
                  early_ms: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic room impulse response: (full [L], early [L]) float32, both with a unit direct path at index 0.

    Exponentially decaying Gaussian noise with the drawn RT60 (energy falls 60 dB in rt60 seconds), a few discrete
    early reflections and a direct-to-reverberant ratio that varies with a random source distance. ``early`` is the
    same response truncated after ``early_ms`` with a 5 ms fade — the target used when training with reverb.
    """
    t60 = rng.uniform(*rt60)
    length = int(t60 * sample_rate)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9078 * t / t60)  # ln(1000) = 6.9078 → -60 dB at t60
    tail[: int(0.002 * sample_rate)] = 0.0  # the diffuse tail starts after the direct sound
    for _ in range(int(rng.integers(3, 8))):
        tail[int(rng.uniform(0.002, 0.03) * sample_rate)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7)
    drr_db = rng.uniform(-3.0, 12.0)
    tail *= math.sqrt(1.0 / (np.sum(tail**2) * 10.0 ** (drr_db / 10.0)))
    full = tail
    full[0] = 1.0
    early = full.copy()
    cut, fade = int(early_ms / 1000.0 * sample_rate), int(0.005 * sample_rate)
    if cut < length:
        early[cut : cut + fade] *= np.linspace(1.0, 0.0, min(fade, length - cut))
        early[cut + fade :] = 0.0
    return full.astype(np.float32), early.astype(np.float32)


def bandlimit(x: np.ndarray, cutoff_hz: float, sample_rate: int = 16000) -> np.ndarray:
    """Low-pass ``x`` [T] at ``cutoff_hz`` (8th-order Butterworth, zero phase), as a narrowband codec/mic would."""
    sos = sps.butter(8, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    return sps.sosfiltfilt(sos, x).astype(np.float32)


def _loop_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample window of ``x`` [T]; shorter recordings are tiled from a random phase."""
    if x.size >= n:
        start = int(rng.integers(0, x.size - n + 1))
        return x[start : start + n]
    reps = -(-n // x.size) + 1
    tiled = np.tile(x, reps)
    start = int(rng.integers(0, x.size))
    return tiled[start : start + n]


def _speech_crop(x: np.ndarray, n: int, rng: np.random.Generator, tries: int = 8) -> np.ndarray:
    """A random ``n``-sample window of ``x`` [T] holding speech (zero-padded at a random offset if ``x`` is short)."""
    if x.size <= n:
        out = np.zeros(n, np.float32)
        start = int(rng.integers(0, n - x.size + 1))
        out[start : start + x.size] = x
        return out
    peak = frame_levels_db(x).max()
    best, best_level = x[:n], -np.inf
    for _ in range(tries):
        start = int(rng.integers(0, x.size - n + 1))
        seg = x[start : start + n]
        level = 10.0 * math.log10(power(seg) + _EPS)
        if level > peak - 20.0:  # at least a syllable's worth of energy in the window
            return seg
        if level > best_level:
            best, best_level = seg, level
    return best


# ---------------------------------------------------------------------------------------------------------------------
# mixing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class MixConfig:
    """Every knob of dynamic mixing. Probabilities are per example; ranges are drawn uniformly.

    snr_db: SNR range of speech to (real, synthetic or babble) noise, over the whole segment.
    gain_db: active speech level range in dBFS of the clean target (the noisy input follows; peaks are kept < 1).
    reverb_prob: probability of a simulated room (input reverberant, target direct + first 50 ms; see module doc).
    rt60: RT60 range in seconds of the simulated rooms.
    bandlimit_prob: probability of low-passing the *input* at a random cutoff in ``bandlimit_hz`` (target full band).
    clip_prob: probability of hard-clipping the *input* at a random fraction ``clip_level`` of its peak.
    synthetic_noise_prob: probability that the noise is synthetic (white/pink/brown/hum/clicks) instead of recorded.
    babble_prob: probability that the noise is babble: the sum of 3–8 utterances of other training speakers.
    babble_talkers: inclusive range of the number of babble talkers.
    second_noise_prob: probability of adding a second recorded/synthetic noise 0–10 dB below the first.
    """

    snr_db: tuple[float, float] = (-5.0, 20.0)
    gain_db: tuple[float, float] = (-25.0, -5.0)
    reverb_prob: float = 0.2
    rt60: tuple[float, float] = (0.2, 0.8)
    bandlimit_prob: float = 0.05
    bandlimit_hz: tuple[float, float] = (3400.0, 7000.0)
    clip_prob: float = 0.03
    clip_level: tuple[float, float] = (0.3, 0.8)
    synthetic_noise_prob: float = 0.15
    babble_prob: float = 0.1
    babble_talkers: tuple[int, int] = (3, 8)
    second_noise_prob: float = 0.1
    synthetic_kinds: tuple[str, ...] = field(default_factory=lambda: SYNTHETIC_KINDS)

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "bandlimit_prob", "clip_prob", "synthetic_noise_prob", "babble_prob",
                     "second_noise_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"MixConfig.{name} = {value} is not a probability.", "use a value in [0, 1].")
        for name in ("snr_db", "gain_db", "rt60", "bandlimit_hz", "clip_level", "babble_talkers"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise DataError(f"MixConfig.{name} = ({lo}, {hi}) has low > high.", "give the range as (low, high).")
        if self.synthetic_noise_prob + self.babble_prob > 1.0:
            raise DataError(f"MixConfig synthetic_noise_prob + babble_prob = "
                            f"{self.synthetic_noise_prob + self.babble_prob} exceeds 1.",
                            "lower one of them; the rest of the probability goes to recorded noise.")
        unknown = set(self.synthetic_kinds) - set(SYNTHETIC_KINDS)
        if unknown:
            raise DataError(f"MixConfig.synthetic_kinds has unknown kinds {sorted(unknown)}.",
                            f"use a subset of {list(SYNTHETIC_KINDS)}.")


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, level_db: float, rng: np.random.Generator,
        mix_config: MixConfig | None = None, sample_rate: int = 16000,
        degrade: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mix one example: (noisy [T], clean target [T]) float32, time-aligned, peaks below 1.

    ``clean`` and ``noise`` are [T] with T equal. The SNR is measured between the (possibly reverberant) speech that
    reaches the microphone and the noise. With ``degrade`` the input may also get reverb, band-limiting and clipping,
    drawn from ``mix_config``; without it (fixed evaluation sets) the only corruption is the additive noise.
    """
    cfg = mix_config or MixConfig()
    n = clean.size
    target = clean.astype(np.float32)
    heard = target
    if degrade and rng.random() < cfg.reverb_prob:
        full, early = synthetic_rir(rng, sample_rate, cfg.rt60)
        heard = sps.fftconvolve(clean, full)[:n].astype(np.float32)
        target = sps.fftconvolve(clean, early)[:n].astype(np.float32)
    noise = scale_to_snr(heard, noise, snr_db)
    noisy = heard + noise
    # The active level of the *target* sets the gain so that SNR and loudness are drawn independently.
    gain = 10.0 ** ((level_db - active_level_db(target)) / 20.0) if power(target) > _EPS else 1.0
    noisy, target = noisy * gain, target * gain
    if degrade and rng.random() < cfg.bandlimit_prob:
        noisy = bandlimit(noisy, rng.uniform(*cfg.bandlimit_hz), sample_rate)
    if degrade and rng.random() < cfg.clip_prob:
        limit = rng.uniform(*cfg.clip_level) * float(np.max(np.abs(noisy)) + _EPS)
        noisy = np.clip(noisy, -limit, limit)
    peak = max(float(np.max(np.abs(noisy), initial=0.0)), float(np.max(np.abs(target), initial=0.0)))
    if peak > 0.99:
        noisy, target = noisy * (0.99 / peak), target * (0.99 / peak)
    return noisy.astype(np.float32), target.astype(np.float32)
