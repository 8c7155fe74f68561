"""``denoise bench`` on tiny ONNX models: the JSON keys are there and the figures are self-consistent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_models import ema_model, gain_model, make_spec

from realtime.bench import run_bench
from realtime.errors import ConfigError

KEYS = ("algorithmic_latency_ms", "hop_ms", "p50_us", "p95_us", "p99_us", "max_us", "rtf", "rtf_per_stream",
        "throughput_x_realtime", "load_ms", "ort_p50_us", "ort_mean_us", "overhead_p50_us", "overhead_mean_us",
        "streams", "threads", "device", "hops", "deadline_misses")


def test_json_figures_are_present_and_sane(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ema_model(tmp_path / "ema.onnx")
    result = run_bench(model=model, seconds=0.5, as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))  # the printed object is the returned one
    for key in KEYS:
        assert key in printed, key
    assert printed["algorithmic_latency_ms"] == 8.0 and printed["hop_ms"] == 8.0
    assert printed["hops"] == round(0.5 * 16000 / 128)
    assert 0 < printed["p50_us"] <= printed["p95_us"] <= printed["p99_us"] <= printed["max_us"]
    assert 0 < printed["ort_mean_us"] < printed["mean_us"]
    assert printed["overhead_mean_us"] == pytest.approx(printed["mean_us"] - printed["ort_mean_us"])
    # rtf is the compute time over the audio time: the mean per-hop time over the hop length.
    assert printed["rtf"] == pytest.approx(printed["mean_us"] / (printed["hop_ms"] * 1000.0))
    assert 0 < printed["rtf"] < 1.0  # a two-node model keeps up with real time on any machine
    assert printed["load_ms"] > 0 and printed["device"] == "cpu"


def test_streams_are_batched_and_reported_per_stream(tmp_path: Path) -> None:
    model = gain_model(tmp_path / "gain.onnx", spec=make_spec(512, 256))
    result = run_bench(model=model, seconds=0.5, streams=3, as_json=True)
    assert result["streams"] == 3 and result["hop"] == 256
    assert result["algorithmic_latency_ms"] == pytest.approx(16.0)
    assert result["rtf_per_stream"] == pytest.approx(result["rtf"] / 3)
    assert result["throughput_x_realtime"] == pytest.approx(3 / result["rtf"])


def test_table_for_humans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_bench(model=ema_model(tmp_path / "ema.onnx"), seconds=0.2)
    out = capsys.readouterr().out
    assert "algorithmic latency" in out and "real-time factor" in out and "Python + numpy overhead" in out


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--seconds"):
        run_bench(model=ema_model(tmp_path / "ema.onnx"), seconds=0)
    with pytest.raises(ConfigError, match="--streams"):
        run_bench(model=ema_model(tmp_path / "ema.onnx"), streams=0)


def test_cli_bench_json(tmp_path: Path) -> None:
    model = ema_model(tmp_path / "ema.onnx")
    res = subprocess.run([sys.executable, "-m", "cli", "bench", "--model", str(model), "--seconds", "1", "--json"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["rtf"] > 0 and data["p99_us"] >= data["p50_us"] and data["algorithmic_latency_ms"] == 8.0
