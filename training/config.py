"""Training configuration: one dataclass per section, preset defaults, JSON files and ``--set`` overrides.

A run's complete configuration is written to ``RUN_DIR/config.json``; ``denoise train --config RUN_DIR/config.json``
reproduces it. Precedence, lowest first: preset defaults, the ``--config`` file, ``--set section.key=value``, then the
dedicated CLI flags (``--max-steps``, ``--checkpoint-every``, ``--device``).

Preset choices
--------------
``lowlat``  (the shipped live model) Adam with decoupled weight decay, lr_g 5e-4 / lr_d 2e-4: the generator is small
            and fed by a multi-resolution STFT loss that gives it a dense, well-scaled gradient, so it tolerates a
            higher rate than the discriminator, which is kept slower so it does not overpower G early on. Betas
            (0.8, 0.99) as in HiFi-GAN-style waveform GANs. Cosine decay to 10% after a 200-step linear warm-up.
            The adversarial term is off for the first 6000 steps (D is not trained either, saving compute) so G
            first learns a sensible mask by regression. Segments of 1 s (a multiple of the 128-sample hop).
            Beside the conditional L1 (weight 100, pre-emphasised domain, as in SEGAN) the generator is fed
            spectral terms computed on the *de-emphasised* audio: compressed complex/magnitude spectra (``cspec``,
            weight 400) and SI-SDR (``sisdr``, weight 0.5), the terms GTCRN-style recipes use; the per-band GRU
            (``generator.band_gru=64``), two past frames of context and filter taps (``generator.past_frames=2``)
            and a 0.999 weight average (``optim.ema``) are on. Each of these was
            measured against the previous recipe on the validation split (model card, "How the recipe was found").
``segan``   The published recipe: RMSprop at 2e-4 for both nets, least-squares GAN, L1 weight 100, no STFT loss,
            segments of 16384 samples. The paper's batch of 400 is out of reach on CPU; 16 is the default.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from realtime.errors import ConfigError

ADV_LOSSES = ("lsgan", "hinge", "nonsat")
OPTIMIZERS = ("adam", "rmsprop")
SCHEDULERS = ("constant", "cosine")
AMP_MODES = ("none", "bf16", "fp16")
LOSS_TERMS = ("adv", "l1", "stft", "cspec", "asym", "sisdr", "stoi", "feat")
# the terms ``loss.spectral_deemphasis`` moves to the de-emphasised domain (the rest stay pre-emphasised)
SPECTRAL_TERMS = ("stft", "cspec", "asym", "sisdr", "stoi")


@dataclass
class LossConfig:
    """Adversarial loss type and the weight of every generator loss term (a named mapping, logged term by term).

    adv: adversarial objective, one of ``lsgan`` (least squares), ``hinge``, ``nonsat`` (non-saturating BCE).
    weights: ``adv`` (adversarial), ``l1`` (conditional L1 on the waveform), ``stft`` (multi-resolution STFT:
        spectral convergence + log magnitude), ``cspec`` (MSE of power-0.3 compressed complex and magnitude
        spectra), ``asym`` (the same compressed magnitude error counted only where the estimate falls below the clean
        speech: a speech-distortion penalty that trades residual noise for intelligibility at low SNR), ``sisdr``
        (negative SI-SDR in dB), ``stoi`` (1 − a differentiable STOI, see
        :class:`training.losses.STOILoss`), ``feat`` (L1 feature matching on D's hidden layers).
    stft_resolutions: (fft size, hop, window length) of each STFT resolution.
    adv_warmup: steps with neither adversarial loss nor discriminator updates at the start of a run.
    preemphasis: coefficient applied before G and D; the L1 and adversarial terms are computed in the
        pre-emphasised domain (as in SEGAN).
    spectral_deemphasis: compute the ``stft``, ``cspec``, ``asym``, ``sisdr`` and ``stoi`` terms on de-emphasised signals (the audio the listener
        hears). Pre-emphasis at 0.95 weights 300 Hz 21 dB below 4 kHz, so in its domain the spectral losses
        neglect the band that carries most speech energy (and most of PESQ and STOI).
    """

    adv: str = "lsgan"
    weights: dict[str, float] = field(default_factory=lambda: {"adv": 1.0, "l1": 100.0, "stft": 1.0, "feat": 0.0})
    stft_resolutions: list[list[int]] = field(default_factory=lambda: [[512, 128, 512], [256, 64, 256],
                                                                       [128, 32, 128]])
    # A regression warm-up before the discriminator starts: on a CPU budget, starting D at step 500 pulled
    # validation STOI/SI-SDR below the noisy input, while 6000 steps of L1 + STFT first did not (model card).
    adv_warmup: int = 6000
    preemphasis: float = 0.95
    spectral_deemphasis: bool = False


@dataclass
class OptimConfig:
    """Optimisers of G and D. ``weight_decay`` is decoupled (AdamW); ``grad_clip`` 0 disables clipping.

    scheduler: ``constant`` or ``cosine`` (decay to ``min_lr_ratio`` of the rate at ``run.max_steps``), both after
    ``warmup_steps`` of linear warm-up.
    ema: decay of an exponential moving average of G's weights (0 disables). The average is what validation
        scores, what ``best.pt`` keeps and what ``denoise export`` ships (checkpoint key ``generator``; the raw
        weights go on training from ``generator_train``). On small batches single-step weights swing between
        validations by 0.1 PESQ; the average does not.
    """

    name: str = "adam"
    lr_g: float = 5e-4
    lr_d: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    scheduler: str = "cosine"
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    ema: float = 0.0


@dataclass
class DataConfig:
    """segment: training example length in samples (a multiple of the generator's hop).

    num_workers: DataLoader worker processes (mixing runs there, in parallel with the model).
    valid_pairs: validation pairs scored at each validation (the first N of the held-out split).
    mix: :class:`training.data.MixConfig` values for dynamic mixing (ignored for paired folders).
    """

    segment: int = 16000
    batch_size: int = 8
    num_workers: int = 1
    valid_split: str = "valid"
    valid_pairs: int = 16
    mix: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """max_steps: total optimisation steps (also the horizon of the cosine schedule).

    threads: torch intra-op threads per process (0: the process's share of CPU cores less the DataLoader workers,
        at least 1).
    amp: autocast on CUDA (``bf16`` or ``fp16`` with a gradient scaler); ignored on CPU.
    max_bad_steps: consecutive steps with a non-finite loss or gradient before the run stops.
    samples: enhanced validation examples written as WAV (and TensorBoard audio) at each validation.
    init: a checkpoint (or run folder) whose weights start a *new* run (fine-tuning): every generator and
        discriminator tensor whose name and shape match is copied, new modules keep their initialisation; steps,
        optimiser and schedule start afresh. Ignored when resuming (the run's own checkpoint wins).
    """

    max_steps: int = 200_000
    checkpoint_every: int = 500
    validate_every: int = 500
    log_every: int = 25
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    threads: int = 0
    max_bad_steps: int = 20
    samples: int = 3
    init: str = ""


@dataclass
class TrainConfig:
    preset: str = "lowlat"
    generator: dict[str, Any] = field(default_factory=dict)  # training.models make_config values
    discriminator: dict[str, Any] = field(default_factory=dict)  # make_discriminator_config values
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def save(self, path: Path) -> None:
        """Write the config as JSON atomically (temp file + rename)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


SECTIONS: dict[str, type] = {"loss": LossConfig, "optim": OptimConfig, "data": DataConfig, "run": RunConfig}
FREE_SECTIONS = ("generator", "discriminator", "loss.weights", "data.mix")


def preset_defaults(preset: str) -> TrainConfig:
    """The default config of ``preset`` (see the module docstring for the reasoning)."""
    if preset == "lowlat":
        return TrainConfig(
            preset="lowlat",
            generator={"band_gru": 64, "past_frames": 2},
            loss=LossConfig(weights={"adv": 1.0, "l1": 100.0, "stft": 1.0, "cspec": 400.0, "sisdr": 0.5, "feat": 0.0},
                            spectral_deemphasis=True),
            optim=OptimConfig(ema=0.999),
        )
    if preset == "segan":
        return TrainConfig(
            preset="segan",
            loss=LossConfig(weights={"adv": 1.0, "l1": 100.0, "stft": 0.0, "feat": 0.0}, adv_warmup=0),
            optim=OptimConfig(name="rmsprop", lr_g=2e-4, lr_d=2e-4, weight_decay=0.0, grad_clip=0.0,
                              scheduler="constant", warmup_steps=0),
            data=DataConfig(segment=16384, batch_size=16),
        )
    raise ConfigError(f"Unknown preset {preset!r}.", "use 'lowlat' (live, default) or 'segan'.")


def _merge_section(obj: Any, values: dict[str, Any], where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"Config section {where!r} must be a JSON object, got {type(values).__name__}.",
                          "write it as {\"key\": value, ...}.")
    names = {f.name: f for f in fields(obj)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in config section {where!r}.", f"valid keys: {sorted(names)}.")
    for key, value in values.items():
        current = getattr(obj, key)
        if is_dataclass(current):
            _merge_section(current, value, f"{where}.{key}")
        elif isinstance(current, dict) and isinstance(value, dict) and f"{where}.{key}" in FREE_SECTIONS:
            current.update(value)
        else:
            if isinstance(current, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # --set parses values as JSON: a numeric-looking path or name stays text
            setattr(obj, key, value)


def from_dict(values: dict[str, Any], preset: str = "lowlat") -> TrainConfig:
    """Preset defaults (``values["preset"]`` wins over ``preset``) overlaid with ``values``, validated."""
    if not isinstance(values, dict):
        raise ConfigError("A training config must be a JSON object.", "see a run's config.json for the layout.")
    cfg = preset_defaults(values.get("preset", preset))
    top = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - top)
    if unknown:
        raise ConfigError(f"Unknown config section(s) {unknown}.", f"valid sections: {sorted(top)}.")
    for key, value in values.items():
        if key == "preset":
            continue
        if key in ("generator", "discriminator"):
            if not isinstance(value, dict):
                raise ConfigError(f"Config section {key!r} must be a JSON object.", "write it as {\"key\": value}.")
            getattr(cfg, key).update(value)
        else:
            _merge_section(getattr(cfg, key), value, key)
    validate(cfg)
    # Spell out every architecture value so config.json does not depend on the defaults of this version.
    from training.models import config_dict, make_config, make_discriminator_config

    cfg.generator = config_dict(make_config(cfg.preset, cfg.generator))
    cfg.discriminator = config_dict(make_discriminator_config(cfg.discriminator, cfg.preset))
    return cfg


def load_config(path: Path, preset: str = "lowlat") -> TrainConfig:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.", "give an existing JSON file, e.g. a run's "
                          "config.json.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid JSON ({exc}).", "fix the JSON syntax.") from None
    return from_dict(values, preset)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word such as lsgan or cpu


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` overrides (value parsed as JSON when possible); returns a validated copy."""
    values = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} has no '='.", "write --set section.key=value, e.g. --set optim.lr_g=2e-4.")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise ConfigError(f"--set {item!r} names no section.",
                              f"write section.key=value with a section among {sorted(values)}.")
        node = values
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"--set {item!r}: unknown section {'.'.join(parts[:depth + 1])!r}.",
                                  f"valid keys there: {valid}.")
            node = node[part]
        leaf = parts[-1]
        path = ".".join(parts[:-1])
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {path!r} is a value, not a section.", "set it directly.")
        if leaf not in node and path not in FREE_SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown key {leaf!r} in section {path!r}.",
                              f"valid keys: {sorted(node)}.")
        node[leaf] = _parse_value(raw)
    return from_dict(values, cfg.preset)


def validate(cfg: TrainConfig) -> None:
    """Check values that would otherwise fail deep inside training; raise :class:`ConfigError` with the fix."""
    from training.data import MixConfig
    from training.models import build_generator, make_discriminator_config

    gen = build_generator(cfg.preset, cfg.generator)  # raises ConfigError on unknown generator keys
    make_discriminator_config(cfg.discriminator, cfg.preset)
    loss, optim, data, run = cfg.loss, cfg.optim, cfg.data, cfg.run
    if loss.adv not in ADV_LOSSES:
        raise ConfigError(f"loss.adv = {loss.adv!r} is unknown.", f"use one of {list(ADV_LOSSES)}.")
    unknown = sorted(set(loss.weights) - set(LOSS_TERMS))
    if unknown:
        raise ConfigError(f"loss.weights has unknown term(s) {unknown}.", f"valid terms: {list(LOSS_TERMS)}.")
    for term, w in loss.weights.items():
        if not isinstance(w, (int, float)) or w < 0:
            raise ConfigError(f"loss.weights.{term} = {w!r} is not a non-negative number.", "give e.g. 1.0.")
    if not any(loss.weights.get(term, 0.0) > 0 for term in LOSS_TERMS):
        raise ConfigError("every loss weight is 0: the generator would not learn.", "give e.g. loss.weights.l1=100.")
    for res in loss.stft_resolutions:
        if not (isinstance(res, list) and len(res) == 3 and res[2] <= res[0] and res[1] > 0):
            raise ConfigError(f"loss.stft_resolutions entry {res!r} is not [fft, hop, win] with win <= fft.",
                              "give e.g. [[512, 128, 512], [256, 64, 256]].")
    if not 0.0 <= loss.preemphasis < 1.0:
        raise ConfigError(f"loss.preemphasis = {loss.preemphasis} is outside [0, 1).", "use e.g. 0.95 (0 disables).")
    if optim.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name = {optim.name!r} is unknown.", f"use one of {list(OPTIMIZERS)}.")
    if optim.scheduler not in SCHEDULERS:
        raise ConfigError(f"optim.scheduler = {optim.scheduler!r} is unknown.", f"use one of {list(SCHEDULERS)}.")
    if len(optim.betas) != 2:
        raise ConfigError(f"optim.betas = {optim.betas!r} is not two numbers.", "give e.g. [0.8, 0.99].")
    if not 0.0 <= optim.ema < 1.0:
        raise ConfigError(f"optim.ema = {optim.ema} is outside [0, 1).", "use e.g. 0.999 (0 disables the average).")
    if optim.lr_g <= 0 or optim.lr_d <= 0:
        raise ConfigError(f"learning rates must be positive, got lr_g={optim.lr_g}, lr_d={optim.lr_d}.",
                          "give e.g. optim.lr_g=5e-4.")
    if data.segment <= 0 or data.segment % gen.hop:
        raise ConfigError(f"data.segment = {data.segment} is not a positive multiple of the generator hop {gen.hop}.",
                          f"use e.g. {max(1, round(data.segment / gen.hop)) * gen.hop}.")
    if data.batch_size < 1 or data.num_workers < 0:
        raise ConfigError(f"data.batch_size = {data.batch_size}, data.num_workers = {data.num_workers}.",
                          "use batch_size >= 1 and num_workers >= 0.")
    try:
        MixConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.mix.items()})
    except TypeError as exc:
        raise ConfigError(f"data.mix has an unknown key ({exc}).",
                          f"valid keys: {sorted(f.name for f in fields(MixConfig))}.") from None
    if run.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"run.device = {run.device!r} is unknown.", "use auto, cpu or cuda.")
    if run.amp not in AMP_MODES:
        raise ConfigError(f"run.amp = {run.amp!r} is unknown.", f"use one of {list(AMP_MODES)}.")
    for name in ("max_steps", "checkpoint_every", "validate_every", "log_every", "keep_checkpoints",
                 "max_bad_steps"):
        if getattr(run, name) < 1:
            raise ConfigError(f"run.{name} = {getattr(run, name)} must be >= 1.", f"set run.{name} to a positive "
                              "integer.")


def mix_config(cfg: TrainConfig) -> Any:
    """The :class:`training.data.MixConfig` of ``cfg.data.mix``."""
    from training.data import MixConfig

    return MixConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.data.mix.items()})
