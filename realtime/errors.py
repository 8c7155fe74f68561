"""Typed errors raised at the boundary. Each message says what was given, what was expected, and the fix.

The CLI turns any :class:`DenoiseError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class DenoiseError(Exception):
    """Base class of every error a user can fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} Fix: {hint}")


class AudioFormatError(DenoiseError):
    """Audio with the wrong sample rate, channel count, dtype or length, corrupt, empty, or NaN/Inf."""


class ModelError(DenoiseError):
    """A model file that is missing, not ours, or carries inconsistent metadata."""


class DeviceError(DenoiseError):
    """A missing audio device, a missing PortAudio library, or a missing CUDA provider."""


class DeviceStalled(DeviceError):
    """An audio device or sound server that stopped answering: no callbacks, or a PortAudio call (initialise,
    start, stop, close) that did not return in time. A thread is left blocked inside the audio library
    (PortAudio on JACK waits up to 10 minutes per call) and PortAudio's exit handler would block again, so the
    CLI ends the process without exit handlers (``os._exit``) after printing the error. Output files are
    finished before this is raised."""


class DataError(DenoiseError):
    """A corpus or paired folder that cannot be used for training or evaluation."""


class CheckpointError(DenoiseError):
    """A checkpoint that cannot be written (disk full, non-finite weights) or read."""


class ConfigError(DenoiseError):
    """An unknown preset, an unknown config key, or a value of the wrong type."""
