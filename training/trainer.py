"""The GAN trainer: conditional D on (candidate, noisy), each step updates D then G, in the pre-emphasised domain.

One step, with x = pre-emphasis(noisy), y = pre-emphasis(clean), g = G(x):

* D: ``d_loss(D(y, x), D(g.detach(), x))`` (real and fake pairs in one batched call);
* G: ``sum_k weights[k] * term_k`` with ``adv`` = ``g_adv_loss(D(g, x))``, ``l1`` = mean|g - y|, ``stft`` =
  multi-resolution STFT loss, ``feat`` = feature matching on D's hidden layers.

During the first ``loss.adv_warmup`` steps neither the adversarial term nor D runs: G first learns from the
reconstruction terms, at half the cost per step. Validation de-emphasises G's output and scores it against the clean
reference (L1, SI-SDR, and PESQ-WB/STOI when those packages are installed).

Runs as one process or under ``torchrun`` (DistributedDataParallel; rank 0 alone writes checkpoints and logs).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from realtime.dsp import deemphasis as np_deemphasis
from realtime.dsp import preemphasis as np_preemphasis
from realtime.errors import CheckpointError, ConfigError, DenoiseError, DeviceError, ModelError
from training import checkpoint as ckpt_io
from training.config import (
    SPECTRAL_TERMS,
    TrainConfig,
    apply_overrides,
    load_config,
    mix_config,
    preset_defaults,
)
from training.distributed import DistInfo, any_rank, barrier, init_distributed, shutdown
from training.losses import (
    CompressedSpectralLoss,
    FeatureTap,
    MultiResolutionSTFTLoss,
    STOILoss,
    d_loss,
    deemphasis,
    feature_matching,
    g_adv_loss,
    neg_si_sdr,
    preemphasis,
)
from training.models import (
    Discriminator,
    FrameGenerator,
    build_generator,
    config_dict,
    make_config,
    make_discriminator_config,
)
from training.widen import grow_into, growable_difference


class TrainingError(DenoiseError):
    """Training cannot go on (a loss that stays non-finite, nothing to resume, a run folder in use)."""


# --------------------------------------------------------------------------------------------------- data stream
class StreamSampler(Sampler[int]):
    """An endless, seeded, rank-sharded stream of dataset indices that can start at any position.

    Epoch ``e`` is a permutation drawn from ``seed`` and ``e``; rank ``r`` of ``w`` takes every w-th index. The
    position (indices consumed by this rank) is all a checkpoint needs to continue the same stream.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        if size < world:
            raise TrainingError(f"the training set has {size} examples, fewer than the {world} processes.",
                                "use more data or fewer processes.")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start
        self.per_rank = size // world

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.size, generator=g)[self.rank:self.per_rank * self.world:self.world]
            yield from perm[offset:].tolist()
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a size hint
        return 2 ** 62


class Schedule:
    """Learning-rate factor: linear warm-up, then constant or cosine decay to ``min_ratio`` at ``total`` steps."""

    def __init__(self, kind: str, warmup: int, total: int, min_ratio: float) -> None:
        self.kind, self.warmup, self.total, self.min_ratio = kind, warmup, total, min_ratio

    def factor(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "warmup": self.warmup, "total": self.total, "min_ratio": self.min_ratio}


