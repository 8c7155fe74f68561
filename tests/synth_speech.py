"""A deterministic speech-like test signal: a glottal pulse train with a gliding pitch through three formant
resonators, gated into syllables and pauses. PESQ and STOI treat it like voiced speech (PESQ of it against itself
is ~4.64), which white noise or a pure tone would not give."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

FORMANTS = ((700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0))  # (centre Hz, bandwidth Hz) of an /a/-like vowel


def speechlike(seconds: float, sr: int = 16000, seed: int = 0, peak: float = 0.3) -> np.ndarray:
    """float32 ``[round(seconds * sr)]`` with peak amplitude ``peak``."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    t = np.arange(n) / sr
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t) + 10.0 * rng.standard_normal()
    pulses = (np.diff(np.floor(np.cumsum(f0 / sr)), prepend=0.0) > 0).astype(np.float64)
    source = pulses + 0.02 * rng.standard_normal(n)
    voiced = np.zeros(n)
    for centre, bandwidth in FORMANTS:
        r = np.exp(-np.pi * bandwidth / sr)
        theta = 2 * np.pi * centre / sr
        voiced += lfilter([1 - r], [1.0, -2 * r * np.cos(theta), r * r], source)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, np.pi)), 0.0, None) ** 0.7
    pauses = np.sin(2 * np.pi * 0.4 * t + 1.0) > -0.6
    y = voiced * syllables * pauses
    return (peak * y / np.max(np.abs(y))).astype(np.float32)


def add_noise(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``clean`` plus white noise scaled to ``snr_db`` (power ratio over the whole clip), float32 ``[T]``."""
    noise = np.random.default_rng(seed).standard_normal(clean.shape[0])
    noise *= np.sqrt(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2)) / 10 ** (snr_db / 20)
    return (clean + noise).astype(np.float32)
