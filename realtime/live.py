"""``denoise live``: a microphone (or a WAV file) through the streaming engine into speakers (or a WAV file).

Threads and who does what:

* PortAudio's callbacks (:class:`~realtime.audio_io.Capture`, :class:`~realtime.audio_io.Playback`) only move
  blocks between bounded queues and the jitter buffer; they never run the model.
* One worker runs :class:`ABPipeline` (the engine, plus the input delayed by the same latency for bypass) from
  the source to the sink.
* The main thread waits, refreshes the status line (stderr, only on a terminal), handles Ctrl-C/SIGTERM, stops
  the streams in order (input, worker flush, output drained) and prints the summary. It is also the watchdog:
  a device stream with no callback for ``--stall-timeout`` seconds (a suspended or hung sound server, a device
  that stopped delivering) ends the run with :class:`~realtime.errors.DeviceStalled` once the worker has
  finished the output file, and the PortAudio calls that wait on the server (start, stop, close) are given the
  same time (:func:`~realtime.audio_io.bounded_call`), so the program never hangs inside PortAudio.

Latency, as reported and as measured on the device clock: PortAudio's input + output latency, the engine's
(model's algorithmic latency plus the resamplers at other device rates), and the jitter buffer (the phase
between the two streams and the silence inserted ahead of the audio; see
:func:`~realtime.audio_io.pipeline_delay`).

A WAV output is written aligned with the input (the engine latency removed and the tail flushed, as
``denoise enhance`` does), so file -> file equals ``denoise enhance`` on the same file.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from realtime.audio_io import (
    INIT_SECONDS,
    JACK_HOSTAPI,
    Capture,
    CycleClock,
    DeviceInfo,
    JitterBuffer,
    Playback,
    bounded_call,
    check_rate,
    list_devices,
    phase_offset,
    pipeline_delay,
    portaudio,
    resolve_device,
)
from realtime.dsp import DelayLine, dry_share
from realtime.engine import StreamingEngine
from realtime.errors import AudioFormatError, ConfigError, DenoiseError, DeviceError, DeviceStalled
from realtime.fileio import AUDIO_EXTENSIONS, read_audio_info
from realtime.model import FrameModel, load_model
from realtime.resample import ResamplingEngine

FADE_SECONDS = 0.010  # A/B crossfade: short enough to feel instant, long enough not to click
MAX_JITTER_SECONDS = 0.5  # the jitter buffer stops growing here; beyond it overload is heard, not buffered
QUEUE_SECONDS = 0.5  # capture backlog a stalled worker may accumulate before blocks are dropped
STATUS_HZ = 4
# A running device calls back every few ms; this long without a callback, or for a PortAudio call that waits
# on the sound server, is a stalled device (--stall-timeout).
STALL_SECONDS = 5.0
# PortAudio callbacks are Python and need the GIL; the default 5 ms switch interval could hold them back for
# half a 10 ms block while the worker computes.
_SWITCH_INTERVAL = 0.0005


class Engine(Protocol):
    latency_samples: int

    def output_lag(self, block: int) -> int: ...

    def process(self, block: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """``--input``/``--output`` parsed: a file path, or a device spec (name, index, 'mic'/'speakers')."""

    text: str
    path: Path | None

    @property
    def is_file(self) -> bool:
        return self.path is not None


def parse_endpoint(text: str, kind: str) -> Endpoint:
    """A path (an existing file, or any name ending in an audio extension) or else a device spec."""
    candidate = Path(text).expanduser()
    if candidate.suffix.lower() in AUDIO_EXTENSIONS or (kind == "input" and candidate.is_file()):
        return Endpoint(text, candidate)
    return Endpoint(text, None)


class ABPipeline:
    """The engine plus a dry path delayed by the same latency, crossfaded by the bypass switch.

    Both paths always run, so switching is sample-aligned and instant (a ``FADE_SECONDS`` crossfade). Blocks
    are float32 ``[C, n]`` at the stream rate. Each ``process`` call is timed; ``hop_us`` holds its duration
    scaled to one model hop of audio.
    """

    def __init__(self, engine: Engine, channels: int, rate: int, hop: int, bypass: bool) -> None:
        self.engine = engine
        self.latency = int(engine.latency_samples)
        self.rate = rate
        self.hop = hop  # model hop in stream samples (for per-hop times)
        self.bypass = bypass
        self._dry = DelayLine(channels, self.latency)
        self._wet = 0.0 if bypass else 1.0
        self._step = 1.0 / max(1, round(FADE_SECONDS * rate))
        self.hop_us = array("d")  # one float per call: compact for hours of audio
        self.compute_s = 0.0
        self.frames = 0

    def toggle(self) -> None:
        self.bypass = not self.bypass

    def _mix(self, wet: np.ndarray, dry_in: np.ndarray) -> np.ndarray:
        """Delay ``dry_in`` into the dry line, take as many dry samples as ``wet`` has, and crossfade."""
        n = wet.shape[1]
        dry = self._dry(dry_in, n)
        goal = 0.0 if self.bypass else 1.0
        if n == 0:
            return wet
        if self._wet == goal:
            return dry.copy() if goal == 0.0 else wet
        direction = 1.0 if goal > self._wet else -1.0
        gain = np.clip(self._wet + direction * self._step * np.arange(1, n + 1), 0.0, 1.0).astype(np.float32)
        self._wet = float(gain[-1])
        return gain * wet + (1.0 - gain) * dry

    def process(self, block: np.ndarray) -> np.ndarray:
        """float32 ``[C, n]`` in -> the samples the engine made final, denoised, bypassed or crossfading."""
        start = time.perf_counter()
        wet = self.engine.process(block)
        out = self._mix(wet, block)
        spent = time.perf_counter() - start
        n = block.shape[1]
        if n:
            self.hop_us.append(spent * 1e6 * self.hop / n)
        self.compute_s += spent
        self.frames += n
        return out

    def flush(self) -> np.ndarray:
        """The remaining ``latency`` samples of both paths (the engine is reset for a new stream)."""
        wet = self.engine.flush()
        tail = self._mix(wet, np.zeros((self._dry.channels, 0), dtype=np.float32))
        self._dry.reset()
        return tail

    def times_us(self, last: int | None = None) -> np.ndarray:
        """A copy of ``hop_us`` (all, or the last ``last``): slicing copies, so the worker's appends never
        meet a numpy view of the array (which would forbid them)."""
        return np.frombuffer(self.hop_us[-last:] if last else self.hop_us[:], dtype=np.float64)

    def percentiles(self, last: int | None = None) -> tuple[float, float]:
        """(p50, p99) of ``hop_us`` (all, or the last ``last``); NaN before the first block."""
        data = self.times_us(last)
        if not data.size:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(data, [50, 99])
        return float(p50), float(p99)

    @property
    def rtf(self) -> float:
        """Compute time over audio time: below 1 keeps up with real time."""
        return self.compute_s / (self.frames / self.rate) if self.frames else float("nan")


# --------------------------------------------------------------------------------------------- sources


class Source(Protocol):
    frames: int

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]: ...


class DeviceSource:
    """Blocks from a :class:`Capture`; after ``stop`` (the input stream is stopped first) the backlog queued
    then, and no more: a stream that could not be stopped must not keep the worker running."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.frames = 0

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        queued = self.capture.blocks
        while not stop.is_set():
            try:
                block = queued.get(timeout=0.05)
            except queue.Empty:
                continue
            self.frames += block.shape[1]
            yield block
        for _ in range(queued.qsize()):  # the backlog queued when stopped, and no more
            try:
                block = queued.get_nowait()
            except queue.Empty:
                return
            self.frames += block.shape[1]
            yield block


