"""Audio devices through PortAudio (sounddevice): listing, choosing by name or index, and the two device
streams of ``denoise live``.

``sounddevice`` loads the PortAudio shared library when it is imported and fails when it is missing, so it is
imported here only, inside functions (:func:`portaudio`): file modes never need it.

Live audio uses two separate streams joined by a worker, never one duplex stream: on PulseAudio/PipeWire a
duplex stream over two devices was measured to slip samples silently. The PortAudio callbacks only move
blocks:

* :class:`Capture` — ``InputStream`` callback -> bounded queue of float32 ``[C, n]`` blocks (full -> overrun).
* :class:`Playback` — worker -> :class:`JitterBuffer` -> ``OutputStream`` callback. Playback starts once the
  buffer holds its target; an underrun plays silence and grows the target by one model hop, so overload costs
  latency instead of repeated glitches; a buffer far above its target (after a stall, or from clock drift
  between two devices) drops its oldest samples back to the target.

Both keep the counters that give the pipeline's exact delay (see :func:`pipeline_delay`) and every xrun, and
the time of their last callback, which tells a stalled device (and :func:`bounded_call` bounds the PortAudio
calls that block while the sound server does not run).
"""

from __future__ import annotations

import collections
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, TypeVar

import numpy as np

from realtime.errors import DeviceError, DeviceStalled

Kind = Literal["input", "output"]
JACK_HOSTAPI = "JACK Audio Connection Kit"  # PortAudio's name for it
DEFAULT_ALIASES = {"input": ("mic", "default"), "output": ("speakers", "default")}
_PORTAUDIO_FIX = ("install the PortAudio library (`apt-get install libportaudio2` on Debian/Ubuntu, "
                  "`brew install portaudio` on macOS), or use WAV files for --input and --output")
# Callback clock samples kept per stream to estimate its phase (a few seconds of 10 ms blocks).
_CLOCK_SAMPLES = 256
# PortAudio status flags by the counter they feed.
_UNDER_FLAGS = ("input_underflow", "output_underflow")
_OVER_FLAGS = ("input_overflow", "output_overflow")

# How long PortAudio's initialisation may take: it asks the sound servers (JACK) for their clients.
INIT_SECONDS = 10.0

_sd: ModuleType | None = None
_T = TypeVar("_T")


def bounded_call(fn: Callable[[], _T], timeout: float, what: str) -> _T:
    """``fn()`` on a daemon thread, waited for at most ``timeout`` seconds; :class:`DeviceStalled` (saying
    that ``what`` did not finish) if it is still running then. Its exceptions are re-raised here.

    For the PortAudio calls that wait on the sound server: initialisation, and starting, stopping and closing
    a stream. On JACK each waits for a server cycle (PortAudio 19.6 gives a stop up to 10 minutes), so a
    server that stopped running (suspended, hung, or a dead PipeWire-JACK bridge) would otherwise hang the
    program. The thread is left blocked; the caller must make no further PortAudio call.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=f"denoise-portaudio-{what.split()[0]}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DeviceStalled(f"PortAudio did not {what} within {timeout:g} s: the device or the sound server "
                            "(JACK, PipeWire, PulseAudio) stopped answering.",
                            "replug the device or restart the sound server, and start again "
                            "(`denoise devices` answers at once when PortAudio does).")
    if error:
        raise error[0]
    return result[0]


def portaudio(timeout: float = INIT_SECONDS) -> ModuleType:
    """Import ``sounddevice``, which loads and initialises PortAudio; a missing library is a one-line
    :class:`DeviceError`, a sound server that does not answer within ``timeout`` a :class:`DeviceStalled`."""
    global _sd
    if _sd is None:
        def load() -> ModuleType:
            import sounddevice

            return sounddevice

        # sounddevice points file descriptor 2 at /dev/null while PortAudio initialises (to hide the host
        # APIs' chatter); an initialisation that never returns would leave every later error unprinted.
        stderr = os.dup(2)
        try:
            _sd = bounded_call(load, timeout, "initialise")
        except (OSError, ImportError) as exc:  # OSError: "PortAudio library not found"
            raise DeviceError(f"Live audio needs the PortAudio library, which could not be loaded ({exc}).",
                              _PORTAUDIO_FIX + ".") from None
        except DeviceStalled:
            os.dup2(stderr, 2)
            raise
        finally:
            os.close(stderr)
    return _sd


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device."""

    index: int
    name: str
    hostapi: str
    inputs: int  # max input channels
    outputs: int  # max output channels
    default_samplerate: float
    default_input: bool  # the system's default input device
    default_output: bool

    def channels(self, kind: Kind) -> int:
        return self.inputs if kind == "input" else self.outputs

    def describe(self) -> str:
        return (f"[{self.index}] {self.name} ({self.hostapi}, {self.inputs} in/{self.outputs} out, "
                f"{self.default_samplerate:g} Hz)")


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device, in PortAudio's order."""
    sd = portaudio()
    apis = [h["name"] for h in sd.query_hostapis()]
    default_in, default_out = _defaults(sd)
    return [
        DeviceInfo(index=i, name=str(d["name"]), hostapi=apis[d["hostapi"]],
                   inputs=int(d["max_input_channels"]), outputs=int(d["max_output_channels"]),
                   default_samplerate=float(d["default_samplerate"]), default_input=i == default_in,
                   default_output=i == default_out)
        for i, d in enumerate(sd.query_devices())
    ]


