"""Metric sanity: known values on constructed signals, NaN (not a crash) where a metric is undefined."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import soxr
from synth_speech import add_noise, speechlike

from evaluation.metrics import (
    MetricWarning,
    MissingDependencyError,
    align,
    pesq_wb,
    score_pair,
    shift,
    si_sdr,
    stoi,
)

SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speechlike(4.0, SR, seed=1)


def test_si_sdr_of_identical_and_scaled_signals_is_huge(speech: np.ndarray) -> None:
    assert si_sdr(speech, speech) > 100.0
    assert si_sdr(speech, 3.0 * speech) > 100.0  # scale-invariant
    assert si_sdr(speech, speech + 0.25) > 100.0  # zero-mean: a DC offset is not distortion


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 20.0])
def test_si_sdr_of_added_noise_is_the_snr(speech: np.ndarray, snr: float) -> None:
    noisy = add_noise(speech, snr, seed=3)
    # White noise is nearly orthogonal to the clip, so the projection barely moves: SI-SDR ~= SNR.
    assert si_sdr(speech, noisy) == pytest.approx(snr, abs=0.2)


def test_si_sdr_of_silent_reference_is_nan() -> None:
    with pytest.warns(MetricWarning):
        assert math.isnan(si_sdr(np.zeros(1000), np.ones(1000)))


def test_length_mismatch_is_refused(speech: np.ndarray) -> None:
    with pytest.raises(ValueError, match="same length"):
        si_sdr(speech, speech[:-1])


def test_pesq_is_high_for_itself_and_falls_with_noise(speech: np.ndarray) -> None:
    assert pesq_wb(speech, speech) > 4.5
    scores = [pesq_wb(speech, add_noise(speech, snr, seed=4)) for snr in (30.0, 10.0, -5.0)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[2] < 1.5


def test_pesq_resamples_other_rates(speech: np.ndarray) -> None:
    x48 = soxr.resample(speech, SR, 48000).astype(np.float32)
    assert pesq_wb(x48, x48, sr=48000) > 4.5


def test_pesq_undefined_cases_are_nan_with_a_warning(speech: np.ndarray) -> None:
    with pytest.warns(MetricWarning, match="shorter"):
        assert math.isnan(pesq_wb(speech[:2000], speech[:2000]))
    with pytest.warns(MetricWarning, match="zeros"):
        assert math.isnan(pesq_wb(np.zeros(SR), np.zeros(SR)))


def test_pesq_no_utterances_is_nan(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    import pesq

    def no_utterances(*args: object, **kwargs: object) -> float:
        raise pesq.NoUtterancesError("No utterances detected")

    monkeypatch.setattr(pesq, "pesq", no_utterances)
    with pytest.warns(MetricWarning, match="NoUtterancesError"):
        assert math.isnan(pesq_wb(speech, speech))


def test_stoi_is_one_for_itself_and_falls_with_noise(speech: np.ndarray) -> None:
    assert stoi(speech, speech, SR) > 0.999
    scores = [stoi(speech, add_noise(speech, snr, seed=5), SR) for snr in (20.0, 0.0, -10.0)]
    assert scores[0] > scores[1] > scores[2]


def test_stoi_of_a_too_short_clip_is_nan(speech: np.ndarray) -> None:
    with pytest.warns(MetricWarning):
        assert math.isnan(stoi(speech[:1000], speech[:1000], SR))


@pytest.mark.parametrize("lag", [0, 1, 37, -52, 300])
def test_align_finds_a_known_lag_through_noise(speech: np.ndarray, lag: int) -> None:
    delayed = np.roll(speech, lag)
    noisy = add_noise(0.5 * delayed, 5.0, seed=6)
    assert align(speech, noisy, max_lag=400) == lag
    assert align(noisy, speech, max_lag=400) == -lag


def test_align_only_searches_within_max_lag(speech: np.ndarray) -> None:
    delayed = np.roll(speech, 500)
    assert abs(align(speech, delayed, max_lag=100)) <= 100
    assert align(np.zeros(100), speech[:100], max_lag=10) == 0


def test_shift_undoes_a_delay(speech: np.ndarray) -> None:
    delayed = np.concatenate([np.zeros(37, np.float32), speech])[: speech.shape[0]]
    back = shift(delayed, align(speech, delayed, 100))
    np.testing.assert_array_equal(back[:-37], speech[:-37])
    assert np.all(back[-37:] == 0.0)
    early = shift(speech, -10)
    np.testing.assert_array_equal(early[10:], speech[:-10])


def test_score_pair_keys_and_ordering(speech: np.ndarray) -> None:
    clean_scores = score_pair(speech, speech, SR)
    noisy_scores = score_pair(speech, add_noise(speech, 0.0, seed=7), SR)
    assert set(clean_scores) == {"pesq", "stoi", "si_sdr"}
    for key in clean_scores:
        assert clean_scores[key] > noisy_scores[key]


def test_missing_pesq_names_the_extra(monkeypatch: pytest.MonkeyPatch, speech: np.ndarray) -> None:
    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'denoise\[eval\]'"):
        pesq_wb(speech, speech)


@pytest.mark.slow
def test_dnsmos_prefers_clean_speech(speech: np.ndarray) -> None:
    from evaluation.dnsmos import DNSMOS_KEYS, dnsmos, dnsmos_available

    ok, why = dnsmos_available()
    if not ok:
        pytest.skip(why)
    clean = dnsmos(speech, SR)
    noisy = dnsmos(add_noise(speech, 0.0, seed=8), SR)
    assert set(clean) == set(DNSMOS_KEYS)
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    assert clean["dnsmos_bak"] > noisy["dnsmos_bak"] + 1.0
    with pytest.warns(MetricWarning):
        assert all(math.isnan(v) for v in dnsmos(np.zeros(SR), SR).values())
