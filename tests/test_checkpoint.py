"""Checkpoints: self-describing round trip, atomic writes, refusal of NaN weights, disk-full and foreign files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from train_helpers import make_data, tiny_config

from realtime.errors import CheckpointError
from training import checkpoint as ck
from training.distributed import DistInfo
from training.trainer import Trainer


@pytest.fixture()
def trainer(tmp_path: Path) -> Trainer:
    data = make_data(tmp_path)
    tr = Trainer(tiny_config(), data, tmp_path / "run", torch.device("cpu"), DistInfo())
    x = 0.1 * torch.randn(2, 1024)
    tr.train_step(x, 0.5 * x)
    tr.step = 1
    return tr


def test_save_load_rebuilds_the_same_generator(trainer: Trainer, tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    ck.save_checkpoint(path, trainer.checkpoint_dict())
    x = 0.1 * torch.randn(1, 3000)
    served = trainer.g_served  # the weight average when the run keeps one (the lowlat preset does)
    assert served is trainer.g_ema is not None
    served.eval()
    with torch.no_grad():
        want = served(x)
    for source in (path, tmp_path / "run"):  # a .pt file or the run folder
        gen, meta = ck.load_generator(source)
        assert not gen.training
        with torch.no_grad():
            torch.testing.assert_close(gen(x), want, rtol=0, atol=0)
        assert meta["preset"] == "lowlat" and meta["step"] == 1 and "generator" not in meta
        assert meta["config"]["generator"]["channels"] == [4, 8]


def test_best_is_preferred_in_a_run_folder(trainer: Trainer, tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    ck.save_checkpoint(folder / "latest.pt", trainer.checkpoint_dict())
    trainer.step = 7
    ck.save_checkpoint(folder / "best.pt", trainer.checkpoint_dict())
    assert ck.load_generator(tmp_path / "run")[1]["step"] == 7


def test_non_finite_weights_are_refused_and_the_last_good_file_kept(trainer: Trainer, tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    ck.save_checkpoint(path, trainer.checkpoint_dict())
    good = path.read_bytes()
    with torch.no_grad():
        next(trainer.g_core.parameters())[0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        ck.save_checkpoint(path, trainer.checkpoint_dict())
    assert path.read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_names_the_space_needed_and_keeps_the_previous(trainer: Trainer, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    ck.save_checkpoint(path, trainer.checkpoint_dict())
    good = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(CheckpointError) as info:
        ck.save_checkpoint(path, trainer.checkpoint_dict())
    msg = str(info.value)
    assert "disk full" in msg and "MB" in msg and "previous checkpoint is intact" in msg
    assert path.read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_foreign_corrupt_and_missing_files_are_checkpoint_errors(trainer: Trainer, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": trainer.g_core.state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="not a denoise checkpoint"):
        ck.load_checkpoint(foreign)
    good = tmp_path / "good.pt"
    ck.save_checkpoint(good, trainer.checkpoint_dict())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ck.load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no best.pt or latest.pt"):
        ck.load_generator(tmp_path / "empty_run")
    newer = trainer.checkpoint_dict()
    newer["format_version"] = 99
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        ck.load_checkpoint(tmp_path / "newer.pt")


def test_checkpoint_holds_everything_resume_needs(trainer: Trainer, tmp_path: Path) -> None:
    ck.save_checkpoint(tmp_path / "c.pt", trainer.checkpoint_dict())
    c = ck.load_checkpoint(tmp_path / "c.pt")
    for key in ("generator_config", "discriminator", "discriminator_config", "optimizer_g", "optimizer_d",
                "scheduler_g", "scheduler_d", "scaler", "epoch", "rng", "config", "metrics", "denoise_version"):
        assert key in c, key
    assert set(c["rng"]) >= {"python", "numpy", "torch", "data"}
    assert c["rng"]["data"]["position"] == 2  # one step of batch 2
    assert c["optimizer_g"]["state"], "optimizer moments were not saved"


def test_prune_keeps_the_newest_step_files(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        ck.step_path(tmp_path, step).write_bytes(b"x")
    (tmp_path / "latest.pt").write_bytes(b"x")
    (tmp_path / "best.pt").write_bytes(b"x")
    removed = ck.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["step_00000005.pt", "step_00000010.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "latest.pt", "step_00000015.pt",
                                                          "step_00000020.pt"]