def _defaults(sd: ModuleType) -> tuple[int, int]:
    """(default input index, default output index); -1 where there is none."""
    pair = sd.default.device
    found = []
    for kind, value in zip(("input", "output"), (pair[0], pair[1])):
        if isinstance(value, int) and value >= 0:
            found.append(value)
            continue
        try:
            found.append(int(sd.query_devices(kind=kind)["index"]))
        except (sd.PortAudioError, ValueError, KeyError):
            found.append(-1)
    return found[0], found[1]


def print_devices() -> None:
    """The ``denoise devices`` command: a table of devices, '>' marking the default input, '<' the output."""
    sd = portaudio()
    devices = list_devices()
    print(f"{sd.get_portaudio_version()[1]}")
    if not devices:
        print("no audio devices (no sound card, and no sound server such as JACK or PulseAudio is running)")
        return
    width = max(len(d.name) for d in devices)
    api_width = max(len(d.hostapi) for d in devices)
    print(f"    {'#':>3}  {'name':<{width}}  {'host API':<{api_width}}  {'in':>3}  {'out':>3}  default rate")
    for d in devices:
        mark = (">" if d.default_input else " ") + ("<" if d.default_output else " ")
        print(f" {mark} {d.index:>3}  {d.name:<{width}}  {d.hostapi:<{api_width}}  {d.inputs:>3}  "
              f"{d.outputs:>3}  {d.default_samplerate:g} Hz")
    print("(> default input, < default output; pass a name, part of one, or a number to --input/--output)")


def _listing(devices: list[DeviceInfo], kind: Kind) -> str:
    usable = [d for d in devices if d.channels(kind) > 0]
    if not usable:
        return f"there are no {kind} devices"
    return f"{kind} devices: " + "; ".join(d.describe() for d in usable)


def resolve_device(spec: str, kind: Kind, devices: list[DeviceInfo] | None = None) -> DeviceInfo:
    """The device ``spec`` names for ``kind``: 'mic'/'speakers'/'default', an index, or a case-insensitive
    (part of a) name. An exact name wins over partial matches; several matches are an error listing them."""
    devices = list_devices() if devices is None else devices
    flag = f"--{kind}"
    text = spec.strip()
    if text.lower() in DEFAULT_ALIASES[kind]:
        chosen = [d for d in devices if (d.default_input if kind == "input" else d.default_output)]
        if not chosen:
            raise DeviceError(f"There is no default {kind} device ({_listing(devices, kind)}).",
                              f"pass {flag} with a device name or number from `denoise devices`, or a WAV "
                              "file.")
        return chosen[0]
    if text.isdigit():
        index = int(text)
        if index >= len(devices):
            raise DeviceError(f"{flag} {index}: there is no device {index} ({_listing(devices, kind)}).",
                              f"pass {flag} with a number from `denoise devices`.")
        device = devices[index]
        if device.channels(kind) == 0:
            raise DeviceError(f"{flag} {index}: {device.describe()} has no {kind} channels "
                              f"({_listing(devices, kind)}).", f"pass {flag} with an {kind} device.")
        return device
    usable = [d for d in devices if d.channels(kind) > 0]
    needle = text.lower()
    matches = ([d for d in usable if d.name.lower() == needle]
               or [d for d in usable if needle in d.name.lower()])
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = "; ".join(m.describe() for m in matches)
        raise DeviceError(f"{flag} {spec!r} is ambiguous: it matches {listed}.",
                          f"pass {flag} with the device number or a longer part of its name.")
    other = [d for d in devices if needle in d.name.lower()]
    wrong_kind = f" ({', '.join(d.describe() for d in other)} has no {kind} channels)" if other else ""
    raise DeviceError(f"No {kind} device matches {flag} {spec!r}{wrong_kind}; {_listing(devices, kind)}.",
                      f"pass {flag} with a name, part of a name or a number from `denoise devices`.")