# --------------------------------------------------------------------------------------------------- helpers
def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA raises DeviceError with the fix."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"a CUDA {torch.version.cuda} build"
        raise DeviceError(f"--device cuda was requested, but no CUDA device is usable (torch {torch.__version__} "
                          f"is {build}).", "train with --device cpu (or auto), or install a CUDA build of torch "
                          "on a machine with an NVIDIA GPU and driver.")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if requested == "auto":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {requested!r}.", "use auto, cpu or cuda.")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    """random.setstate needs tuples; a round trip through torch.load may hand back lists."""
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _metric_functions() -> dict[str, Any]:
    """The evaluation metrics that can run here: (ref, est, sr) -> float. pesq/pystoi are optional packages."""
    import importlib.util

    try:
        from evaluation import metrics
    except ImportError:
        return {}
    fns: dict[str, Any] = {"si_sdr": lambda ref, est, sr: metrics.si_sdr(ref, est)}
    if importlib.util.find_spec("pesq") is not None:
        fns["pesq"] = metrics.pesq_wb
    if importlib.util.find_spec("pystoi") is not None:
        fns["stoi"] = metrics.stoi
    return fns


# --------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Owns models, optimisers, data stream, logging and checkpoints of one run (one process of a DDP run)."""

    def __init__(self, cfg: TrainConfig, data: Path, out: Path, device: torch.device, info: DistInfo) -> None:
        self.cfg, self.data, self.out, self.device, self.info = cfg, Path(data), Path(out), device, info
        self.ckpt_dir = self.out / "checkpoints"
        seed_everything(cfg.run.seed + info.rank)

        self.g_core: FrameGenerator = build_generator(cfg.preset, cfg.generator).to(device)
        self.d_core = Discriminator(make_discriminator_config(cfg.discriminator, cfg.preset)).to(device)
        self.g: nn.Module = self.g_core
        self.d: nn.Module = self.d_core
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.g = nn.parallel.DistributedDataParallel(self.g_core, device_ids=ids)
            self.d = nn.parallel.DistributedDataParallel(self.d_core, device_ids=ids)
        # The weight average (optim.ema): validated, checkpointed as "generator" and exported.
        self.g_ema: FrameGenerator | None = None
        if cfg.optim.ema > 0:
            self.g_ema = copy.deepcopy(self.g_core).eval().requires_grad_(False)
        self.tap = FeatureTap(self.d_core)
        self.stft = MultiResolutionSTFTLoss(cfg.loss.stft_resolutions).to(device)
        self.cspec = CompressedSpectralLoss().to(device)
        self.stoi = STOILoss(self.g_core.sample_rate).to(device)

        o = cfg.optim
        self.opt_g = self._optimizer(self.g_core.parameters(), o.lr_g)
        self.opt_d = self._optimizer(self.d_core.parameters(), o.lr_d)
        self.schedule = Schedule(o.scheduler, o.warmup_steps, cfg.run.max_steps, o.min_lr_ratio)

        self.amp_dtype: torch.dtype | None = None
        if device.type == "cuda" and cfg.run.amp != "none":
            self.amp_dtype = torch.bfloat16 if cfg.run.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.step = 0
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.best: float | None = None
        self.noisy_baseline: dict[str, float] | None = None
        self.skipped_total = 0
        self.bad_in_a_row = 0
        self.stop_signal: str | None = None
        self.metric_fns = _metric_functions()
        self.valid_pairs: list[tuple[str, np.ndarray, np.ndarray]] | None = None
        self.epoch_size = 0  # examples per epoch and rank; 0 for an endless iterable dataset
        self.tb: Any = None
        self.progress: _Progress | None = None

    def _optimizer(self, params: Iterator[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        if o.name == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, weight_decay=o.weight_decay)
        return torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    # ----------------------------------------------------------------------------------------------- state
    def checkpoint_dict(self) -> dict[str, Any]:
        return {
            "format": ckpt_io.FORMAT, "format_version": ckpt_io.FORMAT_VERSION, "preset": self.cfg.preset,
            "generator_config": config_dict(self.g_core.cfg), "generator": self.g_served.state_dict(),
            **({"generator_train": self.g_core.state_dict()} if self.g_ema is not None else {}),
            "discriminator_config": config_dict(self.d_core.cfg), "discriminator": self.d_core.state_dict(),
            "optimizer_g": self.opt_g.state_dict(), "optimizer_d": self.opt_d.state_dict(),
            "scheduler_g": {**self.schedule.state_dict(), "base_lr": self.cfg.optim.lr_g, "step": self.step},
            "scheduler_d": {**self.schedule.state_dict(), "base_lr": self.cfg.optim.lr_d, "step": self.step},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step": self.step, "epoch": self.epoch,
            "rng": {**rng_state(), "data": {"seed": self.cfg.run.seed, "position": self.data_position()}},
            "config": self.cfg.to_dict(), "metrics": dict(self.metrics),
            "best": self.best, "noisy_baseline": self.noisy_baseline, "skipped_steps": self.skipped_total,
            "denoise_version": ckpt_io.denoise_version(),
        }

    @property
    def g_served(self) -> FrameGenerator:
        """The generator that is validated, kept as best and exported: the weight average when there is one."""
        return self.g_ema if self.g_ema is not None else self.g_core

    def update_ema(self) -> None:
        """Move the weight average towards G after an update (decay ramps up over the first steps of a run)."""
        if self.g_ema is None:
            return
        decay = min(self.cfg.optim.ema, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            for avg, cur in zip(self.g_ema.parameters(), self.g_core.parameters()):
                avg.lerp_(cur.detach(), 1.0 - decay)

    def sync_ema(self) -> None:
        """Restart the weight average at G's current weights."""
        if self.g_ema is not None:
            self.g_ema.load_state_dict(self.g_core.state_dict())

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.g_core.load_state_dict(ckpt.get("generator_train", ckpt["generator"]))
        if self.g_ema is not None:
            self.g_ema.load_state_dict(ckpt["generator"])  # a run that had no average starts it here
        self.d_core.load_state_dict(ckpt["discriminator"])
        self.opt_g.load_state_dict(ckpt["optimizer_g"])
        self.opt_d.load_state_dict(ckpt["optimizer_d"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.metrics = dict(ckpt.get("metrics") or {})
        self.best = ckpt.get("best")
        self.noisy_baseline = ckpt.get("noisy_baseline")
        self.skipped_total = int(ckpt.get("skipped_steps", 0))
        if self.info.is_main:
            set_rng_state(ckpt["rng"])
        else:  # only rank 0's generator states are saved; the other ranks re-seed from the step
            seed_everything(self.cfg.run.seed + self.info.rank + 7919 * self.step)

    def initialise_from(self, path: Path) -> str:
        """Copy matching weights of another run's checkpoint, or of an exported fp32 ONNX model (its generator
        only: the discriminator starts afresh), into this (new) run; returns a one-line report."""
        if Path(path).suffix.lower() == ".onnx":
            from export.recover import generator_from_onnx  # export imports training: only here, on demand

            try:
                generator, meta = generator_from_onnx(Path(path))
            except ModelError as exc:
                raise TrainingError(f"run.init: {exc}") from None
            file, step = Path(meta["path"]), meta["step"]
            sources = {"generator": generator.state_dict(), "discriminator": {}}
        else:
            file = ckpt_io.resolve(path)
            try:
                ckpt = ckpt_io.load_checkpoint(file)
            except CheckpointError as exc:
                raise TrainingError(f"run.init: {exc}") from None
            meta, step = ckpt, ckpt["step"]
            sources = {"generator": ckpt["generator"], "discriminator": ckpt["discriminator"]}
        if meta["preset"] != self.cfg.preset:
            raise TrainingError(f"run.init: {file} holds a {meta['preset']!r} generator, this run trains "
                                f"{self.cfg.preset!r}.", f"initialise from a {self.cfg.preset} checkpoint or drop --init.")
        parts = []
        own_cfg = config_dict(self.g_core.cfg)
        src_cfg = dict(meta.get("generator_config") or {})
        if src_cfg:  # a key added since the source was written takes its default, as when that model is loaded
            try:
                src_cfg = config_dict(make_config(self.cfg.preset, src_cfg))
            except ConfigError:
                pass  # a config this version cannot read: compare as written (the shape-matching copy decides)
        grow: list[str] = []
        if src_cfg and src_cfg != own_cfg:
            try:
                grow = growable_difference(src_cfg, own_cfg)
            except ValueError:
                grow = []  # other widths changed: copy what still fits, as for any other architecture change
        for name, module in (("generator", self.g_core), ("discriminator", self.d_core)):
            weights = sources[name]
            own = module.state_dict()
            if name == "generator" and grow:
                try:
                    state, grown = grow_into(module, weights)
                except ValueError as exc:
                    raise TrainingError(f"run.init: cannot grow {file}'s generator into this one: {exc}",
                                        "initialise from a checkpoint of the same architecture.") from None
                module.load_state_dict(state)
                parts.append(f"generator {len(own)}/{len(own)} tensors ({len(grown)} grown, function kept: "
                             + ", ".join(f"{k} {src_cfg[k]} -> {own_cfg[k]}" for k in grow) + ")")
                continue
            matched = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
            if name == "generator" and not matched:
                raise TrainingError(f"run.init: no generator weight of {file} fits this run's generator.",
                                    "the architectures differ entirely; start from scratch or pick another checkpoint.")
            module.load_state_dict({**own, **{k: v.to(own[k].device) for k, v in matched.items()}})
            parts.append(f"{name} {len(matched)}/{len(own)} tensors")
        self.sync_ema()
        return f"initialised from {file} (step {step}): " + ", ".join(parts)

    def data_position(self) -> int:
        """Examples of the stream consumed by this rank so far."""
        return self.step * self.cfg.data.batch_size

    def save(self, reason: str) -> None:
        """Write step_N.pt and latest.pt (rank 0), then prune old step files."""
        if not self.info.is_main:
            return
        ckpt = self.checkpoint_dict()
        ckpt_io.save_checkpoint(ckpt_io.step_path(self.ckpt_dir, self.step), ckpt)
        ckpt_io.save_checkpoint(self.ckpt_dir / "latest.pt", ckpt)
        ckpt_io.prune(self.ckpt_dir, self.cfg.run.keep_checkpoints)
        self._note(f"checkpoint at step {self.step} ({reason}) -> {self.ckpt_dir / 'latest.pt'}")

    # ----------------------------------------------------------------------------------------------- data
    def loader(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from training.data import open_training_data

        c = self.cfg
        dataset: Dataset = open_training_data(self.data, "train", c.data.segment, self.g_core.sample_rate,
                                              mix_config(c), seed=c.run.seed)
        kwargs: dict[str, Any] = {}
        if not isinstance(dataset, IterableDataset):
            kwargs["sampler"] = StreamSampler(len(dataset), c.run.seed, self.info.rank, self.info.world,
                                              start=self.data_position())
            self.epoch_size = kwargs["sampler"].per_rank
        workers = c.data.num_workers
        if workers:
            kwargs.update(persistent_workers=True, prefetch_factor=4)
        # A private generator keeps DataLoader's worker seeding from consuming the global torch RNG, so a resumed
        # run draws the same dropout/latent numbers as an uninterrupted one.
        gen = torch.Generator()
        gen.manual_seed(c.run.seed * 7_919 + self.step + 1_000_003 * self.info.rank)
        loader = DataLoader(dataset, batch_size=c.data.batch_size, num_workers=workers, drop_last=True,
                            pin_memory=self.device.type == "cuda", generator=gen,
                            worker_init_fn=_ignore_stop_signals if workers else None, **kwargs)
        return iter(loader)

    # ----------------------------------------------------------------------------------------------- step
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _finite(self, *values: torch.Tensor) -> bool:
        bad = not all(bool(torch.isfinite(v).all()) for v in values)
        return not any_rank(bad, self.info, self.device)

    def _apply(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> bool:
        """Backward, clip, step; False (and no update) when the gradient is non-finite."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            return False
        self.scaler.step(opt)
        return True

    def train_step(self, noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, float] | None:
        """One D then G update on a batch [B, T] of (noisy, clean); returns the loss terms, or None if skipped."""
        c = self.cfg
        w = c.loss.weights
        factor = self.schedule.factor(self.step)
        for opt, lr in ((self.opt_g, c.optim.lr_g), (self.opt_d, c.optim.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        x = preemphasis(noisy.to(self.device, non_blocking=True), c.loss.preemphasis)
        y = preemphasis(clean.to(self.device, non_blocking=True), c.loss.preemphasis)
        use_d = self.step >= c.loss.adv_warmup and (w.get("adv", 0.0) > 0 or w.get("feat", 0.0) > 0)
        logs: dict[str, float] = {}

        with self._autocast():
            fake = self.g(x)
        if use_d:
            with self._autocast():
                scores = self.d(torch.cat([y, fake.detach()]), torch.cat([x, x]))
                real_s, fake_s = scores.float().chunk(2)
                loss_d = d_loss(c.loss.adv, real_s, fake_s)
            if not self._finite(loss_d):
                return self._skip()
            if not self._apply(loss_d, self.opt_d, list(self.d_core.parameters())):
                return self._skip()
            logs["loss_d"] = float(loss_d.detach())
            logs["d_real"] = float(real_s.detach().mean())
            logs["d_fake"] = float(fake_s.detach().mean())

        terms: dict[str, torch.Tensor] = {}
        with self._autocast():
            if w.get("l1", 0.0) > 0:
                terms["l1"] = torch.mean(torch.abs(fake.float() - y))
            spec_est, spec_ref = fake.float(), y
            if c.loss.spectral_deemphasis and any(w.get(k, 0.0) > 0 for k in SPECTRAL_TERMS):
                spec_est, spec_ref = deemphasis(spec_est, c.loss.preemphasis), clean.to(self.device).float()
            if w.get("stft", 0.0) > 0:
                sc, mag = self.stft(spec_est, spec_ref)
                terms["stft"] = sc + mag
                logs["g_stft_sc"], logs["g_stft_mag"] = float(sc.detach()), float(mag.detach())
            if w.get("cspec", 0.0) > 0 or w.get("asym", 0.0) > 0:  # one pair of STFTs for both terms
                cplx, cmag, under = self.cspec.terms(spec_est, spec_ref)
                if w.get("cspec", 0.0) > 0:
                    terms["cspec"] = 0.3 * cplx + 0.7 * cmag
                if w.get("asym", 0.0) > 0:
                    terms["asym"] = under
            if w.get("sisdr", 0.0) > 0:
                terms["sisdr"] = neg_si_sdr(spec_est, spec_ref)
            if w.get("stoi", 0.0) > 0:
                terms["stoi"] = self.stoi(spec_est, spec_ref)
            if use_d:
                # D's weights are frozen for G's update; the unwrapped D keeps DDP's reducer out of this call.
                self.d_core.requires_grad_(False)
                try:
                    if w.get("feat", 0.0) > 0:
                        out, feats = self.tap.collect(lambda: self.d_core(torch.cat([y, fake]), torch.cat([x, x])))
                        fake_s = out.float().chunk(2)[1]
                        halves = [f.chunk(2) for f in feats]
                        terms["feat"] = feature_matching([h[0] for h in halves], [h[1] for h in halves])
                    else:
                        fake_s = self.d_core(fake, x).float()
                    if w.get("adv", 0.0) > 0:
                        terms["adv"] = g_adv_loss(c.loss.adv, fake_s)
                finally:
                    self.d_core.requires_grad_(True)
            total = sum(w[k] * v for k, v in terms.items())
        if not isinstance(total, torch.Tensor) or not self._finite(total):
            return self._skip()
        if not self._apply(total, self.opt_g, list(self.g_core.parameters())):
            return self._skip()
        self.scaler.update()
        self.update_ema()
        logs.update({f"g_{k}": float(v.detach()) for k, v in terms.items()})
        logs["g_total"] = float(total.detach())
        self.bad_in_a_row = 0
        return logs

    def _skip(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        self.skipped_total += 1
        self.bad_in_a_row += 1
        if self.scaler.is_enabled():
            self.scaler.update()
        if self.bad_in_a_row >= self.cfg.run.max_bad_steps:
            raise TrainingError(
                f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient (step {self.step}).",
                "resume from the last checkpoint with a lower learning rate (--set optim.lr_g=1e-4 "
                "--set optim.lr_d=1e-4) or tighter clipping (--set optim.grad_clip=1.0).")

    # ----------------------------------------------------------------------------------------------- validation
    def _load_valid(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        if self.valid_pairs is None:
            from training.data import open_validation_pairs

            self.valid_pairs = open_validation_pairs(self.data, self.cfg.data.valid_split,
                                                     limit=self.cfg.data.valid_pairs)
        return self.valid_pairs

    def _score(self, clean: np.ndarray, est: np.ndarray) -> dict[str, float]:
        sr = self.g_core.sample_rate
        out = {"l1": float(np.mean(np.abs(est - clean)))}
        with warnings.catch_warnings():
            # A metric undefined on one pair (silence, no utterance) is NaN and left out of the mean.
            warnings.simplefilter("ignore")
            for name, fn in self.metric_fns.items():
                out[name] = float(fn(clean, est, sr))
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Score G on the held-out pairs (de-emphasised audio); write samples; returns ``valid_*`` metrics."""
        pairs = self._load_valid()
        coef = self.cfg.loss.preemphasis
        rows, noisy_rows = [], []
        samples_dir = self.out / "samples"
        gen = self.g_served
        gen.eval()
        try:
            for i, (name, noisy, clean) in enumerate(pairs):
                x = torch.from_numpy(np_preemphasis(noisy, coef)).to(self.device)[None]
                est = gen(x)[0].float().cpu().numpy()
                est = np_deemphasis(est, coef)
                rows.append(self._score(clean, est))
                if self.noisy_baseline is None:
                    noisy_rows.append(self._score(clean, noisy))
                if i < self.cfg.run.samples:
                    samples_dir.mkdir(parents=True, exist_ok=True)
                    stem = Path(name).stem
                    sf.write(samples_dir / f"step_{self.step:08d}_{stem}.wav", est, gen.sample_rate)
                    if not (samples_dir / f"noisy_{stem}.wav").exists():
                        sf.write(samples_dir / f"noisy_{stem}.wav", noisy, gen.sample_rate)
                        sf.write(samples_dir / f"clean_{stem}.wav", clean, gen.sample_rate)
                    if self.tb is not None:
                        self.tb.add_audio(f"enhanced/{stem}", np.clip(est, -1, 1), self.step,
                                          sample_rate=gen.sample_rate)
        finally:
            self.g_core.train()  # the average stays in eval mode
        result = {f"valid_{k}": _nanmean([r[k] for r in rows]) for k in rows[0]} if rows else {}
        if noisy_rows:
            self.noisy_baseline = {f"noisy_{k}": _nanmean([r[k] for r in noisy_rows]) for k in noisy_rows[0]}
            result.update({f"valid_{k}": v for k, v in self.noisy_baseline.items()})
        return result

    def _is_better(self, result: dict[str, float]) -> tuple[bool, float]:
        """Best by validation PESQ, or by validation L1 when PESQ is not installed (higher score is better)."""
        pesq = result.get("valid_pesq", math.nan)
        score = pesq if math.isfinite(pesq) else -result["valid_l1"]
        return self.best is None or score > self.best, score

    # ----------------------------------------------------------------------------------------------- logging
    def _note(self, text: str) -> None:
        if not self.info.is_main:
            return
        if self.progress is not None and self.progress.enabled:
            self.progress.print(f"[train] {text}")  # above the live bar instead of through it
        else:
            print(f"[train] {text}", file=sys.stderr, flush=True)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k.replace("valid_", "valid/", 1) if k.startswith("valid_") else f"train/{k}",
                                       v, record["step"])
            self.tb.flush()

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint being resumed (they will be produced again)."""
        log = self.out / "log.jsonl"
        if not log.exists():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, log)

    def _open_tensorboard(self) -> None:
        if not self.info.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._note("tensorboard is not installed: no TensorBoard logs (log.jsonl has everything); "
                       "`pip install tensorboard` to get them.")
            return
        self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)

    # ----------------------------------------------------------------------------------------------- loop
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.Signals(signum).name

    def run(self) -> None:
        c = self.cfg
        handlers = {}
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        self._open_tensorboard()
        self.progress = _Progress(c.run.max_steps, self.step, enabled=self.info.is_main and sys.stderr.isatty())
        try:
            self._loop(self.progress)
        finally:
            self.progress.close()
            self.progress = None
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if self.tb is not None:
                self.tb.close()

    def _loop(self, progress: _Progress) -> None:
        c = self.cfg
        if self.step >= c.run.max_steps:
            self._note(f"the run is already at step {self.step} >= max_steps {c.run.max_steps}; nothing to do "
                       "(raise --max-steps to continue).")
            return
        batches = self.loader()
        audio_per_step = c.data.batch_size * c.data.segment * self.info.world / self.g_core.sample_rate
        acc: dict[str, list[float]] = {}
        t_interval, steps_interval, data_wait = time.perf_counter(), 0, 0.0
        last_saved = self.step
        self._note(f"{c.preset}: G {sum(p.numel() for p in self.g_core.parameters()):,} params, "
                   f"D {sum(p.numel() for p in self.d_core.parameters()):,} params, device {self.device}, "
                   f"{self.info.world} process(es), {torch.get_num_threads()} threads, "
                   f"{c.data.num_workers} data workers, from step {self.step} to {c.run.max_steps}")
        while self.step < c.run.max_steps:
            t_data = time.perf_counter()
            noisy, clean = next(batches)
            data_wait += time.perf_counter() - t_data
            logs = self.train_step(noisy, clean)
            self.step += 1
            steps_interval += 1
            if self.epoch_size:
                self.epoch = self.data_position() // self.epoch_size
            for k, v in (logs or {}).items():
                acc.setdefault(k, []).append(v)
            record: dict[str, Any] = {}
            if self.step % c.run.log_every == 0 or self.step == c.run.max_steps:
                elapsed = time.perf_counter() - t_interval
                record.update({k: float(np.mean(v)) for k, v in acc.items()})
                record.update(epoch=self.epoch, lr_g=self.opt_g.param_groups[0]["lr"],
                              lr_d=self.opt_d.param_groups[0]["lr"],
                              audio_s_per_s=audio_per_step * steps_interval / max(elapsed, 1e-9),
                              data_wait=data_wait / max(elapsed, 1e-9),  # share of time starved for data
                              skipped=self.skipped_total, adversarial=self.step > c.loss.adv_warmup)
                acc, t_interval, steps_interval, data_wait = {}, time.perf_counter(), 0, 0.0
            stop = any_rank(self.stop_signal is not None, self.info, self.device)
            final = stop or self.step == c.run.max_steps
            # A stop request saves at once: validation could outlast the grace period of a SIGTERM.
            if self.step % c.run.validate_every == 0 or self.step == c.run.max_steps:
                if self.info.is_main:
                    t0 = time.perf_counter()
                    result = self.validate()
                    self.metrics = {k[len("valid_"):]: v for k, v in result.items()
                                    if not k.startswith("valid_noisy_")}
                    record.update(result, valid_seconds=time.perf_counter() - t0)
                    better, score = self._is_better(result)
                    if better:
                        self.best = score
                        ckpt_io.save_checkpoint(self.ckpt_dir / "best.pt", self.checkpoint_dict())
                barrier(self.info)
                t_interval = time.perf_counter()  # validation time is not training throughput
            if record:
                record = {"step": self.step, **record}
                self._log(record)
                progress.update(self.step, record)
                if not progress.enabled:
                    self._note(_summary(record))
            if self.step % c.run.checkpoint_every == 0 or final:
                self.save("signal " + self.stop_signal if stop and self.stop_signal else
                          "final" if final else "periodic")
                last_saved = self.step
            if stop:
                self._note(f"stopped by {self.stop_signal or 'another rank'} at step {self.step}; resume with "
                           "--resume.")
                break
        if last_saved != self.step:
            self.save("final")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM (sent to the whole process group by a terminal, ``kill -- -PGID``
    or ``pkill -f``) to the trainer, which finishes the step, saves and then shuts the workers down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _summary(record: dict[str, Any]) -> str:
    keys = ("loss_d", "g_adv", "g_l1", "g_stft", "g_cspec", "g_asym", "g_sisdr", "g_stoi", "g_feat", "audio_s_per_s", "valid_pesq", "valid_stoi",
            "valid_si_sdr", "valid_l1")
    return f"step {record['step']}: " + " ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)


class _Progress:
    """A rich progress bar with the latest losses and throughput; absent when stderr is not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), transient=False)
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=_summary(record).split(": ", 1)[1])

    def print(self, text: str) -> None:
        self._bar.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------------------------------- entry
def build_config(preset: str, config: Path | None, overrides: list[str], max_steps: int | None,
                 checkpoint_every: int | None, device: str | None) -> TrainConfig:
    cfg = load_config(config, preset) if config is not None else preset_defaults(preset)
    extra = list(overrides)
    if max_steps is not None:
        extra.append(f"run.max_steps={max_steps}")
    if checkpoint_every is not None:
        extra.append(f"run.checkpoint_every={checkpoint_every}")
    if device is not None:
        extra.append(f"run.device={device}")
    return apply_overrides(cfg, extra)


def _set_threads(cfg: TrainConfig, info: DistInfo) -> None:
    # Each DataLoader worker mixes on a core of its own; more intra-op threads than the cores left over make
    # every step slower (measured here: 2 threads on 2 busy cores ran 4x slower than 1).
    cores = os.cpu_count() or 1
    threads = cfg.run.threads or max(1, cores // info.world - cfg.data.num_workers)
    torch.set_num_threads(threads)


def train(cfg: TrainConfig, data: Path, out: Path, resume: bool = False) -> Path:
    """Train (or resume) the run in ``out``; returns the path of the latest checkpoint. Works under torchrun."""
    out = Path(out)
    data = Path(data)
    if not data.exists():
        raise TrainingError(f"training data {data} does not exist.", "build a corpus with `denoise data build` or "
                            "give a folder with clean/ and noisy/.")
    device = resolve_device(cfg.run.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device.type == "cuda")
    try:
        _set_threads(cfg, info)
        ckpt_dir = out / "checkpoints"
        existing = sorted(ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []
        resume_from: dict[str, Any] | None = None
        if resume:
            resume_from = _latest_good(ckpt_dir)
        elif existing:
            raise TrainingError(f"{out} already holds checkpoints ({', '.join(p.name for p in existing[:3])}...).",
                                "pass --resume to continue that run, or choose another --out.")
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            cfg.save(out / "config.json")
        barrier(info)
        trainer = Trainer(cfg, data, out, device, info)
        if resume_from is not None:
            trainer.restore(resume_from)
            if info.is_main:
                trainer._truncate_log()
                trainer._note(f"resumed from step {trainer.step}")
        elif cfg.run.init:
            report = trainer.initialise_from(Path(cfg.run.init))
            if info.is_main:
                trainer._note(report)
        if device.type == "cpu" and cfg.run.amp != "none":
            trainer._note(f"run.amp={cfg.run.amp} applies on CUDA only; training in float32 on CPU.")
        trainer.run()
        barrier(info)
        return ckpt_dir / "latest.pt"
    finally:
        shutdown(info)


def _latest_good(ckpt_dir: Path) -> dict[str, Any]:
    """latest.pt, or else the newest readable step_*.pt."""
    candidates = [ckpt_dir / "latest.pt"] + sorted(ckpt_dir.glob("step_*.pt"), reverse=True)
    errors = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            return ckpt_io.load_checkpoint(path)
        except CheckpointError as exc:
            errors.append(str(exc))
    raise TrainingError(f"--resume: no readable checkpoint in {ckpt_dir}{' (' + '; '.join(errors) + ')' if errors else ''}.",
                        "start a new run without --resume, or with another --out.")


def train_cli(data: Path, out: Path, preset: str, config: Path | None, overrides: list[str], max_steps: int | None,
              checkpoint_every: int | None, device: str, resume: bool) -> None:
    """``denoise train``: build the config (the run's own config.json when resuming) and train."""
    out = Path(out)
    if resume:
        run_config = out / "config.json"
        if not run_config.exists():
            raise TrainingError(f"--resume: {run_config} does not exist.", "start the run without --resume first.")
        if config is not None:
            raise TrainingError("--config cannot be combined with --resume (the run's own config.json is used).",
                                "change single values with --set section.key=value.")
        config = run_config
    # The config file's preset wins over --preset (a run's config.json reproduces that run).
    cfg = build_config(preset, config, overrides, max_steps, checkpoint_every, None if device == "auto" and resume
                       else device)
    with warnings.catch_warnings():
        # DataLoader's worker-count advice is noise on 2-core machines where we pick the count on purpose.
        warnings.filterwarnings("ignore", message=".*This DataLoader will create.*")
        train(cfg, data, out, resume=resume)
