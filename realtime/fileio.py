"""Reading and writing audio files (soundfile) with errors that name the file and the fix.

Audio is float32 ``[C, T]`` (channels first) everywhere in denoise. Writes are atomic: a temporary file in the
destination folder, then ``os.replace``, so an interrupted or failed write never leaves a truncated output and
never touches an existing file.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime.errors import AudioFormatError, DenoiseError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")  # what folder scans pick up
_CONVERT = "convert it to WAV/FLAC/OGG (e.g. `ffmpeg -i INPUT output.wav`)"


@dataclass(frozen=True)
class AudioInfo:
    rate: int
    channels: int
    frames: int
    format: str  # soundfile major format, e.g. "WAV"
    subtype: str  # e.g. "PCM_16"


def _format_for(path: Path) -> str:
    """soundfile major format from the extension (``.wav`` -> ``WAV``); AudioFormatError if unsupported."""
    fmt = path.suffix[1:].upper()
    if fmt == "OGA":
        fmt = "OGG"
    if not fmt or fmt not in sf.available_formats():
        raise AudioFormatError(
            f"Cannot write {path}: the extension {path.suffix or '(none)'!r} names no audio format soundfile knows.",
            "name the output .wav, .flac or .ogg.",
        )
    return fmt


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``[C, T]`` and its sample rate. Missing, unreadable, empty or non-finite audio
    raises :class:`AudioFormatError` naming the file."""
    audio, info = read_audio_info(path)
    return audio, info.rate


def read_audio_info(path: Path) -> tuple[np.ndarray, AudioInfo]:
    """Like :func:`read_audio`, with the file's format and subtype (to write the output alike)."""
    path = Path(path)
    if not path.exists():
        raise AudioFormatError(f"Audio file {path} does not exist.", "check the path.")
    if not path.is_file():
        raise AudioFormatError(f"{path} is not a file.", "pass an audio file (or a folder where folders are allowed).")
    if path.stat().st_size == 0:
        raise AudioFormatError(f"Audio file {path} is empty (0 bytes).", "re-export or re-record it.")
    try:
        with sf.SoundFile(str(path)) as f:
            info = AudioInfo(rate=int(f.samplerate), channels=int(f.channels), frames=int(f.frames),
                             format=str(f.format), subtype=str(f.subtype))
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFormatError(f"{path} cannot be decoded as audio ({exc}).", _CONVERT) from exc
    if data.shape[0] == 0:
        raise AudioFormatError(f"Audio file {path} contains no samples.", "pass a file with audio in it.")
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise AudioFormatError(
            f"Audio file {path} contains {bad} non-finite samples (NaN/Inf).",
            "re-export it from its source, or replace the NaN/Inf samples (e.g. with 0) before denoising.",
        )
    return np.ascontiguousarray(data.T), info


def write_audio(path: Path, audio: np.ndarray, rate: int, subtype: str | None = None) -> None:
    """Write float32 ``[C, T]`` atomically; the format comes from the extension, ``subtype`` is used when that
    format accepts it (else the format's default)."""
    path = Path(path)
    fmt = _format_for(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise AudioFormatError(f"Audio to write has shape {audio.shape}, expected [channels, samples].",
                               "pass channels-first audio.")
    if subtype is not None and not sf.check_format(fmt, subtype):
        subtype = None
    # A hidden sibling of the destination (same filesystem, so os.replace is atomic), created with normal permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(tmp), audio.T, int(rate), subtype=subtype, format=fmt)
        os.replace(tmp, path)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise DenoiseError(f"Cannot write {path} ({exc}).",
                           "check that the folder is writable and has free space, or pick another format.") from exc
    finally:
        tmp.unlink(missing_ok=True)