def check_rate(device: DeviceInfo, kind: Kind, samplerate: int, channels: int,
               from_file: bool = False) -> None:
    """Raise a :class:`DeviceError` naming the device's default rate if it cannot run at ``samplerate``
    (``from_file``: the rate is a WAV input's, so the fix is converting the file)."""
    sd = portaudio()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device.index, samplerate=samplerate, channels=channels, dtype="float32")
    except (sd.PortAudioError, ValueError) as exc:
        default = f"{device.default_samplerate:g}"
        fix = (f"convert the file to {default} Hz (e.g. `sox IN.wav -r {default} OUT.wav`)" if from_file else
               f"omit --samplerate to use its default rate {default} Hz (the model is resampled), or pass a "
               "rate it supports")
        raise DeviceError(f"{kind} device {device.describe()} cannot run at {samplerate} Hz with {channels} "
                          f"channel(s) ({exc}).", fix + ".") from None


class CycleClock:
    """Stamps each callback with the time of the driver cycle it runs in (``perf_counter`` seconds).

    Some host APIs (JACK) run the callbacks of all of a client's streams one after the other on one thread in
    each cycle; stamping the second by its own entry time would make its stream look later by the first
    callback's run time (30-80 us measured, a frame or more). A callback that starts on the thread that
    finished another one less than ``chain_s`` ago therefore gets that callback's cycle time. Streams on their
    own threads (ALSA) are stamped at entry.
    """

    def __init__(self, chain_s: float = 200e-6) -> None:
        self.chain_s = chain_s
        # thread -> (the cycle time of its last callback, when that callback ended)
        self._last: dict[int, tuple[float, float]] = {}
        self._open: dict[int, float] = {}  # thread -> cycle time of the callback now running on it

    def enter(self) -> float:
        now = time.perf_counter()
        thread = threading.get_ident()
        last = self._last.get(thread)
        cycle = last[0] if last is not None and now - last[1] < self.chain_s else now
        self._open[thread] = cycle
        return cycle

    def leave(self) -> None:
        thread = threading.get_ident()
        self._last[thread] = (self._open.get(thread, 0.0), time.perf_counter())


class _Xruns:
    """Counters shared by a stream's callback (writer) and the status/summary readers."""

    def __init__(self) -> None:
        self.flag_underruns = 0  # PortAudio status flags
        self.flag_overruns = 0
        self.callbacks = 0
        self.frames = 0
        # (cycle time of the callback, stream frame index of the block's first sample)
        self.clock: collections.deque[tuple[float, int]] = collections.deque(maxlen=_CLOCK_SAMPLES)

    @property
    def last(self) -> float | None:
        """perf_counter time of the last callback (None before the first)."""
        return self.clock[-1][0] if self.clock else None

    def note(self, cycle: float, status: Any, frames: int) -> None:
        self.clock.append((cycle, self.frames))
        self.callbacks += 1
        self.frames += frames
        if status:
            self.flag_underruns += sum(bool(getattr(status, f)) for f in _UNDER_FLAGS)
            self.flag_overruns += sum(bool(getattr(status, f)) for f in _OVER_FLAGS)

    def origin(self, samplerate: int, skip: int = 0) -> float | None:
        """The stream's clock origin: perf_counter time at which its frame 0 was handed over, estimated as the
        earliest ``t - frame/rate`` over recent callbacks (callbacks can run late, never early), leaving out
        those of its first ``skip`` frames."""
        points = [(t, frame) for t, frame in self.clock if frame >= skip]
        if not points:
            return None
        return min(t - frame / samplerate for t, frame in points)


