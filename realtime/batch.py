"""``denoise enhance``: denoise files and folders, output aligned with the input.

Each file is read at its own rate, converted to the model's rate, enhanced (offline in one pass, or through the
streaming object with ``--streaming``), converted back, and written at the input's rate with the input's length,
channel count and (where the output format allows) subtype. Every output is planned and checked before any work:
an input is never overwritten, an existing output only with ``--overwrite``. Outputs are written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from realtime.dsp import dry_share
from realtime.engine import StreamingEngine, enhance_offline
from realtime.errors import AudioFormatError, DataError, DenoiseError
from realtime.fileio import AUDIO_EXTENSIONS, read_audio_info, write_audio
from realtime.model import FrameModel, load_model
from realtime.resample import ResamplingEngine, resample

# Streaming path: blocks of this many model hops per process() call (the engine loops hops inside).
_STREAM_BLOCK_HOPS = 32


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class FileResult:
    seconds: float  # audio duration
    clipped: int  # output samples that exceeded full scale and were clipped
    total: int  # output samples (all channels)


def _scan(folder: Path, exclude: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted), skipping hidden files and anything under ``exclude``."""
    found = []
    for p in folder.rglob("*"):
        if not p.is_file() or p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or exclude in p.resolve().parents:
            continue
        found.append(p)
    return sorted(found)


def plan_jobs(inputs: list[Path], output: Path) -> list[Job]:
    """Map inputs to outputs: one file in -> ``output`` is a file (or a folder to put it in, if one exists);
    several inputs or a folder -> ``output`` is a folder mirroring the paths below each input folder."""
    if not inputs:
        raise DataError("No input was given.", "pass one or more audio files or folders.")
    for p in inputs:
        if not p.exists():
            raise AudioFormatError(f"Input {p} does not exist.", "check the path.")
    output = Path(output)
    if len(inputs) == 1 and inputs[0].is_file():
        src = inputs[0]
        return [Job(src, output / src.name if output.is_dir() else output)]
    if output.exists() and not output.is_dir():
        raise DataError(f"Output {output} is a file, but {len(inputs)} inputs or a folder were given.",
                        "pass a folder as -o (it is created if missing).")
    out_resolved = output.resolve()
    jobs = []
    for inp in inputs:
        if inp.is_file():
            jobs.append(Job(inp, output / inp.name))
            continue
        if inp.resolve() == out_resolved:
            raise DenoiseError(f"Output folder {output} is the input folder; denoise never overwrites its input.",
                               "choose another -o (e.g. a new folder).")
        files = _scan(inp, out_resolved)
        if not files:
            raise DataError(f"Folder {inp} holds no {'/'.join(AUDIO_EXTENSIONS)} files.",
                            "pass a folder with audio files in it (searched recursively).")
        # With several inputs, each folder gets its own subfolder so same-named files cannot collide.
        root = output if len(inputs) == 1 else output / inp.resolve().name
        jobs.extend(Job(f, root / f.relative_to(inp)) for f in files)
    return jobs


