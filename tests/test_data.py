"""Dynamic mixing (SNR, alignment, levels), synthetic noises, paired-folder validation and loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from realtime.errors import DataError
from training import data as D

SR = 16000


def _tone_speech(n: int, rng: np.random.Generator, f0: float) -> np.ndarray:
    t = np.arange(n) / SR
    env = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None)
    return (0.1 * env * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal corpus: 4 train speakers (short and long clips), 2 recorded noises, a valid/ pair set."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for s in range(4):
        for k, seconds in enumerate((0.5, 0.7, 3.0)):
            rel = f"speech/p/s{s}/{k}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            x = _tone_speech(int(seconds * SR), rng, 120.0 + 40 * s)
            sf.write(root / rel, x, SR, subtype="PCM_16")
            lines.append({"path": rel, "source": "p", "speaker": f"s{s}", "language": "xx", "duration": seconds,
                          "licence": "CC0", "kind": "speech", "category": "speech", "split": "train",
                          "group": f"s{s}"})
    for k, seconds in enumerate((0.4, 5.0)):
        rel = f"noise/q/hiss/{k}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, (0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR,
                 subtype="PCM_16")
        lines.append({"path": rel, "source": "q", "speaker": None, "language": None, "duration": seconds,
                      "licence": "CC0", "kind": "noise", "category": "hiss", "split": "train", "group": f"n{k}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    _paired(root / "valid", {"a.wav": 8000, "b.wav": 12000})
    return root


def _paired(folder: Path, files: dict[str, int], rate: int = SR, noisy_rate: int | None = None,
            channels: int = 1, noisy_channels: int | None = None, noisy_len: dict[str, int] | None = None) -> Path:
    rng = np.random.default_rng(1)
    for side in ("clean", "noisy"):
        (folder / side).mkdir(parents=True, exist_ok=True)
    for name, n in files.items():
        x = (0.1 * rng.standard_normal(n)).astype(np.float32)
        nc = noisy_channels or channels
        clean = x if channels == 1 else np.stack([x] * channels, axis=1)
        m = (noisy_len or {}).get(name, n)
        noisy = x[:m] + 0.01 if nc == 1 else np.stack([x[:m]] * nc, axis=1)
        sf.write(folder / "clean" / name, clean, rate, subtype="PCM_16")
        sf.write(folder / "noisy" / name, noisy, noisy_rate or rate, subtype="PCM_16")
    return folder


def _snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * np.log10(D.power(clean) / D.power(noisy - clean))


def test_mix_hits_requested_snr_and_level() -> None:
    rng = np.random.default_rng(2)
    clean = _tone_speech(SR, rng, 200.0)
    noise = rng.standard_normal(SR).astype(np.float32)
    for snr in (-5.0, 0.0, 7.5, 20.0):
        noisy, target = D.mix(clean, noise, snr, -20.0, rng, degrade=False)
        assert abs(_snr(target, noisy) - snr) < 1e-3
        assert abs(D.active_level_db(target) - -20.0) < 0.01
        assert np.max(np.abs(noisy)) <= 0.99 + 1e-6


def test_mix_reverb_keeps_target_aligned_and_early_only() -> None:
    rng = np.random.default_rng(3)
    full, early = D.synthetic_rir(rng)
    assert full[0] == early[0] == 1.0 and np.all(early[int(0.056 * SR):] == 0) and np.any(full[int(0.06 * SR):] != 0)
    cfg = D.MixConfig(reverb_prob=1.0, bandlimit_prob=0.0, clip_prob=0.0)
    clean = _tone_speech(2 * SR, rng, 150.0) * rng.standard_normal(2 * SR).astype(np.float32)
    noisy, target = D.mix(clean, np.zeros(2 * SR, np.float32), 60.0, -20.0, rng, cfg)
    xc = np.correlate(noisy, target, mode="full")
    assert int(np.argmax(xc)) - (target.size - 1) == 0  # no delay between input and target


@pytest.mark.parametrize("kind", D.SYNTHETIC_KINDS)
def test_synthetic_noises_are_finite_unit_rms_with_expected_tilt(kind: str) -> None:
    x = D.synthetic_noise(kind, 4 * SR, np.random.default_rng(4))
    assert x.dtype == np.float32 and np.all(np.isfinite(x)) and abs(D.power(x) - 1.0) < 1e-3
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    low, high = spec[(f > 100) & (f < 400)].mean(), spec[(f > 3000) & (f < 6000)].mean()
    if kind == "white":
        assert 0.5 < low / high < 2
    elif kind in ("pink", "brown"):
        assert low / high > (5 if kind == "pink" else 100)
    elif kind == "hum":
        peak = f[np.argmax(spec)]
        assert min(abs(peak % 50), abs(peak % 60)) < 2 or peak in (50, 60)


def test_mix_config_rejects_bad_values() -> None:
    with pytest.raises(DataError, match="reverb_prob"):
        D.MixConfig(reverb_prob=1.5)
    with pytest.raises(DataError, match="snr_db"):
        D.MixConfig(snr_db=(10.0, 0.0))


def test_corpus_dataset_snr_alignment_shapes_and_reproducibility(corpus: Path) -> None:
    cfg = D.MixConfig(snr_db=(7.0, 7.0), reverb_prob=0.0, bandlimit_prob=0.0, clip_prob=0.0,
                      synthetic_noise_prob=0.3, babble_prob=0.3, second_noise_prob=0.5)
    ds = D.open_training_data(corpus, "train", segment=8000, mix=cfg, seed=3)
    assert isinstance(ds, D.CorpusMixDataset) and len(ds) >= 1000
    for i in range(24):
        noisy, clean = ds[i]
        assert noisy.shape == clean.shape == (8000,) and noisy.dtype == clean.dtype == torch.float32
        n, c = noisy.numpy(), clean.numpy()
        assert np.max(np.abs(n)) <= 1.0 and D.power(c) > 1e-6  # never an all-silent target
        assert abs(_snr(c, n) - 7.0) < 0.05
    # Same seed → same first item; another visit of the same index → a new mixture.
    again = D.open_training_data(corpus, "train", segment=8000, mix=cfg, seed=3)
    assert torch.equal(again[0][1], D.open_training_data(corpus, "train", 8000, mix=cfg, seed=3)[0][1])
    assert not torch.equal(again[0][1], again[0][1])


@pytest.mark.parametrize("factor", [0.8, 1.15])
def test_change_speed_moves_pitch_by_the_factor(factor: float) -> None:
    sr = 16000
    x = np.sin(2 * np.pi * 200.0 * np.arange(2 * sr) / sr).astype(np.float32)
    y = D.change_speed(x, factor)
    assert abs(y.size - x.size / factor) <= 2 and y.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(y[:sr]))) * sr / sr  # 1 Hz bins over one second
    assert abs(peak - 200.0 * factor) <= 1.0


def test_speed_perturbed_draws_keep_length_snr_and_change_the_speech(corpus: Path) -> None:
    base = {"snr_db": (7.0, 7.0), "reverb_prob": 0.0, "bandlimit_prob": 0.0, "clip_prob": 0.0,
            "second_noise_prob": 0.0}
    plain = D.open_training_data(corpus, "train", segment=8000, mix=D.MixConfig(**base), seed=3)
    fast = D.open_training_data(corpus, "train", segment=8000, seed=3,
                                mix=D.MixConfig(**base, speed_prob=1.0, speed=(0.8, 0.8)))
    for i in range(6):
        noisy, clean = fast[i]
        assert noisy.shape == clean.shape == (8000,) and D.power(clean.numpy()) > 1e-6
        assert abs(_snr(clean.numpy(), noisy.numpy()) - 7.0) < 0.05
    assert not torch.equal(plain[0][1], fast[0][1])
    with pytest.raises(DataError, match="speed"):
        D.MixConfig(speed=(0.2, 1.0))


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_speakers_are_drawn_by_minutes_to_the_configured_power(corpus: Path, tmp_path: Path,
                                                                power: float) -> None:
    # Speaker s0 keeps only its 0.5 s clip; s1..s3 keep 4.2 s each.
    lines = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    kept = [r for r in lines if r["speaker"] != "s0" or r["duration"] == 0.5]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    for sub in ("speech", "noise"):
        (tmp_path / sub).symlink_to(corpus / sub)
    ds = D.open_training_data(tmp_path, "train", segment=4000, seed=0, mix=D.MixConfig(speaker_power=power))
    assert isinstance(ds, D.CorpusMixDataset) and ds.speaker_names == ["s0", "s1", "s2", "s3"]
    weight = np.array([0.5, 4.2, 4.2, 4.2]) ** power
    np.testing.assert_allclose(ds.speaker_p, weight / weight.sum(), rtol=1e-6)
    with pytest.raises(DataError, match="speaker_power"):
        D.MixConfig(speaker_power=1.5)


def test_corpus_dataset_in_dataloader_workers(corpus: Path) -> None:
    ds = D.open_training_data(corpus, "train", segment=4000, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    noisy, clean = next(iter(loader))
    assert noisy.shape == clean.shape == (4, 4000)


def test_paired_folder_good(tmp_path: Path) -> None:
    folder = _paired(tmp_path / "pairs", {"x.wav": 5000, "y.wav": 20000})
    ds = D.open_training_data(folder, "train", segment=8000, seed=0)
    assert len(ds) == 2
    for noisy, clean in (ds[0], ds[1]):
        assert noisy.shape == clean.shape == (8000,)
        assert torch.allclose(noisy[clean != 0] - clean[clean != 0], torch.tensor(0.01), atol=1e-3)
    pairs = D.open_validation_pairs(folder)
    assert [p[0] for p in pairs] == ["x", "y"] and pairs[1][1].shape == pairs[1][2].shape == (20000,)


def test_corpus_validation_pairs(corpus: Path) -> None:
    pairs = D.open_validation_pairs(corpus, "valid", limit=1)
    assert len(pairs) == 1 and pairs[0][0] == "a" and pairs[0][1].size == 8000
    with pytest.raises(DataError, match="test/"):
        D.open_validation_pairs(corpus, "test")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": {"a.wav": 800}, "noisy_len": {"a.wav": 700}}, "800 samples in clean/ but 700"),
        ({"files": {"a.wav": 800}, "noisy_rate": 8000}, "16000 Hz in clean/ but 8000 Hz"),
        ({"files": {"a.wav": 800}, "rate": 8000}, "training expects 16000 Hz"),
        ({"files": {"a.wav": 800}, "noisy_channels": 2}, "1 channel\\(s\\) in clean/ but 2"),
        ({"files": {"a.wav": 800}, "channels": 2}, "must be mono"),
    ],
)
def test_paired_folder_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    folder = _paired(tmp_path / "bad", **kwargs)
    with pytest.raises(DataError, match=message):
        D.open_training_data(folder, "train", segment=400)


def test_paired_folder_name_mismatch_and_missing(tmp_path: Path) -> None:
    folder = _paired(tmp_path / "bad", {"a.wav": 800, "b.wav": 800})
    (folder / "noisy" / "b.wav").rename(folder / "noisy" / "c.wav")
    with pytest.raises(DataError, match=r"only in clean/ \(e.g. \['b.wav'\]\).*only in noisy/ \(e.g. \['c.wav'\]\)"):
        D.validate_paired_folder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no clean/ folder"):
        D.open_validation_pairs(tmp_path / "empty")