class FileSource:
    """A file in blocks: paced in real time (``realtime``), by a playback device's buffer (``playback``), or
    as fast as the worker runs. ``limit`` caps the frames read (``--duration``)."""

    def __init__(self, audio: np.ndarray, rate: int, blocksize: int, realtime: bool,
                 playback: Playback | None, limit: int | None) -> None:
        self.audio = audio if limit is None else audio[:, :limit]
        self.rate = rate
        self.blocksize = blocksize
        self.realtime = realtime
        self.playback = playback
        self.frames = 0

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        total = self.audio.shape[1]
        start = time.perf_counter()
        for pos in range(0, total, self.blocksize):
            if stop.is_set():
                return
            block = np.ascontiguousarray(self.audio[:, pos:pos + self.blocksize])
            if self.playback is not None:
                self.playback.buffer.wait_for_room(block.shape[1], stop)
            elif self.realtime:
                ahead = start + pos / self.rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            self.frames += block.shape[1]
            yield block


# ----------------------------------------------------------------------------------------------- sinks


class Sink(Protocol):
    frames: int

    def write(self, block: np.ndarray) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class DeviceSink:
    """Playback through a device's jitter buffer; finishing plays out what is queued."""

    def __init__(self, playback: Playback) -> None:
        self.playback = playback
        self.frames = 0  # audio frames handed to the device (silence it inserts is counted by Playback)

    def write(self, block: np.ndarray) -> None:
        self.playback.buffer.write(block)
        self.frames += block.shape[1]

    def finish(self) -> None:
        buffer = self.playback.buffer
        buffer.drain(timeout=buffer.fifo.level / self.playback.samplerate + 0.5)

    def abort(self) -> None:
        pass


