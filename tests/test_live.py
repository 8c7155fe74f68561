"""``denoise live`` and ``denoise devices`` without a sound server: the jitter buffer's policy and delay
accounting, the A/B pipeline, device choice, file -> file runs, and the missing-PortAudio error.

The real-stream tests are in ``test_live_e2e.py``.
"""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from onnx_models import ema_model, gain_model

from realtime.audio_io import (
    INIT_SECONDS,
    CycleClock,
    DeviceInfo,
    JitterBuffer,
    SampleFifo,
    _Xruns,
    bounded_call,
    jitter_target,
    phase_offset,
    resolve_device,
)
from realtime.batch import enhance_audio
from realtime.engine import StreamingEngine
from realtime.errors import AudioFormatError, ConfigError, DenoiseError, DeviceError, DeviceStalled
from realtime.live import ABPipeline, DeviceSource, _silent_devices, parse_endpoint, run_live
from realtime.model import load_model
from realtime.resample import ResamplingEngine

ROOT = Path(__file__).resolve().parent.parent
HOP = 128
# Runs the CLI with PortAudio's library hidden: sounddevice then fails exactly as on a machine without it.
NO_PORTAUDIO = (
    "import ctypes.util, sys\n"
    "_find = ctypes.util.find_library\n"
    "ctypes.util.find_library = lambda name: None if 'portaudio' in name else _find(name)\n"
    "sys.argv = ['denoise', *sys.argv[1:]]\n"
    "import cli\n"
    "cli.main()\n"
)


def cli_without_portaudio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NO_PORTAUDIO, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


# ------------------------------------------------------------------------------------------ jitter buffer


