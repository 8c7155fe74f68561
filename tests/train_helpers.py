"""Tiny paired WAV folders and tiny training configs shared by the training and checkpoint tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from training.config import TrainConfig, apply_overrides, preset_defaults

SR = 16000
SEGMENT = 1024  # a multiple of the lowlat hop (128)

# A generator and discriminator small enough that a step takes milliseconds.
TINY = [
    "discriminator.channels=[4, 8]", "discriminator.kernel=5",
    f"data.segment={SEGMENT}", "data.batch_size=2", "data.num_workers=0", "data.valid_pairs=1",
    "loss.adv_warmup=0", "loss.stft_resolutions=[[128, 32, 128], [64, 16, 64]]",
    "optim.scheduler=constant", "optim.warmup_steps=0",
    "run.log_every=1", "run.validate_every=1000", "run.checkpoint_every=1000", "run.samples=1", "run.threads=1",
    "run.device=cpu",
]


TINY_GENERATOR = {
    "lowlat": ["generator.channels=[4, 8]", "generator.bottleneck=16", "generator.gru_hidden=16",
               "generator.band_gru=4", "generator.past_frames=2"],
    "segan": ["generator.window=1024", "generator.hop=512", "generator.channels=[4, 8, 8]", "generator.kernel=9",
              "generator.z_channels=4"],
}


def tiny_config(*extra: str, preset: str = "lowlat") -> TrainConfig:
    return apply_overrides(preset_defaults(preset), [*TINY_GENERATOR[preset], *TINY, *extra])


def tiny_args(*extra: str) -> list[str]:
    """The TINY overrides as ``--set`` CLI arguments."""
    return [arg for item in [*TINY_GENERATOR["lowlat"], *TINY, *extra] for arg in ("--set", item)]


def write_pairs(folder: Path, n: int, length: int, seed: int) -> None:
    """``n`` time-aligned (clean: harmonic tone bursts, noisy: clean + white noise) mono 16 kHz WAV pairs."""
    rng = np.random.default_rng(seed)
    (folder / "clean").mkdir(parents=True, exist_ok=True)
    (folder / "noisy").mkdir(parents=True, exist_ok=True)
    t = np.arange(length) / SR
    for i in range(n):
        f0 = rng.uniform(120, 300)
        clean = sum(0.1 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
        clean = clean * (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > -0.3)
        noisy = clean + 0.03 * rng.standard_normal(length)
        sf.write(folder / "clean" / f"p{i:02d}.wav", clean.astype(np.float32), SR)
        sf.write(folder / "noisy" / f"p{i:02d}.wav", noisy.astype(np.float32), SR)


def make_data(root: Path) -> Path:
    """A paired folder whose training files are exactly one segment long (crops are then deterministic) and a
    ``valid/`` sub-folder with one longer held-out pair."""
    data = root / "pairs"
    write_pairs(data, n=6, length=SEGMENT, seed=1)
    write_pairs(data / "valid", n=1, length=SR // 2, seed=2)
    return data
