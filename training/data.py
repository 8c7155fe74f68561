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
import soxr
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


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` played ``factor`` times as fast: pitch and formants times ``factor``, length divided by it."""
    return soxr.resample(x, 1.0, 1.0 / factor).astype(np.float32)


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
    speed_prob: probability of speed-perturbing the speech (target and input alike) by a factor in ``speed``: pitch
        and formants move by that factor (0.8 lowers a voice by ~4 semitones), which turns the corpus's few voices
        (mostly female) into many, e.g. lower, more male-like ones. Noise is not perturbed.
    speed: range of the speed factor.
    speaker_power: a speaker is drawn with probability proportional to their minutes to this power: 0.5 (default)
        keeps the big voices (Allison, tuxpaint) from drowning the small ones without repeating the small ones to
        overfitting; 0 draws every voice equally often (more distinct voices per batch); 1 follows the minutes.
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
    speed_prob: float = 0.0
    speed: tuple[float, float] = (0.8, 1.15)
    speaker_power: float = 0.5
    synthetic_kinds: tuple[str, ...] = field(default_factory=lambda: SYNTHETIC_KINDS)

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "bandlimit_prob", "clip_prob", "synthetic_noise_prob", "babble_prob",
                     "second_noise_prob", "speed_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"MixConfig.{name} = {value} is not a probability.", "use a value in [0, 1].")
        if not 0.0 <= self.speaker_power <= 1.0:
            raise DataError(f"MixConfig.speaker_power = {self.speaker_power} is outside [0, 1].",
                            "use 0 (every voice equally often), 0.5 (square root of minutes, the default) or 1.")
        if not 0.5 <= self.speed[0] <= self.speed[1] <= 2.0:
            raise DataError(f"MixConfig.speed = {self.speed} is not a range within (0.5, 2.0).",
                            "give e.g. [0.8, 1.15].")
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


# ---------------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------------


def _read(path: Path, start: int = 0, frames: int = -1) -> np.ndarray:
    """``frames`` samples of a mono file from ``start`` as float32 [T] (the whole file by default)."""
    data, _ = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    return data[:, 0]


class SeededItems(torch.utils.data.Dataset):
    """Base of the training datasets: every item draws from its own reproducible random generator.

    The generator differs by example, epoch and visit, and in a DataLoader worker also by the loader's seed. The
    worker's base seed comes from torch's generator, so a trainer that calls ``torch.manual_seed`` gets the same
    stream again, while ``persistent_workers=False`` loaders still see fresh mixtures every epoch.
    """

    seed: int = 0

    def __init__(self) -> None:
        self.epoch = 0
        self._visits: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        """Change the items of the next epoch (for loaders whose workers persist)."""
        self.epoch = epoch

    def item_rng(self, index: int) -> np.random.Generator:
        visits = self._visits.get(index, 0)
        self._visits[index] = visits + 1
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else int(info.seed - info.id) % (2**63)
        return np.random.default_rng([self.seed, self.epoch, index, visits, worker])


def load_manifest(corpus: Path) -> list[dict]:
    """The records of ``corpus/manifest.jsonl`` (see training.corpus.Record), with a DataError if unreadable."""
    path = corpus / "manifest.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read the corpus manifest {path}: {exc}.",
                        "rebuild it with `denoise data build --out FOLDER`.") from exc
    return records


# ---------------------------------------------------------------------------------------------------------------------
# dynamic mixing from a corpus
# ---------------------------------------------------------------------------------------------------------------------


class CorpusMixDataset(SeededItems):
    """Map-style dataset of freshly mixed (noisy [segment], clean [segment]) float32 tensors from a corpus split.

    Every item draws a speaker, a stretch of their speech (utterances joined with short pauses so short clips do not
    become mostly zeros), a noise (recorded: a noise source package uniformly, then a file; synthetic; or babble of
    other speakers of the same split), an SNR, a level and optional degradations, all from ``mix``. Items are random
    but reproducible: they depend on (seed, epoch, index, visit, DataLoader worker seed). Audio is read from disk per
    item (WAV seeks are cheap), so workers share nothing and memory stays small.

    ``len`` is the number of items per epoch: by default one per ``segment`` of training speech.
    """

    def __init__(self, corpus: Path, split: str, segment: int, sample_rate: int = 16000,
                 mix_config: MixConfig | None = None, seed: int = 0, items_per_epoch: int | None = None) -> None:
        if sample_rate != 16000:
            raise DataError(f"The corpus at {corpus} is 16 kHz but sample_rate={sample_rate} was asked for.",
                            "train at 16000 Hz, or use a paired folder recorded at your rate.")
        if segment < 160:
            raise DataError(f"segment={segment} samples is too short to hold speech.", "use at least 160 samples.")
        self.corpus, self.segment, self.sample_rate, self.seed = Path(corpus), segment, sample_rate, seed
        self.mix = mix_config or MixConfig()
        super().__init__()
        records = [r for r in load_manifest(self.corpus) if r["split"] == split]
        speakers: dict[str, list[tuple[str, int]]] = {}
        noise: dict[str, list[tuple[str, int]]] = {}
        for r in records:
            entry = (r["path"], round(r["duration"] * sample_rate))
            if r["kind"] == "speech":
                speakers.setdefault(r["speaker"] or r["group"], []).append(entry)
            else:
                noise.setdefault(r["source"] + ":" + ("music" if r["category"] == "music" else "sfx"), []).append(entry)
        if not speakers:
            raise DataError(f"The corpus at {corpus} has no speech in split {split!r}.",
                            "rebuild it with `denoise data build`, or pick split train/valid/test.")
        if not noise and self.mix.synthetic_noise_prob + self.mix.babble_prob < 1.0:
            raise DataError(f"The corpus at {corpus} has no recorded noise in split {split!r}.",
                            "rebuild it, or set synthetic_noise_prob + babble_prob = 1.")
        self.speakers = speakers
        self.speaker_names = sorted(speakers)
        # Speakers drawn in proportion to minutes ** speaker_power (see MixConfig).
        minutes = np.array([sum(n for _, n in speakers[s]) for s in self.speaker_names], dtype=np.float64)
        weight = minutes ** self.mix.speaker_power
        self.speaker_p = weight / weight.sum()
        self.noise = noise
        self.noise_families = sorted(noise)
        self.length = items_per_epoch or max(1000, int(minutes.sum() // segment))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.item_rng(index)
        noisy, clean = self.draw(rng)
        return torch.from_numpy(noisy), torch.from_numpy(clean)

    def speech(self, speaker: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples [n] of ``speaker``: a crop of one long file, or short files joined with 0.05–0.3 s pauses."""
        files = self.speakers[speaker]
        path, length = files[int(rng.integers(len(files)))]
        if length >= n:
            return _speech_crop(_read(self.corpus / path), n, rng)
        parts, total = [_read(self.corpus / path)], length
        for _ in range(64):
            if total >= n:
                break
            gap = np.zeros(int(rng.uniform(0.05, 0.3) * self.sample_rate), np.float32)
            path, length = files[int(rng.integers(len(files)))]
            parts += [gap, _read(self.corpus / path)]
            total += gap.size + length
        joined = np.concatenate(parts)
        return _speech_crop(joined, n, rng)

    def recorded_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples [n] of a recorded noise: a family (source package, music or not) uniformly, then a file."""
        files = self.noise[self.noise_families[int(rng.integers(len(self.noise_families)))]]
        path, length = files[int(rng.integers(len(files)))]
        if length > n:
            start = int(rng.integers(0, length - n + 1))
            return _read(self.corpus / path, start, n)
        return _loop_crop(_read(self.corpus / path), n, rng)

    def noise_for(self, speaker: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """A noise [n] with unit-ish scale (it is rescaled to the SNR): babble, synthetic or recorded."""
        u = rng.random()
        if u < self.mix.babble_prob and len(self.speaker_names) > 1:
            others = [s for s in self.speaker_names if s != speaker]
            lo, hi = self.mix.babble_talkers
            talkers = rng.choice(len(others), size=min(len(others), int(rng.integers(lo, hi + 1))), replace=False)
            return np.sum([self.speech(others[t], n, rng) for t in talkers], axis=0).astype(np.float32)
        if u < self.mix.babble_prob + self.mix.synthetic_noise_prob or not self.noise_families:
            return synthetic_noise(str(rng.choice(self.mix.synthetic_kinds)), n, rng, self.sample_rate)
        return self.recorded_noise(n, rng)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (noisy [segment], clean [segment]) float32 pair from ``rng``."""
        n = self.segment
        speaker = self.speaker_names[int(rng.choice(len(self.speaker_names), p=self.speaker_p))]
        if self.mix.speed_prob and rng.random() < self.mix.speed_prob:  # no draw when off: old streams unchanged
            factor = float(rng.uniform(*self.mix.speed))
            clean = change_speed(self.speech(speaker, math.ceil(n * factor) + 64, rng), factor)[:n]
        else:
            clean = self.speech(speaker, n, rng)
        noise = self.noise_for(speaker, n, rng)
        if rng.random() < self.mix.second_noise_prob and self.noise_families:
            extra = self.recorded_noise(n, rng) if rng.random() < 0.7 else synthetic_noise(
                str(rng.choice(self.mix.synthetic_kinds)), n, rng, self.sample_rate)
            noise = noise + scale_to_snr(noise, extra, float(rng.uniform(0.0, 10.0)))
        return mix(clean, noise, float(rng.uniform(*self.mix.snr_db)), float(rng.uniform(*self.mix.gain_db)), rng,
                   self.mix, self.sample_rate)


# ---------------------------------------------------------------------------------------------------------------------
# paired folders (VoiceBank-DEMAND layout)
# ---------------------------------------------------------------------------------------------------------------------


def validate_paired_folder(folder: Path, sample_rate: int | None = 16000) -> list[str]:
    """Check ``folder/clean`` and ``folder/noisy`` pair up; return the sorted shared file names.

    Raises DataError naming the first problem: a missing sub-folder, no audio, names present on one side only,
    different sample rates or channel counts between a pair or a rate other than ``sample_rate``, multi-channel
    audio, or different lengths.
    """
    folder = Path(folder)
    clean_dir, noisy_dir = folder / "clean", folder / "noisy"
    for d in (clean_dir, noisy_dir):
        if not d.is_dir():
            raise DataError(f"{folder} has no {d.name}/ folder.",
                            "give a folder holding clean/ and noisy/ with the same file names (VoiceBank-DEMAND "
                            "layout), or a corpus from `denoise data build`.")
    clean = {p.name for p in clean_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}
    noisy = {p.name for p in noisy_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES}
    if not clean and not noisy:
        raise DataError(f"{folder}/clean and {folder}/noisy hold no audio files ({', '.join(AUDIO_SUFFIXES)}).",
                        "put the paired recordings there.")
    if clean != noisy:
        only_c, only_n = sorted(clean - noisy), sorted(noisy - clean)
        raise DataError(f"{folder}: clean/ and noisy/ file names differ: {len(only_c)} only in clean/ "
                        f"(e.g. {only_c[:3]}), {len(only_n)} only in noisy/ (e.g. {only_n[:3]}).",
                        "give every noisy file a clean file with the same name, and remove the unmatched ones.")
    names = sorted(clean)
    for name in names:
        try:
            ci, ni = sf.info(str(clean_dir / name)), sf.info(str(noisy_dir / name))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise DataError(f"{folder}: cannot read {name}: {exc}.", "re-export the file as WAV or FLAC.") from exc
        if ci.samplerate != ni.samplerate:
            raise DataError(f"{folder}: {name} is {ci.samplerate} Hz in clean/ but {ni.samplerate} Hz in noisy/.",
                            "resample both to the same rate.")
        if sample_rate is not None and ci.samplerate != sample_rate:
            raise DataError(f"{folder}: {name} is {ci.samplerate} Hz; training expects {sample_rate} Hz.",
                            f"resample the folder to {sample_rate} Hz (e.g. `sox in.wav -r {sample_rate} out.wav`).")
        if ci.channels != ni.channels:
            raise DataError(f"{folder}: {name} has {ci.channels} channel(s) in clean/ but {ni.channels} in noisy/.",
                            "give both sides the same channel count (mono for training).")
        if ci.channels != 1:
            raise DataError(f"{folder}: {name} has {ci.channels} channels; training pairs must be mono.",
                            "downmix both files to mono.")
        if ci.frames != ni.frames:
            raise DataError(f"{folder}: {name} has {ci.frames} samples in clean/ but {ni.frames} in noisy/.",
                            "pairs must be time-aligned and the same length; trim or re-export them.")
    return names


class PairedFolderDataset(SeededItems):
    """Random ``segment`` crops (noisy [segment], clean [segment]) float32 of a validated clean/ + noisy/ folder.

    One item per file per epoch; the crop position is random (reproducible like :class:`CorpusMixDataset`). Files
    shorter than ``segment`` are zero-padded at the end on both sides.
    """

    def __init__(self, folder: Path, segment: int, sample_rate: int = 16000, seed: int = 0) -> None:
        self.folder, self.segment, self.seed = Path(folder), segment, seed
        self.names = validate_paired_folder(self.folder, sample_rate)
        self.frames = [sf.info(str(self.folder / "clean" / name)).frames for name in self.names]
        super().__init__()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.item_rng(index)
        name, frames, n = self.names[index], self.frames[index], self.segment
        start = int(rng.integers(0, frames - n + 1)) if frames > n else 0
        pair = []
        for side in ("noisy", "clean"):
            x = _read(self.folder / side / name, start, min(n, frames))
            pair.append(torch.from_numpy(np.pad(x, (0, n - x.size)).astype(np.float32)))
        return pair[0], pair[1]


# ---------------------------------------------------------------------------------------------------------------------
# entry points used by the trainer
# ---------------------------------------------------------------------------------------------------------------------


def _is_corpus(path: Path) -> bool:
    return (path / "manifest.jsonl").is_file()


def open_training_data(path: Path, split: str, segment: int, sample_rate: int = 16000, mix: MixConfig | None = None,
                       seed: int = 0) -> torch.utils.data.Dataset:
    """A dataset of (noisy [segment], clean [segment]) float32 tensor pairs, without pre-emphasis.

    ``path`` is a corpus from ``denoise data build`` (split ``train``: dynamic mixing; ``valid``/``test``: random
    crops of its fixed pairs) or a paired clean/ + noisy/ folder (random crops; ``split`` is then ignored unless the
    folder has a sub-folder of that name holding the pairs).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"Training data {path} is not a folder.",
                        "give a corpus from `denoise data build` or a folder with clean/ and noisy/.")
    if _is_corpus(path):
        if split == "train":
            return CorpusMixDataset(path, split, segment, sample_rate, mix, seed)
        if split not in ("valid", "test"):
            raise DataError(f"Unknown split {split!r} for corpus {path}.", "use train, valid or test.")
        return PairedFolderDataset(path / split, segment, sample_rate, seed)
    if (path / split / "clean").is_dir():
        return PairedFolderDataset(path / split, segment, sample_rate, seed)
    return PairedFolderDataset(path, segment, sample_rate, seed)


def open_validation_pairs(path: Path, split: str = "valid",
                          limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Fixed full-length pairs (name, noisy [T], clean [T]) float32, sorted by name, at most ``limit`` of them.

    ``path`` is a corpus (its ``valid/`` or ``test/`` pairs), a folder with a ``SPLIT/`` sub-folder of pairs, or a
    paired clean/ + noisy/ folder itself. The pairs are validated (names, rates, channels, lengths) first.
    """
    path = Path(path)
    folder = path / split if (_is_corpus(path) or (path / split / "clean").is_dir()) else path
    if _is_corpus(path) and not (folder / "clean").is_dir():
        raise DataError(f"The corpus {path} has no {split}/ pairs.",
                        "finish the build with `denoise data build` (it writes valid/ and test/ last).")
    names = validate_paired_folder(folder, sample_rate=None)
    if limit is not None:
        names = names[:limit]
    return [(Path(name).stem, _read(folder / "noisy" / name), _read(folder / "clean" / name)) for name in names]
