"""End-to-end tests of ``denoise live`` with real audio streams and no mocks.

A private JACK server with its dummy driver stands in for the sound card (``jack_fixture.py``): ``test_mic``
plays a test signal, ``test_speakers`` records, and ``denoise live --input test_mic --output test_speakers``
runs as a subprocess through PortAudio's JACK host API. Both clients stamp audio with the JACK frame clock, so
the delay from microphone to speakers is measured in exact frames.

What is asserted, and why:

* The recording is the offline ``denoise enhance`` result of the signal (``enhance_audio``, what ``enhance``
  runs), delayed: >= 30 dB SNR over the whole signal and in every 100 ms chunk. The model is a tiny ONNX gain
  of 0.5, so audio that bypassed the model (6 dB SNR) or lost blocks fails.
* Every chunk has the same delay, and it equals the summary's ``latency_samples`` within one frame. The total
  is counted in frames (PortAudio's reported stream latencies, the engine's latency, the silence the jitter
  buffer played ahead of the audio); only the phase between the input and output streams is estimated, from
  callback times on the monotonic clock, and rounded to a frame: hence the one-frame tolerance. This holds
  when the callback block is the JACK period (the default on JACK; see ``realtime.audio_io.pipeline_delay``
  for the measured shortfall of other blocks).
* A run in which the JACK server or the program saw an xrun while the signal played is retried (3 tries): on a
  busy 2-core machine an xrun says more about the machine than about the program, and an xrun legitimately
  changes the latency (the jitter buffer grows by a hop). Counting xruns is tested with an overloaded model.
  So is a run whose server kept running late before the program connected (``RigStalled``): under a heavy
  load a fresh jackd can run every cycle late for a minute, and the program then waits on it (measured here
  while ``denoise data build`` ran: 7 of 67 first runs hung so before these retries, none of 80 runs of this
  file's tests after). A program that does not connect to a server that runs on time still fails.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from jack_fixture import TRIES, RigStalled
from onnx import TensorProto, helper, numpy_helper
from onnx_models import OPSET, gain_model, make_spec
from scipy import signal as sps

from realtime.batch import enhance_audio
from realtime.live import MAX_JITTER_SECONDS
from realtime.model import load_model

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent
GAIN = 0.5
MIN_SNR_DB = 30.0
CHUNK_SECONDS = 0.1


def probe_signal(rate: int, seconds: float = 2.0, seed: int = 7) -> np.ndarray:
    """float32 ``[seconds * rate]``: a linear chirp 100 Hz -> 6 kHz, then band-limited noise (both inside the
    passband of the 48 <-> 16 kHz resamplers), 10 ms fades. Sharp autocorrelation: one clear delay."""
    chirp_n = int(0.75 * seconds * rate)
    t = np.arange(chirp_n) / rate
    chirp = 0.4 * sps.chirp(t, f0=100.0, t1=t[-1], f1=6000.0)
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate) - chirp_n)
    noise = 0.15 * sps.sosfilt(sps.butter(8, 6000.0, fs=rate, output="sos"), noise)
    x = np.concatenate([chirp, noise])
    fade = int(0.01 * rate)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return x.astype(np.float32)


def _snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    err = np.sum((test.astype(np.float64) - reference) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(err, 1e-30)))


@dataclass
class Match:
    delay: int  # frames from the signal leaving the microphone to it reaching the speakers
    snr_db: float
    chunk_delays: list[int]
    worst_chunk_snr_db: float


def find_in_recording(recording: np.ndarray, start: int, expected: np.ndarray, rate: int) -> Match:
    """Locate ``expected`` in ``recording`` (it started playing at index ``start``): the global delay by
    cross-correlation, then each 100 ms chunk aligned on its own within 20 ms of it."""
    y = recording[start:].astype(np.float64)
    e = expected.astype(np.float64)
    if len(y) < len(e):
        raise AssertionError(f"the recording holds {len(y)} frames after the signal started, fewer than its "
                             f"{len(e)}")
    corr = sps.correlate(y, e, mode="valid", method="fft")
    delay = int(np.argmax(corr))
    snr = _snr_db(e, y[delay:delay + len(e)])
    n, reach = int(CHUNK_SECONDS * rate), int(0.02 * rate)
    delays, worst = [], np.inf
    for i in range(0, len(e) - n + 1, n):
        lo = max(0, delay + i - reach)
        local = sps.correlate(y[lo:delay + i + reach + n], e[i:i + n], mode="valid", method="fft")
        at = lo + int(np.argmax(local))
        delays.append(at - i)
        worst = min(worst, _snr_db(e[i:i + n], y[at:at + n]))
    return Match(delay, snr, sorted(set(delays)), float(worst))


@dataclass
class LiveRun:
    summary: dict[str, Any]
    match: Match
    rig_xruns_while_playing: int
    stderr: str

    @property
    def clean(self) -> bool:
        return self.rig_xruns_while_playing == 0 and self.summary["xruns"] == 0


def run_live(rig: Any, model: Path, expected: np.ndarray, signal_in: np.ndarray, *extra: str,
             stop: str = "duration") -> LiveRun:
    """Run ``denoise live`` on the rig, play ``signal_in`` once it is connected, stop it (``--duration`` or
    SIGTERM), and find ``expected`` in what the speakers got."""
    # -X faulthandler: if the program hangs, SIGABRT makes it print where (see JackRig.wait_connected).
    cmd = [sys.executable, "-X", "faulthandler", "-m", "cli", "live", "--input", "test_mic", "--output",
           "test_speakers", "--samplerate", str(rig.samplerate), "--model", str(model), "--json", *extra]
    if stop == "duration":
        cmd += ["--duration", "4"]
    proc = subprocess.Popen(cmd, env=rig.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        rig.wait_connected(proc)
        assert rig.connections()["test_mic:capture_1"], "the program did not open the microphone by name"
        time.sleep(0.3)
        armed = rig.play(signal_in)
        rig.wait_played()
        time.sleep(0.3)  # the last samples are still on their way through the pipeline
        played = rig.log_mark()
        if stop == "sigterm":
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"denoise live exited with {proc.returncode}:\n{err}"
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"expected one JSON summary on stdout, got:\n{out}"
    summary = json.loads(lines[0])
    recording, start = rig.recording()
    match = find_in_recording(recording, start, expected, rig.samplerate)
    xruns = rig.xruns_between(armed, played)
    return LiveRun(summary, match, xruns, err)


def clean_run(jack_rig: Callable[..., Any], samplerate: int, period: int, model: Path, expected: np.ndarray,
              signal_in: np.ndarray, *extra: str, stop: str = "duration", tries: int = TRIES) -> LiveRun:
    """The first of ``tries`` runs (each on a fresh server) without an xrun; fails listing them all. A run
    whose server stalled before the program connected (:class:`RigStalled`) counts as one with xruns."""
    failures = []
    for _ in range(tries):
        rig = jack_rig(samplerate=samplerate, period=period)
        try:
            run = run_live(rig, model, expected, signal_in, *extra, stop=stop)
        except RigStalled as exc:
            failures.append(f"server stalled: {str(exc)[:300]}")
            continue
        finally:
            rig.close()  # an idle server left running would load the machine for the next try
        if run.clean:
            return run
        failures.append(f"rig {run.rig_xruns_while_playing}, program {run.summary['xrun_detail']}")
    pytest.fail("every run had an xrun while the signal played: " + "; ".join(failures))


def check_delay_and_audio(run: LiveRun) -> None:
    m, s = run.match, run.summary
    assert m.snr_db >= MIN_SNR_DB, (m, s)
    assert m.worst_chunk_snr_db >= MIN_SNR_DB, (m, s)  # no dropped, repeated or glitched block anywhere
    assert m.chunk_delays == [m.delay], (m, s)  # one constant delay: no slipped samples
    assert abs(m.delay - s["latency_samples"]) <= 1, (m, s)
    parts = (s["algorithmic_latency_ms"] + s["resampler_latency_ms"] + s["device_latency_ms"]
             + s["jitter_buffer_ms"])
    assert abs(parts - s["latency_ms"]) < 0.01, s


@pytest.fixture
def gain_onnx(tmp_path: Path) -> Path:
    return gain_model(tmp_path / "gain.onnx", gain=GAIN)


def expected_output(model: Path, x: np.ndarray, rate: int) -> np.ndarray:
    """What ``denoise enhance`` makes of ``x`` (with the streaming resamplers, as live, at other rates)."""
    frame_model = load_model(model)
    streaming = rate != frame_model.spec.sample_rate
    return enhance_audio(frame_model, x[None, :], rate, streaming=streaming)[0]


def test_live_processes_audio_with_the_reported_latency(jack_rig: Callable[..., Any],
                                                        gain_onnx: Path) -> None:
    x = probe_signal(16000)
    run = clean_run(jack_rig, 16000, 160, gain_onnx, expected_output(gain_onnx, x, 16000), x,
                    "--blocksize", "160")
    check_delay_and_audio(run)
    s = run.summary
    for key in ("latency_ms", "algorithmic_latency_ms", "device_latency_ms", "xruns", "underruns", "overruns",
                "p50_us", "p99_us", "rtf", "frames_in", "frames_out"):
        assert key in s, key
    assert s["input"] == "test_mic" and s["output"] == "test_speakers" and s["blocksize"] == 160
    assert s["algorithmic_latency_ms"] == 8.0 and s["resampler_latency_ms"] == 0.0
    assert s["xruns"] == s["underruns"] + s["overruns"] == 0
    assert 0 < s["p50_us"] <= s["p99_us"] and 0 < s["rtf"] < 1
    assert abs(s["frames_in"] - 4 * 16000) <= 2 * 160, s  # --duration 4 counts from the streams' start
    assert s["frames_out"] >= s["frames_in"]


def test_live_at_48k_resamples_and_stops_on_sigterm(jack_rig: Callable[..., Any], gain_onnx: Path) -> None:
    """Device rate 48 kHz, model 16 kHz: the resamplers run live (JACK period: one model hop at 48 kHz), and
    SIGTERM ends the run cleanly with a summary."""
    x = probe_signal(48000)
    run = clean_run(jack_rig, 48000, 384, gain_onnx, expected_output(gain_onnx, x, 48000), x, stop="sigterm")
    check_delay_and_audio(run)
    s = run.summary
    assert s["samplerate"] == 48000 and s["blocksize"] == 384  # no --blocksize on JACK: its period
    assert s["resampler_latency_ms"] > 0


def test_bypass_plays_the_input_with_the_same_latency(jack_rig: Callable[..., Any], gain_onnx: Path) -> None:
    """--bypass: the speakers get the input itself (not the model's half-level output), delayed by the same
    latency, so switching A/B does not jump in time."""
    x = probe_signal(16000)
    run = clean_run(jack_rig, 16000, 160, gain_onnx, x, x, "--bypass")
    check_delay_and_audio(run)
    assert run.summary["bypass"] is True
    assert run.summary["blocksize"] == 160  # no --blocksize on JACK: its period


def record_microphone(rig: Any, model: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """Start ``denoise live --input test_mic --output OUT`` and return once it reads the microphone."""
    cmd = [sys.executable, "-X", "faulthandler", "-m", "cli", "live", "--input", "test_mic", "--output",
           str(out), "--model", str(model), *extra]
    proc = subprocess.Popen(cmd, env=rig.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 20
    while not rig.connections()["test_mic:capture_1"]:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the program did not open test_mic: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def test_microphone_to_wav_records_the_enhanced_input(jack_rig: Callable[..., Any], gain_onnx: Path,
                                                      tmp_path: Path) -> None:
    """--output FILE: the recording is the model's output aligned with the microphone (latency removed)."""
    rig = jack_rig()
    x = probe_signal(16000)
    out = tmp_path / "rec.wav"
    proc = record_microphone(rig, gain_onnx, out, "--duration", "3.5", "--json")
    try:
        time.sleep(0.3)
        rig.play(x)
        rig.wait_played()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    recorded, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and len(recorded) == summary["frames_in"] == summary["frames_out"]
    match = find_in_recording(recorded, 0, expected_output(gain_onnx, x, 16000), 16000)
    assert match.snr_db >= MIN_SNR_DB and match.worst_chunk_snr_db >= MIN_SNR_DB, match
    assert match.chunk_delays == [match.delay], match


def test_a_frozen_sound_server_ends_the_run_and_keeps_the_recording(
        jack_rig: Callable[..., Any], gain_onnx: Path, tmp_path: Path) -> None:
    """The sound server stops running mid-run (jackd frozen with SIGSTOP; PortAudio's stop would then wait 10
    minutes, and its exit handler for ever): after --stall-timeout seconds without a callback the program says
    which device stalled and exits 2, and the microphone's recording up to the stall is saved."""
    rig = jack_rig()
    out = tmp_path / "rec.wav"
    proc = record_microphone(rig, gain_onnx, out, "--stall-timeout", "1")
    try:
        time.sleep(1.0)
        rig.suspend()
        frozen = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        waited = time.monotonic() - frozen
    finally:
        rig.resume()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, stderr
    assert "No audio from the input device 'test_mic' for 1 s" in lines[0], lines[0]
    assert waited < 10, f"{waited:.1f} s from the freeze to the exit"  # 1 s, plus a loaded machine's slack
    recorded, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and len(recorded) >= 0.5 * rate, len(recorded)  # about the second before the freeze
    assert f"saved in {out} ({len(recorded) / rate:.1f} s)" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gain.onnx", "rec.wav"]  # no temporary file left


def test_wav_to_speakers_plays_the_enhanced_file(jack_rig: Callable[..., Any], gain_onnx: Path,
                                                 tmp_path: Path) -> None:
    """--input FILE: the file is streamed through the engine, paced by the output device, and the run ends by
    itself once the file (and the engine's tail) has been played."""
    x = probe_signal(16000)
    source = tmp_path / "in.wav"
    sf.write(source, x, 16000, subtype="FLOAT")
    expected = expected_output(gain_onnx, x, 16000)
    for attempt in range(TRIES):  # a run with an xrun (a late server cycle slips the recording) is retried
        rig = jack_rig()
        mark = rig.log_mark()
        start = time.monotonic()
        res = _cli(rig, "live", "--input", str(source), "--output", "test_speakers", "--model",
                   str(gain_onnx), "--json")
        assert res.returncode == 0, res.stderr
        summary = json.loads(res.stdout)
        assert summary["frames_in"] == len(x)
        assert time.monotonic() - start >= len(x) / 16000  # played in real time
        recording, _ = rig.recording()
        match = find_in_recording(recording, 0, expected, 16000)
        if match.snr_db >= MIN_SNR_DB and match.worst_chunk_snr_db >= MIN_SNR_DB:
            return
        xruns = rig.xruns_between(mark, rig.log_mark()) + summary["xruns"]
        assert xruns > 0 and attempt < TRIES - 1, (match, f"{xruns} xruns")
        rig.close()


def slow_model(path: Path, hop_seconds: float) -> Path:
    """A gain-1 frame model that burns about three hops' duration of CPU per call (calibrated here), so the
    live worker cannot keep up: ``enhanced = frame + 0 * mean(cos(sin(frame x ones[K])))``."""

    def build(width: int) -> Path:
        spec = make_spec()
        inits = [numpy_helper.from_array(np.ones((1, 1, width), np.float32), "wide"),
                 numpy_helper.from_array(np.array([2], np.int64), "axis2"),
                 numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
        nodes = [helper.make_node("Unsqueeze", ["frame", "axis2"], ["f3"]),
                 helper.make_node("Mul", ["f3", "wide"], ["spread"]),
                 helper.make_node("Sin", ["spread"], ["s1"]),
                 helper.make_node("Cos", ["s1"], ["s2"]),
                 helper.make_node("ReduceMean", ["s2"], ["mean"], axes=[2], keepdims=0),  # opset 17
                 helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
                 helper.make_node("Add", ["frame", "nothing"], ["enhanced"])]
        graph = helper.make_graph(
            nodes, "slow", [helper.make_tensor_value_info("frame", TensorProto.FLOAT, ["B", spec.window])],
            [helper.make_tensor_value_info("enhanced", TensorProto.FLOAT, ["B", spec.window])],
            initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        helper.set_model_props(model, spec.to_metadata())
        onnx.save(model, str(path))
        return path

    def seconds_per_call(width: int) -> float:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(build(width)), options, providers=["CPUExecutionProvider"])
        frame = np.zeros((1, 256), np.float32)
        session.run(None, {"frame": frame})
        start = time.perf_counter()
        for _ in range(5):
            session.run(None, {"frame": frame})
        return (time.perf_counter() - start) / 5

    width = 64
    width = max(width, round(width * 3.0 * hop_seconds / seconds_per_call(width)))
    build(width)
    return path


def test_overload_is_counted_as_xruns(jack_rig: Callable[..., Any], tmp_path: Path) -> None:
    """A model slower than real time: the summary reports the underruns (jitter buffer ran dry), their sum in
    ``xruns``, and a jitter buffer that grew, and the run still ends cleanly."""
    model = slow_model(tmp_path / "slow.onnx", hop_seconds=128 / 16000)
    rig = jack_rig(samplerate=16000, period=160)
    cmd = [sys.executable, "-m", "cli", "live", "--input", "test_mic", "--output", "test_speakers",
           "--samplerate", "16000", "--blocksize", "160", "--model", str(model), "--duration", "2", "--json"]
    res = subprocess.run(cmd, env=rig.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["rtf"] > 1.0, s
    assert s["underruns"] >= 1 and s["xrun_detail"]["jitter_buffer_empty"] >= 1, s
    assert s["xruns"] == s["underruns"] + s["overruns"], s
    # the jitter buffer's target grew from a block and a hop (less their gcd) by a hop (8 ms) per underrun,
    # up to its cap
    start_ms = 1e3 * (160 + 128 - 32) / 16000
    grown = min(1e3 * MAX_JITTER_SECONDS, start_ms + 8.0 * s["xrun_detail"]["jitter_buffer_empty"])
    assert s["jitter_target_ms"] == pytest.approx(grown), s


def _cli(rig: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=rig.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_devices_lists_the_jack_clients(jack_rig: Callable[..., Any]) -> None:
    res = _cli(jack_rig(), "devices")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[1] if line.split()[0].isdigit() else line.split()[2]: line.split()
            for line in res.stdout.splitlines() if "JACK" in line}
    # index, name, host API (4 words), inputs, outputs, default rate ("16000 Hz")
    assert rows["test_mic"][-4:] == ["1", "0", "16000", "Hz"], res.stdout
    assert rows["test_speakers"][-4:] == ["0", "1", "16000", "Hz"], res.stdout


def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def test_unknown_device_lists_the_devices(jack_rig: Callable[..., Any], gain_onnx: Path) -> None:
    line = _one_error_line(_cli(jack_rig(), "live", "--input", "no_such_mic", "--output", "test_speakers",
                                "--model", str(gain_onnx)))
    assert "no_such_mic" in line and "test_mic" in line and "system" in line, line


def test_ambiguous_device_lists_the_matches(jack_rig: Callable[..., Any], gain_onnx: Path) -> None:
    line = _one_error_line(_cli(jack_rig(), "live", "--input", "s", "--output", "test_speakers",
                                "--model", str(gain_onnx)))
    assert "ambiguous" in line and "test_mic" in line and "system" in line, line


def test_unsupported_rate_names_the_device_rate(jack_rig: Callable[..., Any], gain_onnx: Path) -> None:
    line = _one_error_line(_cli(jack_rig(), "live", "--input", "test_mic", "--output", "test_speakers",
                                "--samplerate", "44100", "--model", str(gain_onnx)))
    assert "44100" in line and "16000" in line, line
