"""A sound card for tests: a private JACK server with its dummy driver and two clients.

    jackd (dummy driver: a timer paces the cycles, no hardware)
      test_mic:capture_1  ->  [program: PortAudio's JACK host API]  ->  test_speakers:playback_1
      (plays what the test asks)     --input test_mic --output test_speakers      (records every cycle)

Every JACK client with audio ports appears to PortAudio as a device named after the client, so the program
under test opens the two by name. Both clients stamp their buffers with the JACK frame clock shared by the
whole graph, so the delay from microphone to speakers is measured in exact frames.

Start the rig before the program imports sounddevice (PortAudio lists devices when it initialises), and run
the program in a subprocess with :attr:`JackRig.env`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from typing import Any, Self

import numpy as np


def missing_live_audio() -> str | None:
    """Why the JACK rig cannot run here, or None when it can."""
    if shutil.which("jackd") is None:
        return "jackd is not installed (apt-get install jackd2)"
    if ctypes.util.find_library("portaudio") is None:
        return "the PortAudio library is not installed (apt-get install libportaudio2)"
    if ctypes.util.find_library("jack") is None:
        return "libjack is not installed (apt-get install jackd2)"
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"the JACK-Client package cannot be imported ({exc}); pip install JACK-Client"
    return None


def _set_port_latency(port: Any, frames: int, capture: bool) -> None:
    """Give a fake device port the latency a real driver's port has (one period). PortAudio 19.6 reads it for
    ``stream.latency``; left unset it computes ``0 - buffer`` in unsigned frames and reports ~268435 s."""
    from jack import _ffi

    lib = ctypes.CDLL(ctypes.util.find_library("jack"))

    class Range(ctypes.Structure):
        _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]

    ptr = ctypes.c_void_p(int(_ffi.cast("uintptr_t", port._ptr)))
    mode = 0 if capture else 1  # JackCaptureLatency, JackPlaybackLatency
    lib.jack_port_set_latency_range(ptr, mode, ctypes.byref(Range(frames, frames)))
    lib.jack_port_set_latency(ptr, ctypes.c_uint32(frames))  # the older call, still read by some versions


TRIES = 3  # runs on fresh servers before a live test blames the program for xruns or a stalled server


class RigStalled(AssertionError):
    """The JACK server's cycles ran late (xruns) while the rig waited: the machine was too busy to run the
    rig itself, which says nothing of the program under test. Callers retry on a fresh server."""


class JackRig:
    """A private jackd (``-n denoise-test-<random>``) plus the ``test_mic`` and ``test_speakers`` clients.

    Use as a context manager. :meth:`play` arms a float32 ``[T]`` signal on the microphone; :meth:`recording`
    returns what reached the speakers on the JACK frame clock and where the signal started in it.
    """

    def __init__(self, samplerate: int = 16000, period: int = 160, realtime: bool = True) -> None:
        self.samplerate = samplerate
        self.period = period
        self.server = f"denoise-test-{uuid.uuid4().hex[:10]}"
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.server, JACK_NO_AUDIO_RESERVATION="1")
        # SCHED_FIFO needs root; it gives far fewer xruns on a busy machine.
        self._realtime = realtime and os.geteuid() == 0
        self._jackd: subprocess.Popen[bytes] | None = None
        self._suspended = False
        # jackd's messages go to a file (closed by close()), never to a pipe: a late client makes it log every
        # cycle (~12 KB/s), so an undrained pipe fills in seconds and jackd then blocks in write().
        self._jackd_log = tempfile.TemporaryFile()  # noqa: SIM115
        self._clients: list[Any] = []
        self._signal = np.zeros(0, dtype=np.float32)
        self._pos = 0
        self._armed = False
        self.start_frame: int | None = None
        self._tap: list[tuple[int, np.ndarray]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        import jack

        # setpriv (util-linux) makes jackd get SIGTERM when the test process dies: a crashed test process
        # would otherwise leave its servers running, and JACK refuses more than a few ("Too many servers
        # already active"), which would fail every later live test on the machine.
        reaper = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        cmd = [*reaper, "jackd", "-n", self.server, "-R" if self._realtime else "--no-realtime",
               "-d", "dummy", "-r", str(self.samplerate), "-p", str(self.period), "-C", "2", "-P", "2"]
        self._jackd = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=self._jackd_log)
        jack.set_error_function(lambda msg: None)  # libjack complains on every try while jackd boots
        deadline = time.monotonic() + 10.0
        while True:
            try:
                mic = jack.Client("test_mic", servername=self.server, no_start_server=True)
                break
            except jack.JackOpenError:
                if self._jackd.poll() is not None:
                    raise RuntimeError(f"jackd exited with {self._jackd.returncode}: "
                                       f"{self.jackd_log()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("jackd did not accept clients within 10 s") from None
                time.sleep(0.05)
        jack.set_error_function()
        speakers = jack.Client("test_speakers", servername=self.server, no_start_server=True)
        self._clients = [mic, speakers]
        self._mic_port = mic.outports.register("capture_1")
        self._spk_port = speakers.inports.register("playback_1")
        _set_port_latency(self._mic_port, self.period, capture=True)
        _set_port_latency(self._spk_port, self.period, capture=False)
        mic.set_process_callback(self._feed)
        speakers.set_process_callback(self._record)
        self._mic, self._speakers = mic, speakers
        mic.activate()
        speakers.activate()
        self._wait_healthy()

    def _wait_healthy(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until the server has run ``quiet`` seconds of cycles with no xrun; :class:`RigStalled` if that
        does not happen within ``timeout`` (on a busy machine a fresh server can run late from its start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark, cycles = self.log_mark(), len(self._tap)
            time.sleep(quiet)
            if self.xruns_between(mark, self.log_mark()) == 0 and len(self._tap) - cycles >= 0.8 * quiet * (
                    self.samplerate / self.period):
                return
        raise RigStalled(f"the JACK server ran late (xruns) for {timeout} s after it started; jackd's log:\n"
                         f"{self.jackd_log()}")

    def _feed(self, frames: int) -> None:
        buf = self._mic_port.get_array()
        if self._armed and self._pos < len(self._signal):
            if self.start_frame is None:
                self.start_frame = self._mic.last_frame_time
            k = min(frames, len(self._signal) - self._pos)
            buf[:k] = self._signal[self._pos:self._pos + k]
            buf[k:] = 0.0
            self._pos += k
        else:
            buf.fill(0.0)

    def _record(self, frames: int) -> None:
        self._tap.append((self._speakers.last_frame_time, self._spk_port.get_array().copy()))

    # -- what tests call -------------------------------------------------------------------------------------
    def wait_connected(self, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
        """Wait until something reads the microphone and feeds the speakers: the program's streams run.
        Fails with :class:`RigStalled` instead of AssertionError when the server ran late meanwhile."""
        mark = self.log_mark()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self._mic.get_all_connections(self._mic_port)
                    and self._speakers.get_all_connections(self._spk_port)):
                return
            if proc.poll() is not None:
                out, err = proc.communicate()
                # The program gives up on a server that does not run its cycles (--stall-timeout); when the
                # server logged xruns meanwhile, that was the machine.
                xruns = self.xruns_between(mark, self.log_mark())
                raise (RigStalled if xruns else AssertionError)(
                    f"program exited with {proc.returncode} before connecting ({xruns} xrun reports from "
                    f"jackd meanwhile):\n{out}\n{err}")
            time.sleep(0.02)
        # Where is it stuck? With ``-X faulthandler`` SIGABRT makes Python print every thread's stack first.
        state = self.connections()
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        xruns = self.xruns_between(mark, self.log_mark())
        raise (RigStalled if xruns else AssertionError)(
            f"program did not connect to test_mic/test_speakers within {timeout} s "
            f"({xruns} xrun reports from jackd meanwhile; connections then: {state}); its output:\n{out}\n"
            f"{err}\njackd's log:\n{self.jackd_log()}")

    def suspend(self) -> None:
        """Freeze the JACK server (SIGSTOP): no more cycles, and every call to it blocks, as with a hung
        sound server. :meth:`resume` undoes it; :meth:`close` resumes it first."""
        if self._jackd is not None and self._jackd.poll() is None:
            os.kill(self._jackd.pid, signal.SIGSTOP)
            self._suspended = True

    def resume(self) -> None:
        if self._suspended and self._jackd is not None and self._jackd.poll() is None:
            os.kill(self._jackd.pid, signal.SIGCONT)
        self._suspended = False

    def connections(self) -> dict[str, list[str]]:
        return {p.name: [q.name for q in self._mic.get_all_connections(p)]
                for p in (self._mic_port, self._spk_port)}

    def play(self, signal: np.ndarray) -> int:
        """Start playing ``signal`` float32 ``[T]`` on the microphone at the next cycle; returns a mark for
        :meth:`xruns_between` (to tell which xruns happened while it played)."""
        self._signal = np.ascontiguousarray(signal, dtype=np.float32)
        self._pos = 0
        self.start_frame = None
        mark = self.log_mark()
        self._armed = True
        return mark

    def log_mark(self) -> int:
        """Where jackd's log ends now, for :meth:`xruns_between`."""
        return os.fstat(self._jackd_log.fileno()).st_size

    def xruns_between(self, start: int, end: int) -> int:
        """How many xrun reports jackd logged between two marks (late cycles of the driver or of any client).
        Read from jackd's log rather than through a JACK xrun callback, which would run Python (take the GIL
        from the real-time process callbacks) in an ordinary-priority thread on every xrun: more work for the
        rig exactly when it is already late."""
        self._jackd_log.flush()
        self._jackd_log.seek(start)
        return sum(b"XRun" in line for line in self._jackd_log.read(max(0, end - start)).splitlines())

    def wait_played(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self._pos < len(self._signal):
            if time.monotonic() > deadline:
                raise AssertionError("the JACK server stopped running cycles while the signal played")
            time.sleep(0.02)

    def recording(self) -> tuple[np.ndarray, int]:
        """Everything the speakers received, float32 ``[N]`` indexed by JACK frame from the first recorded
        cycle, and the index in it at which the signal started on the microphone (0 if it never did)."""
        tap = list(self._tap)
        if not tap:
            raise AssertionError("the speakers recorded nothing: the JACK server ran no cycle")
        first = tap[0][0]
        y = np.zeros(tap[-1][0] - first + len(tap[-1][1]), dtype=np.float32)
        for frame, block in tap:
            y[frame - first:frame - first + len(block)] = block
        return y, 0 if self.start_frame is None else self.start_frame - first

    def close(self) -> None:
        """Stop the clients and the server; safe to call again."""
        import jack

        self.resume()  # a frozen server would block the clients' deactivation
        for client in self._clients:
            try:
                client.deactivate()
                client.close()
            except jack.JackError:  # the server may already be gone
                continue
        self._clients = []
        if self._jackd is not None and self._jackd.poll() is None:
            self._jackd.terminate()
            try:
                self._jackd.wait(5)
            except subprocess.TimeoutExpired:
                self._jackd.kill()
                self._jackd.wait()
        self._jackd_log.close()

    def jackd_log(self, tail: int = 2000) -> str:
        """The last ``tail`` characters jackd printed (xruns, client timeouts), for failure messages."""
        if self._jackd_log.closed:
            return "(the rig is closed)"
        self._jackd_log.flush()
        self._jackd_log.seek(0)
        return self._jackd_log.read().decode(errors="replace")[-tail:].strip()
