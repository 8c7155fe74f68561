"""The GAN trainer: config handling, losses, a few real steps on generated WAVs, resume, signals, DDP, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import SEGMENT, make_data, tiny_args, tiny_config

from realtime.dsp import deemphasis as np_deemphasis
from realtime.dsp import preemphasis as np_preemphasis
from realtime.errors import ConfigError, DeviceError
from training import losses
from training.checkpoint import load_checkpoint, load_generator
from training.config import TrainConfig, apply_overrides, load_config, preset_defaults
from training.distributed import DistInfo
from training.trainer import Trainer, TrainingError, build_config, resolve_device, train

REPO = Path(__file__).resolve().parents[1]


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, check=False, capture_output=True,
                          text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------------------------------------ config
def test_presets_differ_as_documented() -> None:
    low, seg = preset_defaults("lowlat"), preset_defaults("segan")
    assert low.data.segment == 16000 and seg.data.segment == 16384
    assert low.loss.weights["stft"] > 0 and seg.loss.weights == {"adv": 1.0, "l1": 100.0, "stft": 0.0, "feat": 0.0}
    assert seg.optim.name == "rmsprop" and seg.optim.lr_g == seg.optim.lr_d == 2e-4
    assert low.loss.adv == seg.loss.adv == "lsgan"
    # lowlat: spectral terms on de-emphasised audio, per-band memory and a weight average; segan: the paper's recipe
    assert low.loss.spectral_deemphasis and low.loss.weights["cspec"] > 0 and low.loss.weights["sisdr"] > 0
    assert low.generator["band_gru"] > 0 and low.generator["past_frames"] > 0 and low.optim.ema > 0
    assert not seg.loss.spectral_deemphasis and seg.optim.ema == 0 and "band_gru" not in seg.generator


def test_set_overrides_parse_json_and_bare_words() -> None:
    cfg = apply_overrides(preset_defaults("lowlat"), ["optim.lr_g=2e-4", "loss.adv=hinge", "optim.betas=[0.5,0.9]",
                                                      "loss.weights.feat=2", "data.mix.snr_db=[0, 10]"])
    assert cfg.optim.lr_g == 2e-4 and cfg.loss.adv == "hinge" and cfg.optim.betas == [0.5, 0.9]
    assert cfg.loss.weights == {**preset_defaults("lowlat").loss.weights, "feat": 2}
    assert cfg.data.mix == {"snr_db": [0, 10]}


@pytest.mark.parametrize("item, words", [
    ("optim.lr=1e-3", ["'lr'", "lr_g"]),
    ("optimizer.lr_g=1e-3", ["optimizer", "optim"]),
    ("run.max_steps", ["no '='"]),
    ("loss.weights.perceptual=1", ["perceptual", "stft"]),
    ("generator.gru_hiden=8", ["gru_hiden", "gru_hidden"]),
    ("data.mix.snr=[0,1]", ["snr", "snr_db"]),
    ("data.segment=1000", ["multiple", "128"]),
    ("loss.adv=wgan", ["wgan", "lsgan"]),
    ('loss.weights={"adv": 0, "l1": 0, "stft": 0, "cspec": 0, "sisdr": 0, "feat": 0}', ["every loss weight is 0"]),
])
def test_bad_set_raises_config_error_naming_valid_keys(item: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(preset_defaults("lowlat"), [item])
    for word in words:
        assert word in str(info.value)


def test_config_json_round_trip_reproduces_the_run_config(tmp_path: Path) -> None:
    cfg = tiny_config("loss.adv=nonsat", "optim.lr_d=3e-4")
    cfg.save(tmp_path / "config.json")
    again = load_config(tmp_path / "config.json", preset="segan")  # the file's preset wins
    assert again == cfg
    assert isinstance(again, TrainConfig)


# ------------------------------------------------------------------------------------------------ losses
def test_torch_preemphasis_equals_realtime_dsp() -> None:
    x = np.random.default_rng(0).standard_normal((3, 500)).astype(np.float32)
    ours = losses.preemphasis(torch.from_numpy(x), 0.95).numpy()
    np.testing.assert_allclose(ours, np_preemphasis(x, 0.95), atol=1e-6)


def test_torch_deemphasis_inverts_preemphasis_and_equals_realtime_dsp() -> None:
    x = np.random.default_rng(1).standard_normal((2, 4000)).astype(np.float32)
    emphasised = losses.preemphasis(torch.from_numpy(x), 0.95)
    np.testing.assert_allclose(losses.deemphasis(emphasised, 0.95).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(losses.deemphasis(torch.from_numpy(x), 0.95).numpy(), np_deemphasis(x, 0.95),
                               atol=1e-4)
    assert losses.deemphasis(emphasised, 0.0) is emphasised


def test_neg_si_sdr_equals_the_evaluation_metric_and_ignores_scale() -> None:
    from evaluation.metrics import si_sdr

    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, 3000)).astype(np.float32)
    est = ref + 0.3 * rng.standard_normal((3, 3000)).astype(np.float32)
    ours = float(losses.neg_si_sdr(torch.from_numpy(est), torch.from_numpy(ref)))
    assert ours == pytest.approx(-np.mean([si_sdr(r, e) for r, e in zip(ref, est)]), abs=1e-3)
    assert float(losses.neg_si_sdr(torch.from_numpy(4.0 * est), torch.from_numpy(ref))) == pytest.approx(ours, abs=1e-3)


@pytest.mark.parametrize("adv", ["lsgan", "hinge", "nonsat"])
def test_adversarial_losses_prefer_the_right_side(adv: str) -> None:
    good_real, good_fake = torch.full((4, 1, 10), 2.0), torch.full((4, 1, 10), -2.0)
    assert losses.d_loss(adv, good_real, good_fake) < losses.d_loss(adv, good_fake, good_real)
    assert losses.g_adv_loss(adv, good_real) < losses.g_adv_loss(adv, good_fake)


def test_stft_loss_is_zero_on_identity_and_grows_with_noise() -> None:
    stft = losses.MultiResolutionSTFTLoss([[128, 32, 128], [64, 16, 64]])
    x = torch.randn(2, 2048)
    sc, mag = stft(x, x)
    assert float(sc) < 1e-6 and float(mag) < 1e-6
    sc1, mag1 = stft(x + 0.1 * torch.randn_like(x), x)
    sc2, mag2 = stft(x + 1.0 * torch.randn_like(x), x)
    assert 0 < float(sc1) < float(sc2) and 0 < float(mag1) < float(mag2)


def test_compressed_spectral_loss_is_zero_on_identity_and_grows_with_noise() -> None:
    loss = losses.CompressedSpectralLoss(fft=128, hop=32)
    x = torch.randn(2, 2048)
    cplx, mag = loss(x, x)
    assert float(cplx) < 1e-8 and float(mag) < 1e-8
    small = loss(x + 0.1 * torch.randn_like(x), x)
    large = loss(x + 1.0 * torch.randn_like(x), x)
    assert 0 < float(small[0]) < float(large[0]) and 0 < float(small[1]) < float(large[1])


def test_under_suppression_term_charges_removed_speech_not_residual_noise() -> None:
    loss = losses.CompressedSpectralLoss(fft=128, hop=32)
    x = torch.randn(2, 2048)
    assert float(loss.under_suppression(x, x)) < 1e-8
    # too much left in (louder than clean) costs nothing; the same error as removal costs, and more removal more
    assert float(loss.under_suppression(1.5 * x, x)) == 0.0
    removed, more_removed = loss.under_suppression(0.5 * x, x), loss.under_suppression(0.1 * x, x)
    assert 0 < float(removed) < float(more_removed)
    # where it applies it equals the magnitude half of the symmetric term
    assert float(removed) == pytest.approx(float(loss(0.5 * x, x)[1]), rel=1e-5)
    est = (0.5 * x).requires_grad_()
    loss.under_suppression(est, x).backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and float(est.grad.abs().sum()) > 0


def test_stoi_loss_tracks_the_evaluation_metric() -> None:
    from pystoi import stoi
    from synth_speech import add_noise, speechlike

    clean = speechlike(3.0, seed=4)
    loss = losses.STOILoss(16000)
    ours, theirs = [], []
    for snr in (-5.0, 0.0, 5.0, 15.0):
        noisy = add_noise(clean, snr, seed=5)
        ours.append(1.0 - float(loss(torch.from_numpy(noisy)[None], torch.from_numpy(clean)[None])))
        theirs.append(stoi(clean, noisy, 16000))
    np.testing.assert_allclose(ours, theirs, atol=0.03)  # same steps at 16 kHz instead of pystoi's 10 kHz
    assert ours == sorted(ours)  # more noise, less intelligible
    assert float(loss(torch.from_numpy(clean)[None], torch.from_numpy(clean)[None])) < 1e-4


def test_stoi_loss_gradient_is_finite_and_silent_items_add_nothing() -> None:
    from synth_speech import add_noise, speechlike

    clean = torch.from_numpy(speechlike(2.0, seed=6))
    noisy = torch.from_numpy(add_noise(clean.numpy(), 0.0, seed=7))
    loss = losses.STOILoss(16000)
    est = torch.stack([noisy, torch.zeros_like(noisy)]).requires_grad_(True)
    ref = torch.stack([clean, torch.zeros_like(clean)])
    value = loss(est, ref)  # the silent item has no active frame: only the first one counts
    assert float(value.detach()) == pytest.approx(float(loss(noisy[None], clean[None])), abs=1e-6)
    value.backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad[0].abs().sum() > 0
    short = torch.from_numpy(speechlike(0.2, seed=8))[None]  # fewer than 30 frames: nothing to score
    assert float(loss(short, short)) == 0.0


# ------------------------------------------------------------------------------------------------ training
def test_two_steps_write_checkpoint_log_config_and_samples(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run = tmp_path / "run"
    t0 = time.perf_counter()
    train(tiny_config("run.max_steps=2", "loss.weights.feat=1", "loss.weights.cspec=10"), data, run)
    assert time.perf_counter() - t0 < 60
    assert (run / "config.json").is_file() and (run / "checkpoints" / "latest.pt").is_file()
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "step_00000002.pt").is_file()
    log = read_log(run)
    assert [r["step"] for r in log] == [1, 2]
    for term in ("loss_d", "g_adv", "g_l1", "g_stft", "g_cspec", "g_feat", "audio_s_per_s", "lr_g", "lr_d"):
        assert np.isfinite(log[0][term]), term
    assert "valid_l1" in log[-1] and "valid_noisy_l1" in log[-1]
    assert list((run / "samples").glob("step_00000002_*.wav"))
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 2 and ckpt["config"] == json.loads((run / "config.json").read_text())


def test_spectral_losses_on_deemphasised_audio_train_and_differ(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    logs = {}
    for flag in (False, True):
        run = tmp_path / f"run_{flag}"
        train(tiny_config("run.max_steps=1", "loss.weights.cspec=10", "loss.weights.sisdr=1", "loss.weights.stoi=10",
                          "loss.weights.asym=10", f"loss.spectral_deemphasis={str(flag).lower()}"), data, run)
        logs[flag] = read_log(run)[0]
    assert all(np.isfinite(logs[True][k]) for k in ("g_cspec", "g_asym", "g_stft", "g_sisdr", "g_stoi"))
    assert logs[True]["g_l1"] == logs[False]["g_l1"]  # the L1 stays in the pre-emphasised domain
    assert logs[True]["g_cspec"] != logs[False]["g_cspec"]


def test_init_starts_a_new_run_from_matching_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(tmp_path)
    base = tmp_path / "base"
    train(tiny_config("run.max_steps=2", "generator.band_gru=0"), data, base)
    source = load_checkpoint(base / "checkpoints" / "latest.pt")
    tuned = tmp_path / "tuned"
    # the new run adds a layer the source lacks; a learning rate of ~0 keeps the copied weights visibly equal
    train(tiny_config("run.max_steps=1", "generator.band_gru=4", "optim.lr_g=1e-12", "optim.lr_d=1e-12",
                      f"run.init={base}"), data, tuned)
    ckpt = load_checkpoint(tuned / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 1  # a new run: steps start afresh
    for key, value in source["generator"].items():
        torch.testing.assert_close(ckpt["generator"][key], value, atol=1e-6, rtol=0)
    assert "band_rnn.weight_ih_l0" in ckpt["generator"]
    note = re.search(r"initialised from .* generator (\d+)/(\d+) tensors", capsys.readouterr().err)
    assert note is not None and int(note.group(1)) == len(source["generator"]) < int(note.group(2))
    with pytest.raises(TrainingError, match="run.init"):
        train(tiny_config("run.max_steps=1", f"run.init={tmp_path / 'nothing.pt'}"), data, tmp_path / "bad")
    segan = tmp_path / "segan"
    train(tiny_config("run.max_steps=1", preset="segan"), data, segan)
    with pytest.raises(TrainingError, match="segan"):
        train(tiny_config("run.max_steps=1", f"run.init={segan}"), data, tmp_path / "mismatch")


def test_weight_average_is_validated_checkpointed_and_resumed(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config("run.max_steps=4", "optim.ema=0.9", "run.validate_every=2"), data, straight)
    ckpt = load_checkpoint(straight / "checkpoints" / "latest.pt")
    trained, served = ckpt["generator_train"], ckpt["generator"]
    assert set(trained) == set(served)
    assert any(not torch.equal(trained[k], served[k]) for k in trained)  # the average lags the raw weights
    gen, meta = load_generator(straight / "checkpoints" / "latest.pt")  # what export uses: the average
    for key, value in gen.state_dict().items():
        assert torch.equal(value, served[key])
    assert "generator_train" not in meta
    # resuming restores both the raw weights and the average: the split run ends where the straight one did
    train(tiny_config("run.max_steps=2", "optim.ema=0.9", "run.validate_every=2"), data, split)
    train(tiny_config("run.max_steps=4", "optim.ema=0.9", "run.validate_every=2"), data, split, resume=True)
    again = load_checkpoint(split / "checkpoints" / "latest.pt")
    for key in ("generator", "generator_train"):
        for name, value in ckpt[key].items():
            torch.testing.assert_close(again[key][name], value, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="optim.ema"):
        tiny_config("optim.ema=1.5")


def test_warmup_skips_discriminator(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run = tmp_path / "run"
    train(tiny_config("run.max_steps=3", "loss.adv_warmup=2"), data, run)
    log = read_log(run)
    assert ["loss_d" in r for r in log] == [False, False, True]


def test_existing_run_without_resume_is_refused(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run = tmp_path / "run"
    train(tiny_config("run.max_steps=1"), data, run)
    before = (run / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(TrainingError, match="--resume"):
        train(tiny_config("run.max_steps=1"), data, run)
    assert (run / "checkpoints" / "latest.pt").read_bytes() == before


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config("run.max_steps=4", "generator.dropout=0.2"), data, straight)
    train(tiny_config("run.max_steps=2", "generator.dropout=0.2"), data, split)
    train(tiny_config("run.max_steps=4", "generator.dropout=0.2"), data, split, resume=True)
    a, b = read_log(straight), read_log(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("loss_d", "g_adv", "g_l1", "g_stft"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (ra["step"], key)
    ga, _ = load_generator(straight / "checkpoints" / "latest.pt")
    gb, _ = load_generator(split / "checkpoints" / "latest.pt")
    for (name, pa), pb in zip(ga.state_dict().items(), gb.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_non_finite_loss_is_skipped_then_stops(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    trainer = Trainer(tiny_config("run.max_bad_steps=3"), data, tmp_path / "run", torch.device("cpu"), DistInfo())
    before = {k: v.clone() for k, v in trainer.g_core.state_dict().items()}
    bad = torch.full((2, SEGMENT), float("nan"))
    assert trainer.train_step(bad, bad) is None
    assert trainer.train_step(bad, bad) is None
    assert trainer.skipped_total == 2
    for k, v in trainer.g_core.state_dict().items():
        assert torch.equal(v, before[k]), k
    good = 0.1 * torch.randn(2, SEGMENT)
    assert trainer.train_step(good, good) is not None and trainer.bad_in_a_row == 0
    for _ in range(2):
        trainer.train_step(bad, bad)
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.train_step(bad, bad)


def test_cuda_requested_when_absent_is_a_device_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    res = cli("train", "--data", str(data), "--out", str(tmp_path / "r"), "--set", "optim.lr=1", "--max-steps", "1")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "lr_g" in res.stderr and "optim" in res.stderr
    if not torch.cuda.is_available():
        res = cli("train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cuda", *tiny_args())
        assert res.returncode != 0 and "Traceback" not in res.stderr and "CUDA" in res.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_build_config_applies_cli_flags_last(tmp_path: Path) -> None:
    cfg = build_config("segan", None, ["run.max_steps=5"], 7, 3, "cpu")
    assert cfg.preset == "segan" and cfg.run.max_steps == 7 and cfg.run.checkpoint_every == 3
    assert cfg.run.device == "cpu"


# ------------------------------------------------------------------------------------------------ processes
def wait_for(predicate, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_step_count(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), *tiny_args("run.checkpoint_every=5")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args, "--max-steps", "100000"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # step_15.pt appears after latest.pt held step 10 (each checkpoint writes step_N.pt, then latest.pt): waiting
        # for step_10.pt alone could kill the run between the two files under load, leaving latest.pt at step 5
        wait_for(lambda: (run / "checkpoints" / "step_00000015.pt").exists() or proc.poll() is not None, 180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")["step"]
    assert saved >= 10 and saved % 5 == 0
    res = cli(*args, "--max-steps", str(saved + 6), "--resume")
    assert res.returncode == 0, res.stderr
    steps = [r["step"] for r in read_log(run)]
    assert steps == list(range(1, saved + 7))  # no gap, no repeat: the killed tail was dropped and redone
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == saved + 6


@pytest.mark.slow
@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGTERM, True)],
                         ids=["sigterm", "ctrl-c-to-group", "sigterm-to-group"])
def test_signal_finishes_the_step_saves_and_exits_cleanly(tmp_path: Path, sig: signal.Signals, group: bool) -> None:
    """SIGTERM to the trainer, or Ctrl-C / SIGTERM to the whole process group (DataLoader workers included)."""
    data = make_data(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "train", "--data", str(data), "--out", str(run),
                             *tiny_args("data.num_workers=1"), "--max-steps", "100000"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: (run / "log.jsonl").exists() and len(read_log(run)) >= 3 or proc.poll() is not None, 120)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sig.name in err and "Traceback" not in err
    last = read_log(run)[-1]["step"]
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from training.distributed import init_distributed, shutdown

    torch.set_num_threads(1)
    info = init_distributed(use_cuda=False)
    cfg = tiny_config("run.max_steps=3", "loss.weights.feat=1", "generator.dropout=0.1")
    trainer = Trainer(cfg, Path(data), Path(out), torch.device("cpu"), info)
    trainer.run()
    torch.save({"g": trainer.g_core.state_dict(), "d": trainer.d_core.state_dict()}, Path(out) / f"rank{rank}.pt")
    shutdown(info)


@pytest.mark.slow
def test_ddp_two_gloo_processes_keep_replicas_identical(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    data = make_data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, free_port(), str(data), str(out)), nprocs=2, join=True)
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    fresh = Trainer(tiny_config(), data, tmp_path / "x", torch.device("cpu"), DistInfo())
    changed = False
    for net in ("g", "d"):
        for name, v in r0[net].items():
            torch.testing.assert_close(v, r1[net][name], rtol=0, atol=0, msg=f"{net}.{name}")
    for name, v in fresh.g_core.state_dict().items():
        changed |= not torch.equal(v, r0["g"][name])
    assert changed, "the generator did not train"
    # rank 0 alone logs: one record per step
    assert [r["step"] for r in read_log(out)] == [1, 2, 3]


@pytest.mark.parametrize("adv", ["hinge", "nonsat"])
def test_segan_preset_trains_with_each_adversarial_loss(tmp_path: Path, adv: str) -> None:
    data = make_data(tmp_path)
    run = tmp_path / "run"
    cfg = tiny_config("run.max_steps=2", f"loss.adv={adv}", preset="segan")
    assert cfg.optim.name == "rmsprop" and cfg.loss.weights["stft"] == 0.0
    train(cfg, data, run)
    log = read_log(run)
    assert "g_stft" not in log[0] and np.isfinite(log[-1]["g_adv"]) and np.isfinite(log[-1]["loss_d"])
    gen, meta = load_generator(run)
    assert meta["preset"] == "segan" and gen.window == 1024


def test_autocast_path_gives_finite_losses(tmp_path: Path) -> None:
    # run.amp applies on CUDA; CPU autocast in bfloat16 exercises the same code path (casts, float32 losses).
    trainer = Trainer(tiny_config("loss.weights.feat=1"), make_data(tmp_path), tmp_path / "run",
                      torch.device("cpu"), DistInfo())
    trainer.amp_dtype = torch.bfloat16
    x = 0.1 * torch.randn(2, SEGMENT)
    logs = trainer.train_step(x, 0.5 * x)
    assert logs is not None and all(np.isfinite(v) for v in logs.values())


def test_amp_is_ignored_on_cpu(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config("run.amp=fp16"), make_data(tmp_path), tmp_path / "run", torch.device("cpu"),
                      DistInfo())
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()
