"""The peer benchmark's harness: delay measured and removed exactly, documented latencies match the tools,
missing packages become a row instead of a crash."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_models import gain_model
from synth_speech import add_noise, speechlike

from evaluation.metrics import si_sdr

ROOT = Path(__file__).resolve().parent.parent


def _load_peers():
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module
    spec.loader.exec_module(module)
    return module


peers = _load_peers()


@pytest.fixture(scope="module")
def clips() -> tuple[list[np.ndarray], list[np.ndarray]]:
    clean = [speechlike(2.0, 16000, seed=s) for s in (11, 12)]
    return clean, [add_noise(c, 10.0, seed=s) for s, c in enumerate(clean)]


def test_our_engine_delay_is_measured_and_removed(tmp_path: Path, clips) -> None:
    clean, noisy = clips
    peer = peers.OurModel(gain_model(tmp_path / "gain.onnx", gain=0.5), "gain")
    row = peers.run_peer(peer, clean, noisy)
    assert row["measured_delay_ms"] == pytest.approx(peer.latency_ms)  # 128 samples: window 256 - hop 128
    assert row["delay_agreement"] == 1.0
    # A pure gain, once aligned, scores exactly like its input.
    noisy_sdr = np.mean([si_sdr(c, n) for c, n in zip(clean, noisy)])
    assert row["si_sdr"] == pytest.approx(noisy_sdr, abs=1e-3)
    assert row["rtf"] > 0 and row["hop_p99_ms"] >= row["hop_p50_ms"] > 0


@pytest.mark.parametrize("name", ["RNNoise", "DeepFilterNet3", "GTCRN", "DTLN", "SpeexNS", "WebRTCNS"])
def test_documented_latency_matches_the_measured_delay(name: str, clips) -> None:
    try:
        peer = getattr(peers, name)()
    except ImportError as exc:
        pytest.skip(f"{name} not installed: {exc}")
    clean, noisy = clips
    row = peers.run_peer(peer, clean, noisy)
    assert row["measured_delay_ms"] == pytest.approx(peer.latency_ms, abs=1000 / 16000), row


def test_missing_package_is_a_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from test_eval import make_pairs

    make_pairs(tmp_path, count=1)

    def missing() -> peers.Peer:
        raise ImportError("No module named 'pyrnnoise'", name="pyrnnoise")

    real = peers.entries
    monkeypatch.setattr(peers, "entries", lambda model, segan: [
        peers.Entry("rnnoise", "RNNoise", "pyrnnoise", missing), *[e for e in real(model, segan) if e.key == "ours"]])
    monkeypatch.setattr(peers, "_pin_one_core", lambda: None)
    doc = peers.benchmark(tmp_path, tmp_path / "no-model.onnx", None, None, None, log=lambda msg: None)
    status = {row["key"]: row["status"] for row in doc["rows"]}
    assert status == {"noisy": "ok", "rnnoise": "not installed", "ours": "unavailable"}
    table = peers.markdown(doc)
    assert any(line.startswith("| RNNoise") and "| not installed |" in line for line in table.splitlines())
    assert "pip install pyrnnoise" in table