class FileSink:
    """A WAV/FLAC/OGG recording aligned with the input: the first ``skip`` frames (the engine latency) are
    dropped. Written to a hidden temporary file beside the target and renamed over it when finished."""

    def __init__(self, path: Path, rate: int, channels: int, skip: int, subtype: str | None) -> None:
        fmt = path.suffix[1:].upper()
        if subtype is not None and not sf.check_format(fmt, subtype):
            subtype = None
        self.path = path
        self.skip = skip
        self.frames = 0
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = sf.SoundFile(str(self._tmp), "w", samplerate=rate, channels=channels,
                                      subtype=subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
            self._tmp.unlink(missing_ok=True)
            raise DenoiseError(f"Cannot write {path} ({exc}).",
                               "check that the folder exists and is writable, or pick another path.") from exc

    def write(self, block: np.ndarray) -> None:
        if self.skip:
            cut = min(self.skip, block.shape[1])
            block = block[:, cut:]
            self.skip -= cut
        if block.shape[1]:
            self._file.write(np.clip(block, -1.0, 1.0).T)
            self.frames += block.shape[1]

    def finish(self) -> None:
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- runner


@dataclass
class LiveSession:
    """Everything one run wires together (built by :func:`run_live`)."""

    frame_model: FrameModel
    pipeline: ABPipeline
    source: Source
    sink: Sink
    rate: int
    blocksize: int | None  # None: the host's (JACK's period), known once the streams run
    input_name: str
    output_name: str
    capture: Capture | None = None
    playback: Playback | None = None
    error: BaseException | None = None
    started: float = field(default_factory=time.perf_counter)
    # Latency as it was when the run was asked to stop (draining the output afterwards changes no latency).
    latency_at_stop: dict[str, float | None] | None = None
    worker_priority: str = "normal"

    def work(self, stop: threading.Event) -> None:
        """The worker thread: source -> pipeline -> sink, then flush and finish the sink."""
        if self.capture is not None or self.playback is not None:
            self.worker_priority = _raise_priority()
        try:
            for block in self.source.blocks(stop):
                self.sink.write(self.pipeline.process(block))
            self.sink.write(self.pipeline.flush())
            self.sink.finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = exc
            self.sink.abort()

    # -- figures ------------------------------------------------------------------------------------------
    def latencies(self) -> dict[str, float | None]:
        """Latency parts in ms and the total in samples at the stream rate."""
        spec = self.frame_model.spec
        engine_samples = self.pipeline.latency
        algorithmic = spec.latency_ms
        engine_ms = 1e3 * engine_samples / self.rate
        in_ms = 1e3 * self.capture.latency if self.capture else 0.0
        out_ms = 1e3 * self.playback.latency if self.playback else 0.0
        phase = None
        if self.capture and self.playback:
            phase = phase_offset(self.capture, self.playback)
            delay = pipeline_delay(self.capture, self.playback, engine_samples)
            jitter_samples = (delay - engine_samples) if delay is not None else 0
        elif self.playback:  # a file source: samples wait in the buffer for about its target
            jitter_samples = self.playback.buffer.target
        else:
            jitter_samples = 0
        device_samples = round((in_ms + out_ms) * self.rate / 1e3)
        total = device_samples + engine_samples + jitter_samples
        return {
            "latency_ms": 1e3 * total / self.rate,
            "latency_samples": total,
            "algorithmic_latency_ms": algorithmic,
            "resampler_latency_ms": engine_ms - algorithmic,
            "device_latency_ms": in_ms + out_ms,
            "input_latency_ms": in_ms,
            "output_latency_ms": out_ms,
            "jitter_buffer_ms": 1e3 * jitter_samples / self.rate,
            # how many frames after the input stream's the output stream started (both are devices)
            "stream_phase_samples": phase,
            # what the jitter buffer primes to: one block and a hop at first, a hop more per underrun
            "jitter_target_ms": 1e3 * self.playback.buffer.target / self.rate if self.playback else None,
        }

    def block(self) -> int | None:
        """Frames per callback: as asked, or as the host delivers them."""
        for stream in (self.capture, self.playback):
            if stream is not None and stream.xruns.callbacks:
                return round(stream.xruns.frames / stream.xruns.callbacks)
        return self.blocksize

    def xruns(self) -> dict[str, int]:
        streams = [s for s in (self.capture, self.playback) if s is not None]
        under = sum(s.underruns for s in streams)
        over = sum(s.overruns for s in streams)
        return {"xruns": under + over, "underruns": under, "overruns": over}

    def xrun_detail(self) -> dict[str, int]:
        """Where the xruns came from: PortAudio's status flags per stream, and our own queues."""
        detail: dict[str, int] = {}
        if self.capture is not None:
            detail |= {"input_flag_underruns": self.capture.xruns.flag_underruns,
                       "input_flag_overruns": self.capture.xruns.flag_overruns,
                       "input_queue_full": self.capture.queue_full}
        if self.playback is not None:
            detail |= {"output_flag_underruns": self.playback.xruns.flag_underruns,
                       "output_flag_overruns": self.playback.xruns.flag_overruns,
                       "jitter_buffer_empty": self.playback.buffer.empty,
                       "jitter_buffer_trims": self.playback.buffer.trim_events}
        return detail

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.pipeline.percentiles()
        times = self.pipeline.times_us() if self.pipeline.hop_us else np.zeros(1)
        frames_out = self.sink.frames
        if self.playback is not None:
            frames_out = self.playback.xruns.frames
        return {
            "model": str(self.frame_model.path),
            "model_sample_rate": self.frame_model.spec.sample_rate,
            "hop_ms": self.frame_model.spec.hop_ms,
            "input": self.input_name,
            "output": self.output_name,
            "samplerate": self.rate,
            "blocksize": self.block(),
            **{k: v if k == "latency_samples" else _round(v)
               for k, v in (self.latency_at_stop or self.latencies()).items()},
            **self.xruns(),
            "xrun_detail": self.xrun_detail(),
            "p50_us": _round(p50),
            "p99_us": _round(p99),
            "max_us": _round(float(times.max())),
            "rtf": _round(self.pipeline.rtf, 4),
            "worker_priority": self.worker_priority,
            "frames_in": int(self.source.frames),
            "frames_out": int(frames_out),
            "seconds": _round(time.perf_counter() - self.started, 3),
            "bypass": self.pipeline.bypass,
        }

    def header(self) -> str:
        spec = self.frame_model.spec
        return (f"{self.frame_model.path.name} ({spec.sample_rate} Hz, hop {spec.hop_ms:g} ms, ONNX Runtime "
                f"on {self.frame_model.device}): {self.input_name} -> {self.output_name} at {self.rate} Hz, "
                f"block {self.block() or 'from the host'}")

    def status_line(self) -> str:
        lat = self.latencies()
        p50, p99 = self.pipeline.percentiles(last=500)
        x = self.xruns()
        mode = "BYPASS" if self.pipeline.bypass else "denoise"
        return (f"{mode:7} | latency {lat['latency_ms']:.1f} ms (model {lat['algorithmic_latency_ms']:.1f} + "
                f"resampler {lat['resampler_latency_ms']:.1f} + device {lat['device_latency_ms']:.1f} + "
                f"jitter {lat['jitter_buffer_ms']:.1f}) | hop p50/p99 {p50:.0f}/{p99:.0f} us | "
                f"RTF {self.pipeline.rtf:.3f} | xruns {x['xruns']}")


def _raise_priority() -> str:
    """Put the calling thread in SCHED_FIFO at priority 1, the lowest real-time priority (below the audio
    driver's own threads), where the OS allows it (root, or an rtprio limit): on a busy machine a worker at
    normal priority can be kept off the CPU for longer than a block. Returns the priority it runs at."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # 0: the calling thread, on Linux
    except (AttributeError, OSError):  # not Linux, or not permitted
        return "normal"
    return "SCHED_FIFO 1"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)  # NaN -> null in JSON


def _validate(samplerate: int | None, blocksize: int | None, latency: str, duration: float | None,
              stall_timeout: float = STALL_SECONDS) -> None:
    if latency not in ("low", "high"):
        raise ConfigError(f"--latency is {latency!r}, expected 'low' or 'high'.",
                          "pass --latency low or high.")
    if samplerate is not None and samplerate < 1000:
        raise ConfigError(f"--samplerate is {samplerate}, expected a rate >= 1000 Hz.",
                          "omit it to use the device's default rate.")
    if blocksize is not None and blocksize < 1:
        raise ConfigError(f"--blocksize is {blocksize}, expected >= 1 frame.",
                          "omit it to use one model hop at the device rate.")
    if duration is not None and not duration > 0:
        raise ConfigError(f"--duration is {duration}, expected > 0 seconds.", "omit it to run until Ctrl-C.")
    if not (math.isfinite(stall_timeout) and stall_timeout > 0):
        raise ConfigError(f"--stall-timeout is {stall_timeout}, expected a number of seconds > 0.",
                          f"omit it for the default of {STALL_SECONDS:g} s.")


def _choose_rate(samplerate: int | None, file_rate: int | None, devices: list[tuple[DeviceInfo, str]],
                 channels: dict[str, int]) -> int:
    """The stream rate: a file input's, else --samplerate, else the first device's default; checked on every
    device (the model itself is resampled to any rate)."""
    if file_rate is not None:
        if samplerate is not None and samplerate != file_rate:
            raise AudioFormatError(
                f"--samplerate {samplerate} was given but the input file is {file_rate} Hz.",
                "omit --samplerate with a file input: the file's rate is used and the model is resampled.")
        rate = file_rate
    elif samplerate is not None:
        rate = samplerate
    else:
        rate = round(devices[0][0].default_samplerate)
    for device, kind in devices:
        check_rate(device, kind, rate, channels[kind], from_file=file_rate is not None)
    return rate


def run_live(input: str, output: str, model: Path | None, samplerate: int | None, blocksize: int | None,
             latency: str, device: str, threads: int, bypass: bool, realtime: bool, duration: float | None,
             json_summary: bool, atten_lim_db: float | None = None,
             stall_timeout: float = STALL_SECONDS) -> dict[str, Any]:
    """The ``denoise live`` command. Returns the summary it prints (one JSON object with ``json_summary``)."""
    _validate(samplerate, blocksize, latency, duration, stall_timeout)
    dry_share(atten_lim_db)
    src, dst = parse_endpoint(input, "input"), parse_endpoint(output, "output")
    audio = file_info = None
    if src.path is not None:
        audio, file_info = read_audio_info(src.path)
        if dst.path is not None and dst.path.resolve() == src.path.resolve():
            raise DenoiseError(f"--output {dst.text} is the input file; denoise never overwrites its input.",
                               "record to another path.")
    devices: list[tuple[DeviceInfo, str]] = []
    in_dev = out_dev = None
    if not src.is_file or not dst.is_file:
        portaudio(max(INIT_SECONDS, stall_timeout))
        known = list_devices()
        if not src.is_file:
            in_dev = resolve_device(src.text, "input", known)
            devices.append((in_dev, "input"))
        if not dst.is_file:
            out_dev = resolve_device(dst.text, "output", known)
            devices.append((out_dev, "output"))
    frame_model = load_model(model, device=device, threads=threads)
    spec = frame_model.spec
    channels = audio.shape[0] if audio is not None else 1
    out_channels = min(out_dev.outputs, max(channels, 2)) if out_dev else channels
    rate = _choose_rate(samplerate, file_info.rate if file_info else None, devices,
                        {"input": 1, "output": out_channels})
    hop = max(1, round(spec.hop * rate / spec.sample_rate))
    # JACK fixes the callback size (its period): asking PortAudio for another one makes it re-block, which
    # adds a burst of buffering that PortAudio does not report. So on JACK the default block is the period.
    host_sized = any(d.hostapi == JACK_HOSTAPI for d, _ in devices)
    block = blocksize or (None if host_sized else hop)
    engine: Engine = StreamingEngine(frame_model, channels, atten_lim_db)
    if rate != spec.sample_rate:
        engine = ResamplingEngine(engine, rate)  # type: ignore[arg-type]
    # Warm ONNX Runtime up (first runs allocate) before any stream depends on it.
    for _ in range(3):
        engine.process(np.zeros((channels, block or hop), dtype=np.float32))
    engine.reset()
    pipeline = ABPipeline(engine, channels, rate, hop, bypass)

    recording = None
    if dst.path is not None:
        recording = FileSink(dst.path, rate, channels, skip=pipeline.latency,
                             subtype=file_info.subtype if file_info else None)
    clock = CycleClock()
    capture = playback = None
    try:
        if in_dev:
            capture = Capture(in_dev, rate, block, latency, clock, 1,
                              queue_blocks=max(4, round(QUEUE_SECONDS * rate / (block or hop))))
        if out_dev:
            buffer = JitterBuffer(channels, hop, lag=engine.output_lag,
                                  max_target=round(MAX_JITTER_SECONDS * rate), blocksize=block)
            playback = Playback(out_dev, rate, latency, clock, buffer)
    except DenoiseError:
        if recording is not None:
            recording.abort()
        if capture is not None:
            capture.stream.close()
        raise
    limit = None if duration is None else round(duration * rate)
    source: Source = DeviceSource(capture) if capture else FileSource(
        audio, rate, block or hop, realtime, playback, limit)  # type: ignore[arg-type]
    sink: Sink = DeviceSink(playback) if playback is not None else recording  # type: ignore[assignment]
    session = LiveSession(frame_model, pipeline, source, sink, rate, block,
                          input_name=in_dev.name if in_dev else str(src.path),
                          output_name=out_dev.name if out_dev else str(dst.path),
                          capture=capture, playback=playback)
    _run(session, duration if capture else None, stall_timeout)
    summary = session.summary()
    if json_summary:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return summary


def _run(session: LiveSession, wall_limit: float | None, stall_timeout: float = STALL_SECONDS) -> None:
    """Start the streams and the worker, wait for the end (input exhausted, --duration, Ctrl-C, SIGTERM, a
    stream that stopped or stalled), stop everything in order, and re-raise a worker error.

    A stall (no callback for ``stall_timeout`` seconds, or a start/stop/close that does not return in that
    time) raises :class:`DeviceStalled` after the worker has finished the sink, and no PortAudio call is made
    after it: the blocked one would make the next wait too."""
    stop = threading.Event()  # tells the worker to finish
    failure: DenoiseError | None = None  # the device ended the run: it stopped by itself, or stalled
    interrupted = threading.Event()
    restore = _install_signal_handlers(interrupted)
    old_interval = sys.getswitchinterval()
    status = _StatusLine(session) if sys.stderr.isatty() else None
    worker = threading.Thread(target=session.work, args=(stop,), name="denoise-worker", daemon=True)
    devices = [s for s in (session.playback, session.capture) if s is not None]
    try:
        if devices:
            sys.setswitchinterval(_SWITCH_INTERVAL)
        _start_bypass_toggle(session.pipeline)
        session.started = time.perf_counter()
        worker.start()
        for dev in devices:  # the output first: it plays silence until the jitter buffer is primed
            _control(dev.stream.start, "start", dev, stall_timeout)
        watched_from = time.perf_counter()
        deadline = None if wall_limit is None else time.monotonic() + wall_limit
        if status:
            status.start()
        while worker.is_alive() and not interrupted.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if any(not dev.stream.active for dev in devices):
                failure = DeviceError("An audio stream stopped by itself (device unplugged, or the sound "
                                      "server stopped).", "check the device with `denoise devices` and start "
                                      "again.")
                break
            silent = _silent_devices(devices, watched_from, stall_timeout)
            if silent:
                names = " and ".join(f"the {dev.kind} device {dev.device.name!r}" for dev in silent)
                failure = DeviceStalled(
                    f"No audio from {names} for {stall_timeout:g} s: the device or the sound server (JACK, "
                    "PipeWire, PulseAudio) stopped running.",
                    "replug the device or restart the sound server, and start again; --stall-timeout sets "
                    "how long a silent device is waited for.")
                break
            worker.join(timeout=1.0 / STATUS_HZ if deadline is None else
                        max(0.0, min(1.0 / STATUS_HZ, deadline - time.monotonic())))
            if status:
                status.update()
        session.latency_at_stop = session.latencies()
        if session.playback is not None and session.capture is not None:
            # No input from now on: an empty buffer is the end of the stream, not an underrun.
            session.playback.buffer.draining = True
        if session.capture is not None and not isinstance(failure, DeviceStalled):
            _control(session.capture.stream.stop, "stop", session.capture, stall_timeout)
    except DeviceStalled as exc:  # a start or stop that did not return
        failure = exc
    finally:
        stop.set()  # the worker then takes the input's backlog, flushes and finishes the sink (a drain is
        if worker.is_alive():  # bounded), whatever stopped the run
            worker.join()
        if not isinstance(failure, DeviceStalled):
            try:
                for dev in devices:
                    _control(dev.stream.close, "close", dev, stall_timeout, failed_start_ok=True)
            except DeviceStalled as exc:
                failure = exc
        if status:
            status.stop()
        sys.setswitchinterval(old_interval)
        restore()
        if isinstance(failure, DeviceStalled):
            raise _note_saved(failure, session)
    if session.error is not None:
        raise session.error
    if failure is not None:
        raise failure


def _silent_devices(devices: list[Capture | Playback], since: float,
                    timeout: float) -> list[Capture | Playback]:
    """The device streams without a callback for more than ``timeout`` s (counting from ``since`` until their
    first one)."""
    now = time.perf_counter()
    return [dev for dev in devices
            if now - (since if dev.xruns.last is None else max(since, dev.xruns.last)) > timeout]


def _note_saved(exc: DeviceStalled, session: LiveSession) -> DeviceStalled:
    """``exc`` saying where the recording up to the stall was saved, when the output is a file."""
    sink = session.sink
    if not isinstance(sink, FileSink) or session.error is not None or not sink.path.exists():
        return exc
    saved = (f"{exc.message} The recording up to then is saved in {sink.path} "
             f"({sink.frames / session.rate:.1f} s).")
    return DeviceStalled(saved, exc.hint)


def _control(fn: Any, what: str, dev: Capture | Playback, timeout: float,
             failed_start_ok: bool = False) -> None:
    """Start, stop or close a device stream (``fn``) within ``timeout`` s (:func:`bounded_call`); a PortAudio
    error is a :class:`DenoiseError`, except on closing a stream whose start failed (``failed_start_ok``)."""
    sd = portaudio()
    try:
        bounded_call(fn, timeout, f"{what} the {dev.kind} stream of {dev.device.name!r}")
    except sd.PortAudioError as exc:
        if failed_start_ok:
            return
        raise DenoiseError(f"PortAudio could not {what} the stream ({exc}).",
                           "check the device with `denoise devices`, or pick another one.") from None


def _install_signal_handlers(event: threading.Event) -> Any:
    """Ctrl-C and SIGTERM set ``event`` (clean stop and summary); returns a function restoring the old
    handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: event.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _start_bypass_toggle(pipeline: ABPipeline) -> None:
    """On a terminal, every Enter flips bypass (a daemon thread blocked on stdin)."""
    if not sys.stdin or not sys.stdin.isatty():
        return

    def loop() -> None:
        for _ in sys.stdin:
            pipeline.toggle()

    threading.Thread(target=loop, name="denoise-bypass-toggle", daemon=True).start()


class _StatusLine:
    """A refreshed status line on stderr (rich Live)."""

    def __init__(self, session: LiveSession) -> None:
        from rich.console import Console
        from rich.live import Live

        self.session = session
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=STATUS_HZ, transient=True)

    def start(self) -> None:
        self.console.print(self.session.header(), highlight=False, markup=False)
        keys = "Enter switches denoise/bypass, " if sys.stdin and sys.stdin.isatty() else ""
        self.console.print(f"{keys}Ctrl-C stops", highlight=False)
        self.live.start()

    def update(self) -> None:
        from rich.text import Text

        self.live.update(Text(self.session.status_line(), overflow="fold"))

    def stop(self) -> None:
        self.live.stop()


def _print_summary(s: dict[str, Any]) -> None:
    print(f"{s['input']} -> {s['output']} at {s['samplerate']} Hz, block {s['blocksize']}: "
          f"{s['frames_in']} frames in, {s['frames_out']} out in {s['seconds']} s")
    print(f"latency {s['latency_ms']} ms = model {s['algorithmic_latency_ms']} + resampler "
          f"{s['resampler_latency_ms']} + device {s['device_latency_ms']} + jitter buffer "
          f"{s['jitter_buffer_ms']}")
    print(f"compute per hop p50 {s['p50_us']} us, p99 {s['p99_us']} us, max {s['max_us']} us; RTF {s['rtf']}")
    print(f"xruns {s['xruns']} (underruns {s['underruns']}, overruns {s['overruns']})")