class Pipeline:
    """The worker's side of the buffer, simulated: input blocks counted as a ramp, an engine that releases
    whole hops, ``latency`` samples late (its first output samples are the zeros before the stream)."""

    def __init__(self, buffer: JitterBuffer, block: int, hop: int, latency: int = 0) -> None:
        self.buffer, self.block, self.hop, self.latency = buffer, block, hop, latency
        self.consumed = 0  # input frames
        self.produced = 0  # engine output frames

    def input_block(self) -> None:
        self.consumed += self.block
        ready = (self.consumed // self.hop) * self.hop
        # engine output m carries input m - latency; the ramp value of input k is k + 1 (0 = silence)
        values = np.arange(self.produced, ready, dtype=np.float32) - self.latency + 1
        self.buffer.write(np.maximum(values, 0)[None, :])
        self.produced = ready


def whole_hops(hop: int) -> Any:
    """The ``output_lag`` of an engine that returns whole hops (:meth:`StreamingEngine.output_lag`)."""
    return lambda block: hop - math.gcd(block, hop)


def play(buffer: JitterBuffer, frames: int, channels: int = 1) -> np.ndarray:
    out = np.full((frames, channels), np.nan, dtype=np.float32)
    buffer.fill(out)
    assert not np.isnan(out).any()
    return out[:, 0]


def check_delay(output: np.ndarray, buffer: JitterBuffer, latency: int = 0, start: int = 0) -> None:
    """Every output frame ``p`` (from ``start`` on) carrying input ``k`` (ramp value ``k + 1``) satisfies
    ``p - k == latency + inserted - trimmed``: the accounting :func:`pipeline_delay` relies on."""
    p = np.flatnonzero(output[start:] > 0) + start
    k = output[p].astype(np.int64) - 1
    assert len(p), "nothing was played"
    np.testing.assert_array_equal(p - k, latency + buffer.inserted - buffer.trimmed)


@pytest.mark.parametrize("block,hop",
                         [(160, 128), (128, 128), (256, 128), (100, 128), (480, 128), (384, 384)])
def test_jitter_target_never_runs_dry(block: int, hop: int) -> None:
    """Output callback first in each cycle (the worst order), the worker done before the next: with the
    target of :func:`jitter_target` no underrun ever happens, and the delay is what the counters say."""
    buffer = JitterBuffer(1, hop, lag=whole_hops(hop), max_target=8000, blocksize=block)
    assert buffer.target == jitter_target(block, hop - math.gcd(block, hop))
    worker = Pipeline(buffer, block, hop, latency=hop)
    out = []
    for _ in range(600):
        out.append(play(buffer, block))
        worker.input_block()
    assert buffer.empty == 0 and buffer.trim_events == 0
    output = np.concatenate(out)
    check_delay(output, buffer, latency=hop)
    played = output[output > 0]
    np.testing.assert_array_equal(np.diff(played), 1.0)  # continuous: no frame lost or repeated


def test_underrun_costs_one_hop_of_latency_not_repeated_glitches() -> None:
    block, hop = 160, 128
    buffer = JitterBuffer(1, hop, lag=whole_hops(hop), max_target=8000, blocksize=block)
    worker = Pipeline(buffer, block, hop)
    out = []
    for cycle in range(400):
        out.append(play(buffer, block))
        if cycle == 100:  # the worker stalls for two cycles, then catches up
            stalled = 2
        if cycle >= 100 and stalled:
            stalled -= 1
            continue
        worker.input_block()
        if cycle == 102:
            worker.input_block()
            worker.input_block()
    target = jitter_target(block, hop - math.gcd(block, hop))
    assert buffer.empty == 1, "one stall must cost one underrun, not one per block"
    assert buffer.target == target + hop
    output = np.concatenate(out)
    check_delay(output, buffer, start=110 * block)  # after the gap: the delay grew by the inserted silence
    played = output[output > 0]
    np.testing.assert_array_equal(np.diff(played), 1.0)  # a gap of silence, but no audio lost


def test_backlog_far_above_target_is_trimmed_back() -> None:
    block, hop = 160, 128
    buffer = JitterBuffer(1, hop, lag=whole_hops(hop), max_target=8000, blocksize=block)
    worker = Pipeline(buffer, block, hop)
    out = []
    for cycle in range(200):
        out.append(play(buffer, block))
        worker.input_block()
        if cycle == 50:
            for _ in range(10):  # a burst: ten blocks at once
                worker.input_block()
    assert buffer.trim_events == 1 and buffer.trimmed > 0
    assert buffer.fifo.level <= buffer.target + buffer.slack
    output = np.concatenate(out)
    check_delay(output, buffer, start=60 * block)


def test_draining_plays_the_tail_and_is_no_underrun() -> None:
    buffer = JitterBuffer(1, HOP, lag=whole_hops(HOP), max_target=8000, blocksize=160)
    buffer.write(np.arange(1, 101, dtype=np.float32)[None, :])  # less than the target: never primed
    buffer.draining = True
    first = play(buffer, 160)
    np.testing.assert_array_equal(first[:100], np.arange(1, 101))
    assert not first[100:].any() and not play(buffer, 160).any()
    assert buffer.empty == 0


def test_block_size_is_learnt_from_the_first_callback() -> None:
    buffer = JitterBuffer(1, HOP, lag=whole_hops(HOP), max_target=8000, blocksize=None)
    play(buffer, 480)
    assert buffer.blocksize == 480 and buffer.target == jitter_target(480, 96) == 480 + HOP - 32


@pytest.mark.parametrize("rate,block", [(48000, 384), (48000, 480), (44100, 353), (44100, 441), (22050, 256),
                                        (32000, 160)])
def test_resampled_output_lag_is_exact_and_the_target_never_runs_dry(rate: int, block: int,
                                                                     tmp_path: Path) -> None:
    """Through the resamplers the engine's output comes in uneven pieces (352, 353 or 706 frames per
    353-frame block at 44.1 kHz; exactly 384 per 384 at 48 kHz). ``output_lag``, counted without audio, is
    what 3000 blocks through the real engine show, and a buffer of ``block + output_lag`` fed by it, read
    before each write (the worst order), never runs dry."""
    engine = ResamplingEngine(StreamingEngine(load_model(gain_model(tmp_path / "g.onnx"))), rate)
    lag = engine.output_lag(block)
    buffer = JitterBuffer(1, round(128 * rate / 16000), lag=engine.output_lag, max_target=8000,
                          blocksize=block)
    behind, fed, got = [], 0, 0
    for _ in range(3000):
        play(buffer, block)
        out = engine.process(np.ones((1, block), np.float32))
        buffer.write(out[None, :] if out.ndim == 1 else out)
        fed, got = fed + block, got + out.shape[-1]
        behind.append(fed - got)
    assert max(behind) - min(behind) == lag
    assert buffer.primed and buffer.empty == 0 and buffer.trim_events == 0
    if rate % 16000 == 0 and block % round(128 * rate / 16000) == 0:
        assert lag == 0  # whole hops at a multiple of the model rate: no margin, no latency spent on it


def test_the_output_clock_ignores_its_start_up_prefill() -> None:
    """PortAudio's ALSA host fills the output buffer at once on start (callbacks back to back, before the
    device runs; through PulseAudio then none for 0.7 s): those are early, and the phase between the streams
    comes from the callbacks after them (measured error without this: 0.6-1.3 s)."""
    rate, block = 16000, 128
    capture: Any = SimpleNamespace(xruns=_Xruns(), samplerate=rate)
    playback: Any = SimpleNamespace(xruns=_Xruns(), samplerate=rate, latency=2 * block / rate,
                                    buffer=SimpleNamespace(blocksize=block))
    t0 = 100.0
    for i in range(3):  # pre-fill: three blocks within a millisecond
        playback.xruns.note(t0 + 1e-4 * i, None, block)
    for i in range(3, 200):  # then the device runs, 0.7 s later, and the input 5 blocks after it
        playback.xruns.note(t0 + 0.7 + (i - 3) * block / rate, None, block)
    for i in range(200):
        capture.xruns.note(t0 + 0.7 + (5 + i) * block / rate, None, block)
    # output frame 3 * block was handed over at t0 + 0.7; input frame 0 at t0 + 0.7 + 5 blocks
    assert phase_offset(capture, playback) == pytest.approx(-(5 + 3) * block)


def test_mono_is_played_on_every_device_channel() -> None:
    buffer = JitterBuffer(1, HOP, lag=whole_hops(HOP), max_target=8000, blocksize=128)
    buffer.write(np.arange(1, 257, dtype=np.float32)[None, :])
    out = np.zeros((128, 2), dtype=np.float32)
    buffer.fill(out)
    np.testing.assert_array_equal(out[:, 0], np.arange(1, 129))
    np.testing.assert_array_equal(out[:, 0], out[:, 1])


def test_sample_fifo_wraps_and_drops_the_oldest_when_full() -> None:
    fifo = SampleFifo(2, capacity=10)
    data = np.arange(14, dtype=np.float32).reshape(7, 2)
    assert fifo.write(data) == 0
    out = np.empty((5, 2), dtype=np.float32)
    fifo.read_into(out)
    np.testing.assert_array_equal(out, data[:5])
    more = np.arange(100, 120, dtype=np.float32).reshape(10, 2)
    assert fifo.write(more) == 2  # 2 + 10 frames in a buffer of 10: the 2 oldest go
    out = np.empty((10, 2), dtype=np.float32)
    fifo.read_into(out)
    np.testing.assert_array_equal(out, more)
    assert fifo.level == 0


def test_cycle_clock_gives_back_to_back_callbacks_one_cycle_time() -> None:
    clock = CycleClock(chain_s=0.005)
    first = clock.enter()
    clock.leave()
    assert clock.enter() == first  # the other stream's callback, right after, on the same thread
    clock.leave()
    time.sleep(0.02)
    later = clock.enter()
    clock.leave()
    assert later > first + 0.015  # the next cycle
    times: list[float] = []

    def other_thread() -> None:
        times.append(clock.enter())
        clock.leave()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert times[0] > later  # another thread (another device's stream) is never chained


# ---------------------------------------------------------------------------------------- A/B pipeline


def test_bypass_is_the_input_delayed_by_the_engine_latency(tmp_path: Path) -> None:
    engine = StreamingEngine(load_model(gain_model(tmp_path / "g.onnx", gain=0.5)))
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 4000)).astype(np.float32)
    ab = ABPipeline(engine, 1, 16000, HOP, bypass=True)
    y = np.concatenate([ab.process(x[:, i:i + 160]) for i in range(0, 4000, 160)] + [ab.flush()], axis=1)
    assert y.shape[1] == 4000 + ab.latency
    np.testing.assert_array_equal(y[:, ab.latency:], x)
    assert len(ab.hop_us) == 25 and ab.rtf > 0


