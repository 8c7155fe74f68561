"""GAN objectives and reconstruction losses, kept apart from the models and the trainer.

The trainer combines generator terms through the named weight mapping of :class:`training.config.LossConfig`
(``{"adv": 1.0, "l1": 100.0, "stft": 1.0, "feat": 0.0}``); a term with weight 0 is not computed. Every term is
returned separately so the log shows each one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from realtime.errors import ConfigError


# --------------------------------------------------------------------------------------------------- emphasis
def preemphasis(x: torch.Tensor, coef: float) -> torch.Tensor:
    """Torch twin of :func:`realtime.dsp.preemphasis` with zero history: x [..., T] -> [..., T].

    Tested equal to the numpy version; a twin is needed so the filter runs on the training device inside autograd.
    """
    if coef == 0.0:
        return x
    return torch.cat([x[..., :1], x[..., 1:] - coef * x[..., :-1]], dim=-1)


def deemphasis(x: torch.Tensor, coef: float, tol: float = 1e-7) -> torch.Tensor:
    """Inverse of :func:`preemphasis` (``y[n] = x[n] + coef * y[n-1]``, zero history) on x [..., T], differentiably.

    The recursion's impulse response ``coef**k`` is cut where it falls below ``tol`` (314 taps at 0.95) and applied
    as one causal convolution, which autograd handles in a single kernel instead of T sequential steps.
    """
    if coef == 0.0:
        return x
    taps = max(1, math.ceil(math.log(tol) / math.log(coef)))
    kernel = (coef ** torch.arange(taps - 1, -1, -1, dtype=torch.float64)).to(x.device, torch.float32)
    flat = x.reshape(-1, 1, x.shape[-1]).float()
    y = F.conv1d(F.pad(flat, (taps - 1, 0)), kernel.view(1, 1, taps))
    return y.reshape(x.shape)


# --------------------------------------------------------------------------------------------------- adversarial
def d_loss(adv: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator objective from patch scores of real (clean, noisy) and fake (G(noisy), noisy) pairs."""
    if adv == "lsgan":
        return 0.5 * (torch.mean((real - 1.0) ** 2) + torch.mean(fake ** 2))
    if adv == "hinge":
        return torch.mean(F.relu(1.0 - real)) + torch.mean(F.relu(1.0 + fake))
    if adv == "nonsat":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    raise ConfigError(f"Unknown adversarial loss {adv!r}.", "use lsgan, hinge or nonsat.")