def _open_error(kind: Kind, device: DeviceInfo, exc: Exception) -> DeviceError:
    return DeviceError(f"Cannot open {kind} device {device.describe()} ({exc}).",
                       "check that it is not in exclusive use, or pick another one from `denoise devices`.")


class _DeviceStream:
    """What an input and an output stream share: the device, the cycle clock, status-flag counts, and
    PortAudio's reported latency of the open ``stream``."""

    stream: Any
    kind: Kind

    def __init__(self, device: DeviceInfo, samplerate: int, clock: CycleClock) -> None:
        self.device = device
        self.clock = clock
        self.samplerate = samplerate
        self.xruns = _Xruns()

    @property
    def latency(self) -> float:
        """PortAudio's latency of this stream in seconds."""
        return float(self.stream.latency)


class Capture(_DeviceStream):
    """An input device feeding a bounded queue of float32 ``[channels, blocksize]`` blocks.

    ``queue_blocks`` bounds the backlog a stalled worker can accumulate; a full queue drops the block (counted
    in ``overruns`` and ``dropped``).
    """

    kind: Kind = "input"

    def __init__(self, device: DeviceInfo, samplerate: int, blocksize: int | None, latency: str,
                 clock: CycleClock, channels: int = 1, queue_blocks: int = 32) -> None:
        sd = portaudio()
        super().__init__(device, samplerate, clock)
        self.channels = channels
        self.blocks: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_blocks)
        self.queue_full = 0
        self.dropped = 0  # frames lost to a full queue
        try:
            self.stream = sd.InputStream(device=device.index, samplerate=samplerate, blocksize=blocksize or 0,
                                         channels=channels, dtype="float32", latency=latency,
                                         callback=self._callback)
        except (sd.PortAudioError, ValueError) as exc:
            raise _open_error(self.kind, device, exc) from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self.xruns.note(self.clock.enter(), status, frames)
        try:
            self.blocks.put_nowait(indata.T.copy())
        except queue.Full:
            self.queue_full += 1
            self.dropped += frames
        self.clock.leave()

    @property
    def underruns(self) -> int:
        return self.xruns.flag_underruns

    @property
    def overruns(self) -> int:
        return self.xruns.flag_overruns + self.queue_full