def test_toggling_crossfades_between_aligned_paths(tmp_path: Path) -> None:
    """Denoised and bypassed output are the same signal at the same time (gain 0.5 vs 1), so after a toggle
    the output moves from 0.5 x to x within the fade and never jumps in time."""
    engine = StreamingEngine(load_model(gain_model(tmp_path / "g.onnx", gain=0.5)))
    x = np.full((1, 8000), 0.4, dtype=np.float32)
    ab = ABPipeline(engine, 1, 16000, HOP, bypass=False)
    parts = []
    for i in range(0, 8000, 160):
        if i == 4000:
            ab.toggle()
        parts.append(ab.process(x[:, i:i + 160]))
    y = np.concatenate(parts, axis=1)[0]
    fade = round(0.010 * 16000)
    switch = np.flatnonzero(np.abs(y - 0.2) > 1e-5)
    switch = switch[switch > 1000][0]  # first sample after the toggle that is not 0.5 x
    assert np.allclose(y[1000:switch], 0.2, atol=1e-5)
    ramp = y[switch:switch + fade]
    assert np.all(np.diff(ramp) > 0) and np.max(np.diff(ramp)) < 0.2 / fade * 1.01  # a smooth ramp, no step
    assert np.allclose(y[switch + fade:], 0.4, atol=1e-5)


