"""Self-describing training checkpoints: written atomically, refused when non-finite, rebuilt without a config file.

Format (``torch.save`` of a dict, loadable with ``weights_only=True``)::

    {"format": "denoise-checkpoint", "format_version": 1, "preset": str,
     "generator_config": dict, "generator": state_dict, "discriminator_config": dict, "discriminator": state_dict,
     "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d", "scaler": dict | None,
     "step": int, "epoch": int, "rng": dict, "config": dict, "metrics": dict, "denoise_version": str}

A run folder holds ``checkpoints/latest.pt``, ``checkpoints/best.pt`` and pruned ``checkpoints/step_XXXXXXXX.pt``.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from realtime.errors import CheckpointError
from training.models import FrameGenerator, build_generator

FORMAT = "denoise-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "preset", "generator_config", "generator", "step")
_STATE_KEYS = ("generator", "generator_train", "discriminator", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d", "scaler",
               "rng")
_STEP_RE = re.compile(r"^step_(\d{8,})\.pt$")


def denoise_version() -> str:
    try:
        from importlib.metadata import version

        return version("denoise")
    except Exception:  # noqa: BLE001 - not installed as a distribution (e.g. running from a source tree)
        return "unknown"


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of floating-point tensors in a state dict that hold NaN or Inf."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> int:
    """Write ``checkpoint`` to ``path`` atomically; returns the bytes written.

    The file is serialised in memory, written to a temporary file in the same folder, fsynced and renamed over
    ``path``, so a crash or a full disk leaves the previous file intact. Raises :class:`CheckpointError` when a
    weight is NaN/Inf (the last good checkpoint is kept) or the disk is full.
    """
    if checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"refusing to save a dict whose format is {checkpoint.get('format')!r}.",
                              f"build it with format={FORMAT!r} (see training/checkpoint.py).")
    bad = [name for key in ("generator", "generator_train", "discriminator")
           for name in non_finite_tensors(checkpoint.get(key, {}))]
    if bad:
        raise CheckpointError(
            f"refusing to write {path.name}: non-finite weights in {bad[:5]}{' ...' if len(bad) > 5 else ''} "
            f"at step {checkpoint.get('step')}.",
            "the previous checkpoint is intact; resume from it with a lower learning rate (--set optim.lr_g=...) "
            "or gradient clipping (--set optim.grad_clip=1.0).")
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    data = buf.getbuffer()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise CheckpointError(
                f"disk full while writing {path}: it needs {len(data) / 1e6:.1f} MB, {free / 1e6:.1f} MB are free. "
                f"The previous checkpoint is intact.",
                f"free at least {len(data) / 1e6:.1f} MB in {path.parent} (or lower run.keep_checkpoints) and "
                "resume with --resume.") from None
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}.",
                              "check that the run folder is writable; the previous checkpoint is intact.") from None
    _fsync_dir(path.parent)
    return len(data)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX: the directory entry lives in the folder's inode)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is already synced
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; a missing, foreign, corrupt or newer-format file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.", "give a .pt file written by `denoise train` or "
                              "its run folder.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated zips and foreign pickles
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]}).",
                              "use a .pt file written by `denoise train`; if the run was interrupted, use "
                              "checkpoints/latest.pt or an older step_*.pt.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a denoise checkpoint (no format={FORMAT!r} marker).",
                              "use a .pt file written by `denoise train`.")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {ckpt.get('format_version')}, this denoise "
                              f"reads version {FORMAT_VERSION}.", "use the denoise version that wrote it.")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}.", "the file is damaged; use another checkpoint.")
    return ckpt


def resolve(path: Path) -> Path:
    """A .pt file as is; a run folder (or its checkpoints/ folder) -> best.pt, else latest.pt."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        for name in ("best.pt", "latest.pt"):
            if (folder / name).is_file():
                return folder / name
        raise CheckpointError(f"{path} holds no best.pt or latest.pt.", "train first with `denoise train --out "
                              f"{path}` or give a .pt file.")
    return path


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[FrameGenerator, dict[str, Any]]:
    """Rebuild the generator a checkpoint (or run folder) describes; returns (generator in eval mode, metadata).

    The metadata is the checkpoint dict without the weights, optimiser, scheduler and RNG states.
    """
    file = resolve(path)
    ckpt = load_checkpoint(file)
    gen = build_generator(ckpt["preset"], ckpt["generator_config"])
    try:
        gen.load_state_dict(ckpt["generator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{file}: generator weights do not match its own config ({str(exc)[:300]}).",
                              "the file is damaged or was edited; use another checkpoint.") from None
    gen.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in _STATE_KEYS}
    meta["path"] = str(file)
    return gen, meta


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.pt"


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest step_*.pt files (latest.pt and best.pt are separate files)."""
    steps = sorted((int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_RE.match(p.name)))
    removed = [p for _, p in steps[:-keep]] if keep > 0 else [p for _, p in steps]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