class SampleFifo:
    """A locked ring buffer of float32 ``[n, channels]`` frames (the layout PortAudio's callback writes)."""

    def __init__(self, channels: int, capacity: int) -> None:
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self._read = 0
        self.level = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._buf.shape[0]

    def write(self, frames: np.ndarray) -> int:
        """Append ``[n, channels]``; returns how many of the oldest frames were dropped to make room."""
        n = frames.shape[0]
        cap = self.capacity
        with self._lock:
            dropped = 0
            if n > cap:
                dropped = n - cap
                frames = frames[-cap:]
                n = cap
            over = self.level + n - cap
            if over > 0:
                self._skip(over)
                dropped += over
            start = (self._read + self.level) % cap
            first = min(n, cap - start)
            self._buf[start:start + first] = frames[:first]
            self._buf[:n - first] = frames[first:]
            self.level += n
            return dropped

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` ``[n, channels]`` with the oldest ``n`` frames; the caller checked ``level >= n``."""
        n = out.shape[0]
        cap = self.capacity
        with self._lock:
            first = min(n, cap - self._read)
            out[:first] = self._buf[self._read:self._read + first]
            out[first:n] = self._buf[:n - first]
            self._read = (self._read + n) % cap
            self.level -= n

    def drop(self, n: int) -> None:
        """Discard the oldest ``n`` frames."""
        with self._lock:
            self._skip(n)

    def _skip(self, n: int) -> None:
        n = min(n, self.level)
        self._read = (self._read + n) % self.capacity
        self.level -= n


def jitter_target(block: int, lag: int) -> int:
    """The smallest jitter buffer that never runs dry while the worker keeps up, in frames: ``block + lag``.

    The output callback needs ``block`` frames while the input block of the same cycle is still being
    processed, and the engine's output trails its input by up to ``lag`` frames more than at its least (its
    ``output_lag(block)``: ``hop - gcd(block, hop)`` for whole hops; counted exactly through the resamplers,
    where it is 0 for 384-frame blocks at 48 kHz and 353 for 353-frame blocks at 44.1 kHz). Starting playback
    with ``block + lag`` frames queued keeps the buffer at or above one block before every read.
    """
    return block + lag


class JitterBuffer:
    """The buffer between the worker and the output callback, and its policy.

    Holds float32 frames of ``channels`` channels. Playback starts once it holds ``target`` frames
    (:func:`jitter_target` of the callback block; silence is played until then). An empty buffer (underrun)
    plays the missing frames plus ``hop`` more as silence and raises ``target`` by ``hop`` (up to
    ``max_target``): overload costs one hop of latency instead of a glitch every block. A level above
    ``target + slack`` (a stall's backlog, or two devices' clocks drifting apart) drops the oldest frames back
    to ``target``.

    ``blocksize`` None means the host picks the callback size (JACK: its period); it is learnt from the first
    callback. ``inserted`` counts the silent frames played in place of audio, ``trimmed`` the frames dropped:
    together they give the exact delay (see :func:`pipeline_delay`). After :meth:`drain` starts, the source
    has ended and an empty buffer is the end of the stream, not an underrun.
    """

    def __init__(self, channels: int, hop: int, lag: Callable[[int], int], max_target: int,
                 blocksize: int | None) -> None:
        self.channels = channels
        self.grow = hop
        self.lag = lag  # the engine's output_lag: how far its output trails its input, by block size
        self.max_target = max_target
        self.blocksize = blocksize
        self.target = 0
        self.slack = 0
        if blocksize is not None:
            self._size_for(blocksize)
        # Room for the largest target, its slack, and a few host buffers of any common size.
        self.fifo = SampleFifo(channels, capacity=2 * max_target + 16384)
        self.primed = False
        self.draining = False
        self.empty = 0  # underrun events
        self.trim_events = 0
        self.inserted = 0
        self.trimmed = 0
        self.lock = threading.Lock()  # guards the counters read together by pipeline_delay
        self._space = threading.Condition()

    def _size_for(self, block: int) -> None:
        self.blocksize = block
        self.target = jitter_target(block, self.lag(block))
        self.max_target = max(self.max_target, self.target)
        # Trim only far above target: two blocks of callback granularity and a hop of engine burstiness.
        self.slack = 2 * block + self.grow

    def write(self, block: np.ndarray) -> None:
        """Queue float32 ``[channels, n]`` (worker thread); a full buffer loses its oldest frames, counted."""
        if block.shape[1] == 0:
            return
        lost = self.fifo.write(np.ascontiguousarray(block.T))
        if lost:
            with self.lock:
                self.trimmed += lost
                self.trim_events += 1

    def wait_for_room(self, frames: int, stop: threading.Event) -> None:
        """Block until ``frames`` more fit without exceeding ``target`` by more than a block (how a file
        source is paced by the output device)."""
        room = self.blocksize or self.grow  # before the first callback the block is not known yet
        with self._space:
            while not stop.is_set() and self.fifo.level + frames > self.target + room:
                self._space.wait(0.05)

    def drain(self, timeout: float) -> None:
        """Play out everything queued, even below target (or give up after ``timeout`` seconds)."""
        self.draining = True
        end = time.monotonic() + timeout
        while self.fifo.level > 0 and time.monotonic() < end:
            time.sleep(0.005)

    def fill(self, outdata: np.ndarray) -> None:
        """The output callback's work: fill ``outdata`` float32 ``[frames, device channels]``."""
        frames = outdata.shape[0]
        if self.blocksize is None:
            self._size_for(frames)
        level = self.fifo.level
        if self.draining:
            take = min(level, frames)
            self._read(outdata, 0, take)
            outdata[take:] = 0.0
            return
        if not self.primed:
            if level < self.target:
                outdata.fill(0.0)
                with self.lock:
                    self.inserted += frames
                return
            self.primed = True
        pad = 0
        if level < frames:
            pad = min(frames, frames - level + self.grow)
            with self.lock:
                self.empty += 1
                self.inserted += pad
                self.target = min(self.max_target, self.target + self.grow)
            outdata[:pad] = 0.0
        self._read(outdata, pad, frames)
        excess = self.fifo.level - self.target
        if excess > self.slack:
            self.fifo.drop(excess)
            with self.lock:
                self.trimmed += excess
                self.trim_events += 1
        with self._space:
            self._space.notify()

    def _read(self, outdata: np.ndarray, start: int, end: int) -> None:
        """Fill ``outdata[start:end]`` from the buffer, mapping its channels onto the device's (mono is copied
        to every device channel, other mismatches are downmixed)."""
        if end <= start:
            return
        if outdata.shape[1] == self.channels:
            self.fifo.read_into(outdata[start:end])
            return
        frames = np.empty((end - start, self.channels), dtype=np.float32)
        self.fifo.read_into(frames)
        outdata[start:end] = frames.mean(axis=1, keepdims=True) if self.channels > 1 else frames


class Playback(_DeviceStream):
    """An output device fed by a :class:`JitterBuffer` of ``channels`` channels; the device gets up to two
    (a mono stream is played on both sides of a stereo device)."""

    kind: Kind = "output"

    def __init__(self, device: DeviceInfo, samplerate: int, latency: str, clock: CycleClock,
                 buffer: JitterBuffer) -> None:
        sd = portaudio()
        super().__init__(device, samplerate, clock)
        self.buffer = buffer
        self.device_channels = min(device.outputs, max(buffer.channels, 2))
        try:
            self.stream = sd.OutputStream(device=device.index, samplerate=samplerate,
                                          blocksize=buffer.blocksize or 0, channels=self.device_channels,
                                          dtype="float32", latency=latency, callback=self._callback)
        except (sd.PortAudioError, ValueError) as exc:
            raise _open_error(self.kind, device, exc) from None

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self.xruns.note(self.clock.enter(), status, frames)
        try:
            self.buffer.fill(outdata)
        finally:
            self.clock.leave()

    @property
    def underruns(self) -> int:
        return self.xruns.flag_underruns + self.buffer.empty

    @property
    def overruns(self) -> int:
        return self.xruns.flag_overruns + self.buffer.trim_events


def phase_offset(capture: Capture, playback: Playback) -> float | None:
    """How many frames after the input stream's frame 0 the output stream's frame 0 was handed to PortAudio
    (float frames; None until both streams have run)."""
    t_in = capture.xruns.origin(capture.samplerate)
    # An output stream's first callbacks can run early, not late: PortAudio's ALSA host fills the device
    # buffer (its reported latency) at once on start, before the device clock runs (measured through
    # PulseAudio: three 353-frame callbacks within 1 ms, then none for 0.7 s, which put the estimate 0.6-1.3 s
    # off). So the output's clock is read from the callbacks after its first buffer and block.
    prefill = math.ceil(playback.latency * playback.samplerate) + (playback.buffer.blocksize or 0)
    t_out = playback.xruns.origin(playback.samplerate, skip=prefill)
    if t_in is None or t_out is None:
        return None
    return (t_out - t_in) * capture.samplerate


def pipeline_delay(capture: Capture, playback: Playback, engine_latency: int) -> int | None:
    """Frames from an input sample's callback to its output sample's callback, beyond what PortAudio reports
    as the two streams' latencies: the phase between the streams, the engine's latency, and the jitter
    buffer's net inserted frames (priming and underrun silence, minus trimmed and dropped frames).

    Output frame ``p`` carries engine output ``m = p - inserted + trimmed``, which is engine input
    ``m - engine_latency``, which is input frame ``k = m - engine_latency + dropped``; so the delay is
    ``offset + p - k = offset + engine_latency + inserted - trimmed - dropped``.

    Only ``offset`` is estimated (:meth:`_Xruns.origin`, rounded to a frame); measured on JACK, the total with
    PortAudio's latencies equals the delay on the server's frame clock to the frame. That holds when each
    callback gets one host buffer (ALSA sizes its periods to the block; on JACK the block is the period). A
    block that differs from the host's buffer makes PortAudio re-block, and the buffering that adds is missing
    from PortAudio 19.6's reported latency and from this: measured on JACK with period 160, block 128 or 256
    played ``block - gcd(block, period)`` frames (96 or 224) later than reported.
    """
    offset = phase_offset(capture, playback)
    if offset is None:
        return None
    buffer = playback.buffer
    with buffer.lock:
        net = buffer.inserted - buffer.trimmed
    return round(offset) + engine_latency + net - capture.dropped