def g_adv_loss(adv: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator adversarial objective from the patch scores of (G(noisy), noisy)."""
    if adv == "lsgan":
        return 0.5 * torch.mean((fake - 1.0) ** 2)
    if adv == "hinge":
        return -torch.mean(fake)
    if adv == "nonsat":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    raise ConfigError(f"Unknown adversarial loss {adv!r}.", "use lsgan, hinge or nonsat.")


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over D's hidden layers of L1(fake features, real features); real features carry no gradient."""
    terms = [torch.mean(torch.abs(f - r.detach())) for r, f in zip(real_feats, fake_feats)]
    return torch.stack(terms).mean()


class FeatureTap:
    """Collects the outputs of a discriminator's activation layers with forward hooks.

    Hooks (rather than a second forward path) keep the discriminator's own ``forward`` the only code path, which
    matters under DistributedDataParallel where only the wrapper's forward synchronises gradients.
    """

    def __init__(self, discriminator: nn.Module) -> None:
        self.features: list[torch.Tensor] = []
        self.enabled = False
        self._handles = [m.register_forward_hook(self._hook) for m in discriminator.modules()
                         if isinstance(m, nn.LeakyReLU)]

    def _hook(self, module: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if self.enabled:
            self.features.append(out)

    def collect(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``fn`` (a discriminator call) and return its output with the hidden features it produced."""
        self.features, self.enabled = [], True
        try:
            out = fn()
        finally:
            self.enabled = False
        feats, self.features = self.features, []
        return out, feats


# --------------------------------------------------------------------------------------------------- STFT
class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions (fft, hop, win).

    The fine resolutions (128-sample FFT) give short-frame generators a dense, phase-insensitive gradient that
    the waveform L1 alone does not; the coarse one (512) resolves harmonics.
    """

    def __init__(self, resolutions: list[list[int]] | list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window_{i}", torch.hann_window(win), persistent=False)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """estimate, target [B, T] -> (spectral convergence, log-magnitude L1), each a scalar mean."""
        sc_total = estimate.new_zeros(())
        mag_total = estimate.new_zeros(())
        for i, (fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}")
            est = _magnitude(estimate, fft, hop, win, window)
            ref = _magnitude(target, fft, hop, win, window)
            sc_total = sc_total + torch.linalg.norm(ref - est) / torch.linalg.norm(ref).clamp_min(1e-7)
            mag_total = mag_total + F.l1_loss(torch.log(est), torch.log(ref))
        n = len(self.resolutions)
        return sc_total / n, mag_total / n


def _magnitude(x: torch.Tensor, fft: int, hop: int, win: int, window: torch.Tensor) -> torch.Tensor:
    """|STFT| [B, F, N] in float32 (STFT under reduced-precision autocast is inaccurate)."""
    spec = torch.stft(x.float(), fft, hop, win, window, return_complex=True)
    return torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)


# --------------------------------------------------------------------------------------------------- SI-SDR
def neg_si_sdr(estimate: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative scale-invariant SDR in dB, averaged over the batch (estimate, target [B, T], zero-meaned here).

    The torch twin of :func:`evaluation.metrics.si_sdr` as a loss: it penalises what a mask does to the speech
    waveform (suppressed syllables, phase smear), which magnitude losses let through and STOI punishes.
    """
    est = estimate.float() - estimate.float().mean(-1, keepdim=True)
    ref = target.float() - target.float().mean(-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref * ref).sum(-1, keepdim=True).clamp_min(eps)
    proj = scale * ref
    ratio = (proj * proj).sum(-1).clamp_min(eps) / ((est - proj) ** 2).sum(-1).clamp_min(eps)
    return -10.0 * torch.log10(ratio).mean()


# --------------------------------------------------------------------------------------------------- compressed spectrum
class CompressedSpectralLoss(nn.Module):
    """MSE between power-law compressed spectra (|X|^c with the phase kept), as in GTCRN/DeepFilterNet recipes.

    Log-magnitude losses weight near-silent bins as much as speech; the compressed (c = 0.3) magnitude and complex
    spectra weight bins in between linear and log, which tracks PESQ better. Returns ``(complex, magnitude)`` MSEs.
    """

    def __init__(self, fft: int = 512, hop: int = 128, power: float = 0.3) -> None:
        super().__init__()
        self.fft, self.hop, self.power = fft, hop, power
        self.register_buffer("window", torch.hann_window(fft), persistent=False)

    def _compressed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.stft(x.float(), self.fft, self.hop, self.fft, self.window, return_complex=True)
        mag = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-12)
        mag_c = mag ** self.power
        return torch.view_as_real(spec) * (mag_c / mag).unsqueeze(-1), mag_c

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """estimate, target [B, T] -> (compressed complex MSE, compressed magnitude MSE)."""
        cplx, mag, _ = self.terms(estimate, target)
        return cplx, mag

    def under_suppression(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The asymmetric half of the magnitude term: mean of ``relu(|S|^c - |Ŝ|^c)^2``, zero wherever the estimate
        keeps at least the clean magnitude.

        It charges only speech the model removed (over-suppression, the distortion that costs intelligibility at low
        SNR), not noise it left in, so adding it shifts the trade-off towards keeping weak speech."""
        return self.terms(estimate, target)[2]

    def terms(self, estimate: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(complex MSE, magnitude MSE, under-suppression) from one pair of STFTs (the trainer needs several)."""
        est_c, est_m = self._compressed(estimate)
        ref_c, ref_m = self._compressed(target)
        return F.mse_loss(est_c, ref_c), F.mse_loss(est_m, ref_m), torch.mean(torch.relu(ref_m - est_m) ** 2)


# --------------------------------------------------------------------------------------------------- STOI
class STOILoss(nn.Module):
    """``1 − STOI`` computed differentiably at the training rate (Taal et al. 2011), averaged over the batch.

    The intelligibility measure the evaluation reports (``pystoi``) compares the envelopes of 15 one-third-octave
    bands (150 Hz … 4.3 kHz) of clean and enhanced speech over 384 ms windows: it rewards keeping the weak parts of
    speech (onsets, consonants, the quieter syllables that masks suppress at low SNR) and is barely moved by steady
    residual noise. The other terms weight energy, so a model trained on them alone trades intelligibility for
    quietness. This twin follows pystoi's steps at 16 kHz instead of resampling to 10 kHz: 25.6 ms Hann frames, half
    overlap, frames more than 40 dB below the loudest clean frame of each item dropped, segments of 30 frames, the
    enhanced envelope scaled to the clean one's energy and clipped at −15 dB SDR, then the correlation per band and
    segment. Items with fewer than 30 active frames (or silent targets) add nothing.
    """

    BANDS = 15
    MIN_FREQ = 150.0
    SEGMENT = 30
    BETA_DB = -15.0
    DYN_RANGE_DB = 40.0
    SILENCE_DB = -100.0  # frame norm of digital silence: such items have no speech to score
    window: torch.Tensor
    bands: torch.Tensor

    def __init__(self, sample_rate: int = 16000, eps: float = 1e-8) -> None:
        super().__init__()
        self.win = round(0.0256 * sample_rate)
        self.hop = self.win // 2
        self.fft = 1 << (self.win - 1).bit_length()
        self.eps = eps
        self.register_buffer("window", torch.hann_window(self.win + 2)[1:-1], persistent=False)
        self.register_buffer("bands", self._third_octaves(sample_rate, self.fft), persistent=False)

    @classmethod
    def _third_octaves(cls, sample_rate: int, fft: int) -> torch.Tensor:
        """[BANDS, fft/2+1] 0/1 matrix summing FFT bins into one-third-octave bands (edges at the nearest bin)."""
        freqs = torch.arange(fft // 2 + 1, dtype=torch.float64) * sample_rate / fft
        k = torch.arange(cls.BANDS, dtype=torch.float64)
        low = cls.MIN_FREQ * 2.0 ** ((2 * k - 1) / 6)
        high = cls.MIN_FREQ * 2.0 ** ((2 * k + 1) / 6)
        matrix = torch.zeros(cls.BANDS, freqs.numel())
        for i in range(cls.BANDS):
            lo = int(torch.argmin((freqs - low[i]).abs()))
            hi = int(torch.argmin((freqs - high[i]).abs()))
            matrix[i, lo:hi] = 1.0
        return matrix

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T] -> windowed frames [B, N, win] (no padding, as pystoi)."""
        return x.unfold(-1, self.win, self.hop) * self.window

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """estimate, target [B, T] -> scalar ``1 − mean intermediate intelligibility``."""
        est_f, ref_f = self._frames(estimate.float()), self._frames(target.float())
        energy_db = 20.0 * torch.log10(torch.linalg.norm(ref_f, dim=-1) + self.eps)  # [B, N]
        active = (energy_db > energy_db.amax(-1, keepdim=True) - self.DYN_RANGE_DB) & (energy_db > self.SILENCE_DB)
        clip = 1.0 + 10.0 ** (-self.BETA_DB / 20.0)
        scores = []
        for b in range(estimate.shape[0]):
            keep = active[b].nonzero().squeeze(-1)
            if keep.numel() < self.SEGMENT:
                continue
            env = []
            for frames in (ref_f[b, keep], est_f[b, keep]):
                spec = torch.fft.rfft(frames, n=self.fft)  # [N', F]
                power = spec.real ** 2 + spec.imag ** 2
                env.append(torch.sqrt(power @ self.bands.T + self.eps).T)  # [BANDS, N']
            x = env[0].unfold(-1, self.SEGMENT, 1)  # [BANDS, S, SEGMENT]
            y = env[1].unfold(-1, self.SEGMENT, 1)
            scale = torch.linalg.norm(x, dim=-1, keepdim=True) / (torch.linalg.norm(y, dim=-1, keepdim=True) + self.eps)
            y = torch.minimum(y * scale, x * clip)
            x = x - x.mean(-1, keepdim=True)
            y = y - y.mean(-1, keepdim=True)
            corr = (x * y).sum(-1) / ((torch.linalg.norm(x, dim=-1) + self.eps) * (torch.linalg.norm(y, dim=-1) + self.eps))
            scores.append(corr.mean())
        if not scores:
            return estimate.new_zeros((), dtype=torch.float32)
        return 1.0 - torch.stack(scores).mean()