# -------------------------------------------------------------------------------------------- devices


DEVICES = [
    DeviceInfo(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "ALSA", 2, 2, 48000.0, False, False),
    DeviceInfo(1, "USB Headset Mic", "ALSA", 1, 0, 44100.0, False, False),
    DeviceInfo(2, "USB Headset", "ALSA", 0, 2, 44100.0, False, False),
    DeviceInfo(3, "pulse", "ALSA", 32, 32, 44100.0, True, True),
    DeviceInfo(4, "USB Camera Mic", "ALSA", 1, 0, 16000.0, False, False),
]


def test_devices_are_found_by_alias_index_and_part_of_a_name() -> None:
    assert resolve_device("mic", "input", DEVICES).index == 3
    assert resolve_device("speakers", "output", DEVICES).index == 3
    assert resolve_device("4", "input", DEVICES).name == "USB Camera Mic"
    assert resolve_device("camera", "input", DEVICES).index == 4
    assert resolve_device("usb headset", "output", DEVICES).index == 2  # the input-only one does not count
    assert resolve_device("USB HEADSET MIC", "input", DEVICES).index == 1


def test_ambiguous_name_lists_the_matches() -> None:
    with pytest.raises(DeviceError, match="ambiguous") as err:
        resolve_device("usb", "input", DEVICES)
    assert "USB Headset Mic" in str(err.value) and "USB Camera Mic" in str(err.value)


def test_unknown_name_lists_the_devices_of_that_kind() -> None:
    with pytest.raises(DeviceError) as err:
        resolve_device("webcam", "input", DEVICES)
    message = str(err.value)
    assert "'webcam'" in message and "USB Camera Mic" in message and "pulse" in message
    assert "USB Headset]" not in message  # output-only devices are not offered as inputs


def test_wrong_kind_and_missing_default_are_explained() -> None:
    with pytest.raises(DeviceError, match="has no input channels"):
        resolve_device("2", "input", DEVICES)
    with pytest.raises(DeviceError, match="there is no device 9"):
        resolve_device("9", "input", DEVICES)
    no_default = [d for d in DEVICES if d.name != "pulse"]
    with pytest.raises(DeviceError, match="no default input device"):
        resolve_device("mic", "input", no_default)


def test_endpoints_tell_files_from_devices(tmp_path: Path) -> None:
    existing = tmp_path / "take1"
    existing.write_bytes(b"")
    assert parse_endpoint("mic", "input").path is None
    assert parse_endpoint("USB Headset", "output").path is None
    assert parse_endpoint("3", "input").path is None
    assert parse_endpoint("rec.wav", "output").path == Path("rec.wav")
    assert parse_endpoint(str(existing), "input").path == existing


# ----------------------------------------------------------------------------------- stalled devices


