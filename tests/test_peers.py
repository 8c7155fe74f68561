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


def _doc(ours: list, other: list, snrs: list) -> dict:
    def row(key: str, stoi: list) -> dict:
        return {"key": key, "name": key.upper(), "status": "ok",
                "per_pair": {"pesq": [None if s is None else 1.0 + s for s in stoi], "stoi": list(stoi), "si_sdr": [0.0] * len(stoi)}}
    return {"snr_db": snrs, "rows": [row("noisy", [0.5] * len(ours)), row("ours", ours), row("peer", other),
                                     {"key": "gone", "name": "GONE", "status": "not installed"}]}


def test_paired_difference_and_its_interval() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(0.6, 0.9, 60)
    # A consistent +0.01 (with a little spread) is told apart from no difference at all.
    clear = peers.paired(_doc(list(base + 0.01 + rng.normal(0, 0.002, 60)), list(base), [0.0] * 60))
    stoi = clear["peer"]["stoi"]
    assert stoi["mean"] == pytest.approx(0.01, abs=0.002) and 0 < stoi["low"] < stoi["mean"] < stoi["high"]
    assert stoi["wins"] > 0.95 and stoi["pairs"] == 60 and set(clear) == {"peer"}  # noisy / missing rows skipped
    noise = rng.normal(0, 0.01, 60)
    unclear = peers.paired(_doc(list(base + noise - noise.mean()), list(base), [0.0] * 60))["peer"]["stoi"]
    assert unclear["low"] < 0 < unclear["high"]
    # A NaN score on either side drops that pair; no reference row, no comparison.
    with_nan = _doc([0.9, None, 0.8], [0.7, 0.7, None], [0.0] * 3)
    assert peers.paired(with_nan)["peer"]["stoi"] == pytest.approx(
        {"mean": 0.2, "low": 0.2, "high": 0.2, "wins": 1.0, "pairs": 1})
    assert peers.paired({"rows": [r for r in with_nan["rows"] if r["key"] != "ours"]}) == {}


def test_scores_by_snr() -> None:
    doc = _doc([0.9, 0.8, 0.7, 0.6], [0.5, 0.6, 0.7, 0.8], [0.0, 5.0, 0.0, 5.0])
    table = peers.by_snr(doc)
    assert table["ours"]["0"]["stoi"] == pytest.approx(0.8) and table["peer"]["5"]["stoi"] == pytest.approx(0.7)
    assert table["ours"]["5"]["pesq"] == pytest.approx(1.7) and set(table) == {"noisy", "ours", "peer"}
    # Many distinct SNRs (a VoiceBank-style set) fall into 5 dB bins, in ascending order, as `denoise eval` groups them.
    snrs = [-1.0 + 1.37 * i for i in range(14)]
    binned = peers.by_snr(_doc([0.9] * 14, [0.5] * 14, snrs))["ours"]
    assert list(binned) == ["[-5, 0)", "[0, 5)", "[5, 10)", "[10, 15)", "[15, 20)"]
    assert peers.by_snr(_doc([0.9], [0.5], [None])) == {}  # pairs without an SNR: no table
    text = "\n".join(peers._snr_table(doc) + peers._paired_table(doc))
    assert "| OURS | 1.800 / 0.800 | 1.700 / 0.700 |" in text and "| PEER | +0.100 [" in text


def test_benchmark_keeps_per_pair_scores_and_snrs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_eval import SNRS, make_pairs

    make_pairs(tmp_path, count=4)
    model = gain_model(tmp_path / "gain.onnx", gain=0.5)
    monkeypatch.setattr(peers, "_pin_one_core", lambda: None)
    doc = peers.benchmark(tmp_path, model, None, None, {"ours"}, log=lambda msg: None)
    assert doc["snr_db"] == [float(SNRS[i % len(SNRS)]) for i in range(4)] and doc["pair_names"][0] == "p00"
    ours = next(r for r in doc["rows"] if r["key"] == "ours")
    assert len(ours["per_pair"]["stoi"]) == 4
    assert ours["stoi"] == pytest.approx(np.mean(ours["per_pair"]["stoi"]))
    assert "by input SNR" in peers.markdown(doc)


def test_out_refuses_a_json_path_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out FILE.json would be the table overwritten by the JSON: refused at once, naming the fix."""
    with pytest.raises(SystemExit) as exc:
        peers.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "peers.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err and "peers.md" in err
    assert not (tmp_path / "peers.json").exists()