def check_jobs(jobs: list[Job], overwrite: bool) -> None:
    """Refuse, before any work, to overwrite an input (always), an existing output (without --overwrite), or to
    write two inputs to one output."""
    sources = {j.source.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    existing = []
    for j in jobs:
        target = j.target.resolve()
        if target in sources:
            raise DenoiseError(f"Output {j.target} is an input file; denoise never overwrites its input.",
                               "choose another -o (e.g. a new folder).")
        if target in seen:
            raise DataError(f"{seen[target]} and {j.source} would both be written to {j.target}.",
                            "rename one of them or enhance them in separate runs.")
        seen[target] = j.source
        if j.target.exists():
            if j.target.is_dir():
                raise DenoiseError(f"Output {j.target} is a folder.", "choose an output file name.")
            existing.append(j.target)
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        shown = ", ".join(str(p) for p in existing[:3]) + more
        raise DenoiseError(f"{len(existing)} output file(s) already exist: {shown}.",
                           "pass --overwrite to replace them, or choose another -o.")


def enhance_audio(model: FrameModel, audio: np.ndarray, rate: int, streaming: bool = False,
                  atten_lim_db: float | None = None) -> np.ndarray:
    """Denoise float32 ``[C, T]`` at any ``rate``: returns float32 ``[C, T]`` at that rate, aligned with the input.

    Offline: soxr to the model rate, :func:`enhance_offline`, soxr back. Streaming: the same blocks a live stream
    would see, through :class:`StreamingEngine` (wrapped in :class:`ResamplingEngine` at other rates), with the
    reported latency removed.
    """
    channels, length = audio.shape
    inner = model.spec.sample_rate
    if not streaming:
        y = resample(enhance_offline(model, resample(audio, rate, inner), atten_lim_db), inner, rate)
    else:
        engine: StreamingEngine | ResamplingEngine = StreamingEngine(model, channels, atten_lim_db)
        if rate != inner:
            engine = ResamplingEngine(engine, rate)
        block = max(1, round(_STREAM_BLOCK_HOPS * model.spec.hop * rate / inner))
        parts = [engine.process(audio[:, i:i + block]) for i in range(0, length, block)]
        parts.append(engine.flush())
        y = np.concatenate(parts, axis=1)[:, engine.latency_samples:]
    if y.shape[1] < length:  # the rate round trip can come back a sample short
        y = np.pad(y, ((0, 0), (0, length - y.shape[1])))
    return np.ascontiguousarray(y[:, :length])


def enhance_file(model: FrameModel, source: Path, target: Path, mono: bool = False,
                 streaming: bool = False, atten_lim_db: float | None = None) -> FileResult:
    """Read ``source``, denoise it, clip to full scale, and write ``target`` atomically at the input's rate."""
    audio, info = read_audio_info(source)
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    y = enhance_audio(model, audio, info.rate, streaming, atten_lim_db)
    clipped = int(np.count_nonzero(np.abs(y) > 1.0))
    if clipped:
        np.clip(y, -1.0, 1.0, out=y)
    write_audio(target, y, info.rate, subtype=info.subtype)
    return FileResult(seconds=info.frames / info.rate, clipped=clipped, total=y.size)


def enhance_paths(inputs: list[Path], output: Path, model: Path | None = None, device: str = "cpu",
                  threads: int = 0, mono: bool = False, overwrite: bool = False, streaming: bool = False,
                  atten_lim_db: float | None = None) -> None:
    """The ``denoise enhance`` command. Files that cannot be read are reported at the end (the others are still
    written); any failure makes the command exit non-zero."""
    dry_share(atten_lim_db)  # a bad limit is refused before any work
    inputs = [Path(p) for p in inputs]
    jobs = plan_jobs(inputs, Path(output))
    check_jobs(jobs, overwrite)
    frame_model = load_model(model, device=device, threads=threads)
    console = Console(stderr=True)
    failures: list[tuple[Path, DenoiseError]] = []
    audio_seconds = 0.0
    clipped_files = 0
    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]enhance"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.description}"), console=console, transient=True,
                        disable=len(jobs) < 2)
    with progress:
        task = progress.add_task("", total=len(jobs))
        for job in jobs:
            progress.update(task, description=str(job.source))
            try:
                result = enhance_file(frame_model, job.source, job.target, mono=mono, streaming=streaming,
                                      atten_lim_db=atten_lim_db)
            except DenoiseError as exc:
                if len(jobs) == 1:
                    raise
                failures.append((job.source, exc))
                progress.console.print(f"[red]failed[/red] {job.source}: {exc}", soft_wrap=True)
            else:
                audio_seconds += result.seconds
                if result.clipped:
                    clipped_files += 1
                    progress.console.print(
                        f"[yellow]clipped[/yellow] {result.clipped} of {result.total} samples "
                        f"({100.0 * result.clipped / result.total:.3f}%) in {job.target}: the output exceeded full "
                        "scale; lower the input level to avoid it.", soft_wrap=True)
            progress.advance(task)
    elapsed = time.perf_counter() - start
    done = len(jobs) - len(failures)
    where = jobs[0].target if len(jobs) == 1 else output
    console.print(f"enhanced {done} file(s), {audio_seconds:.1f} s of audio in {elapsed:.1f} s -> {where}"
                  + (f" ({clipped_files} clipped)" if clipped_files else ""), soft_wrap=True)
    if failures:
        listed = "; ".join(f"{p}: {e}" for p, e in failures[:3]) + (" ..." if len(failures) > 3 else "")
        raise AudioFormatError(f"{len(failures)} of {len(jobs)} file(s) could not be enhanced ({listed}).",
                               "fix or remove those files and run again (the others were written).")