def test_a_capture_that_keeps_running_after_stop_does_not_keep_the_worker() -> None:
    """After stop the worker takes the backlog queued then and ends, even while blocks keep coming (an input
    stream whose stop failed or hung)."""
    capture: Any = SimpleNamespace(blocks=queue.Queue())
    for i in range(3):
        capture.blocks.put(np.full((1, 4), i, np.float32))
    running = threading.Event()
    running.set()

    def keep_feeding() -> None:
        while running.is_set():
            capture.blocks.put(np.full((1, 4), 9, np.float32))
            time.sleep(0.001)

    stop = threading.Event()
    stop.set()
    source = DeviceSource(capture)
    feeder = threading.Thread(target=keep_feeding, daemon=True)
    got: list[float] = []
    try:
        blocks = source.blocks(stop)
        got.append(float(next(blocks)[0, 0]))
        feeder.start()
        for block in blocks:
            got.append(float(block[0, 0]))
            if len(got) > 50:  # the old behaviour: as long as blocks come
                break
    finally:
        running.clear()
    assert got[:3] == [0.0, 1.0, 2.0] and len(got) < 10, got
    assert source.frames == 4 * len(got)


def test_bounded_call_returns_reraises_and_gives_up_on_a_blocked_call() -> None:
    assert bounded_call(lambda: 42, 1.0, "answer") == 42
    with pytest.raises(ZeroDivisionError):
        bounded_call(lambda: 1 / 0, 1.0, "divide")
    never = threading.Event()
    start = time.monotonic()
    with pytest.raises(DeviceStalled, match="PortAudio did not stop the input stream within 0.2 s"):
        bounded_call(never.wait, 0.2, "stop the input stream")
    assert time.monotonic() - start < 2.0
    never.set()  # let the abandoned thread end


class _FakeStream:
    def __init__(self, last: float | None) -> None:
        self.xruns = SimpleNamespace(last=last)


def test_a_device_is_stalled_after_timeout_seconds_without_a_callback() -> None:
    now = time.perf_counter()
    running, stalled, never_called = _FakeStream(now - 0.1), _FakeStream(now - 3.0), _FakeStream(None)
    devices: Any = [running, stalled, never_called]
    assert _silent_devices(devices, since=now - 10.0, timeout=2.0) == [stalled, never_called]
    # until its first callback a stream is timed from when the streams started
    assert _silent_devices(devices, since=now - 1.0, timeout=2.0) == []


def test_a_stalled_device_ends_the_cli_without_waiting_on_exit_handlers() -> None:
    """DeviceStalled leaves a thread blocked in PortAudio, whose exit handler would block as well: the CLI
    prints the one-line error and ends at once (an exit handler that never returns stands in for
    PortAudio's)."""
    script = (
        "import atexit, sys, threading\n"
        "atexit.register(threading.Event().wait)\n"
        "import realtime.live\n"
        "from realtime.errors import DeviceStalled\n"
        "def stalled(**kw):\n"
        "    raise DeviceStalled('No audio from the input device for 5 s.', 'restart the sound server.')\n"
        "realtime.live.run_live = stalled\n"
        "sys.argv = ['denoise', 'live', '--input', 'mic', '--output', 'speakers']\n"
        "import cli\n"
        "cli.main()\n"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["error: No audio from the input device for 5 s. Fix: restart the sound server."], \
        res.stderr


def test_portaudio_that_never_initialises_is_reported_not_silenced(tmp_path: Path) -> None:
    """PortAudio's initialisation asks the sound server, and sounddevice sends stderr to /dev/null meanwhile:
    a server that never answers must give an error on the real stderr, not a silent hang. A stand-in
    ``sounddevice`` does just that (stderr to /dev/null, then blocks)."""
    (tmp_path / "sounddevice.py").write_text(
        "import os, threading\n"
        "os.dup2(os.open(os.devnull, os.O_WRONLY), 2)\n"
        "threading.Event().wait()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "cli", "devices"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - start < INIT_SECONDS + 20
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert f"PortAudio did not initialise within {INIT_SECONDS:g} s" in lines[0], res.stderr


# ------------------------------------------------------------------------------------ without PortAudio


def test_missing_portaudio_is_one_line_naming_the_fix() -> None:
    for args in (["devices"], ["live", "--input", "mic", "--output", "speakers"]):
        res = cli_without_portaudio(*args)
        assert res.returncode != 0
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert "PortAudio" in lines[0] and "apt-get install libportaudio2" in lines[0]


def test_file_to_file_needs_no_portaudio_and_equals_enhance(tmp_path: Path) -> None:
    """A stateful model on a stereo file: the live path, run with PortAudio missing, writes exactly what
    ``denoise enhance`` computes (aligned, same length)."""
    model = ema_model(tmp_path / "ema.onnx")
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 16000 + 77)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x.T, 16000, subtype="FLOAT")
    res = cli_without_portaudio("live", "--input", str(tmp_path / "in.wav"), "--output",
                                str(tmp_path / "out.wav"), "--model", str(model), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["frames_in"] == summary["frames_out"] == x.shape[1]
    assert summary["xruns"] == 0 and summary["latency_ms"] == summary["algorithmic_latency_ms"] == 8.0
    y, rate = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert rate == 16000
    expected = enhance_audio(load_model(model), x, 16000)
    np.testing.assert_allclose(y.T, expected, atol=1e-6)


def test_file_to_file_at_another_rate_equals_streaming_enhance(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = gain_model(tmp_path / "g.onnx", gain=0.5)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (1, 48000)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x.T, 48000, subtype="FLOAT")
    summary = run_live(input=str(tmp_path / "in.wav"), output=str(tmp_path / "out.wav"), model=model,
                       samplerate=None, blocksize=None, latency="low", device="cpu", threads=1, bypass=False,
                       realtime=False, duration=None, json_summary=False)
    assert "latency" in capsys.readouterr().out
    assert summary["samplerate"] == 48000 and summary["blocksize"] == 384  # one model hop at 48 kHz
    assert summary["resampler_latency_ms"] > 0
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    np.testing.assert_allclose(y.T, enhance_audio(load_model(model), x, 48000, streaming=True), atol=1e-6)


def _live_file(tmp_path: Path, model: Path, **kw: Any) -> dict[str, Any]:
    """``run_live`` from ``tmp_path/in.wav`` to ``tmp_path/out.wav``; ``kw`` overrides its arguments."""
    args: dict[str, Any] = {"input": str(tmp_path / "in.wav"), "output": str(tmp_path / "out.wav"),
                            "model": model, "samplerate": None, "blocksize": None, "latency": "low",
                            "device": "cpu", "threads": 1, "bypass": False, "realtime": False,
                            "duration": None, "json_summary": True}
    return run_live(**(args | kw))


def test_file_modes_bypass_duration_and_realtime_pacing(tmp_path: Path) -> None:
    model = gain_model(tmp_path / "g.onnx", gain=0.5)
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (1, 8000)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x.T, 16000, subtype="FLOAT")
    _live_file(tmp_path, model, bypass=True)
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(y.T, x)  # bypass, latency-compensated: the input itself
    _live_file(tmp_path, model, atten_lim_db=6.0)
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    g = 10.0 ** (-6.0 / 20.0)
    np.testing.assert_allclose(y.T, enhance_audio(load_model(model), x, 16000, atten_lim_db=6.0), atol=1e-6)
    np.testing.assert_allclose(y.T, ((1.0 - g) * 0.5 + g) * x, atol=1e-5)  # the input mixed back, aligned
    summary = _live_file(tmp_path, model, duration=0.2)
    assert summary["frames_in"] == summary["frames_out"] == 3200
    start = time.perf_counter()
    _live_file(tmp_path, model, realtime=True)
    assert time.perf_counter() - start >= 0.45  # 0.5 s of audio, paced in real time


def test_file_mode_errors(tmp_path: Path) -> None:
    model = gain_model(tmp_path / "g.onnx")
    x = np.zeros((1, 1600), dtype=np.float32)
    sf.write(tmp_path / "in.wav", x.T, 16000)
    with pytest.raises(DenoiseError, match="never overwrites its input"):
        _live_file(tmp_path, model, output=str(tmp_path / "in.wav"))
    with pytest.raises(AudioFormatError, match="--samplerate 48000 .* 16000 Hz"):
        _live_file(tmp_path, model, samplerate=48000)
    with pytest.raises(AudioFormatError, match="does not exist"):
        _live_file(tmp_path, model, input=str(tmp_path / "missing.wav"))
    with pytest.raises(ConfigError, match="--atten-lim 20"):
        _live_file(tmp_path, model, atten_lim_db=-3.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--stall-timeout"):
            _live_file(tmp_path, model, stall_timeout=bad)
    assert not (tmp_path / "out.wav").exists()
