"""Regenerate examples/noisy.wav + examples/clean.wav (and their README) from a corpus's TEST split.

The speech is a voice held out of training (default asterisk-Carlo), the noise a held-out recording (default: the
longest test-split ambient loop), mixed at 5 dB SNR without any other degradation.

    python benchmarks/make_example.py --corpus /work/data/corpus --out examples
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from training.corpus import SAMPLE_RATE, write_wav_atomic
from training.data import load_manifest, mix


def _licence_line(rec: dict) -> str:
    return f"`{rec['path']}` from Debian package `{rec['source']}` ({rec['licence']})"


def make_example(corpus: Path, out: Path, seconds: float = 9.0, snr_db: float = 5.0, seed: int = 0,
                 speaker: str = "asterisk-Carlo", noise_category: str = "ambient") -> dict:
    """Write OUT/noisy.wav, OUT/clean.wav (PCM16 16 kHz mono, ``seconds`` long) and OUT/README.md; return the facts."""
    records = load_manifest(corpus)
    rng = np.random.default_rng(seed)
    utterances = sorted((r for r in records if r["split"] == "test" and r["speaker"] == speaker),
                        key=lambda r: r["path"])
    noises = sorted((r for r in records if r["split"] == "test" and r["kind"] == "noise"
                     and r["category"] == noise_category), key=lambda r: -r["duration"])
    if not utterances or not noises:
        raise SystemExit(f"{corpus}: no test-split speech of {speaker!r} or no test-split noise of category "
                         f"{noise_category!r}; pick others from manifest.jsonl.")
    n = int(seconds * SAMPLE_RATE)
    # Whole utterances with natural pauses; the take starts and ends in a pause so nothing is cut mid-word.
    parts, used, total = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)], [], int(0.3 * SAMPLE_RATE)
    for i in rng.permutation(len(utterances)):
        x, _ = sf.read(str(corpus / utterances[i]["path"]), dtype="float32")
        gap = np.zeros(int(rng.uniform(0.25, 0.5) * SAMPLE_RATE), np.float32)
        if total + x.size + gap.size > n:
            continue
        parts += [x, gap]
        used.append(utterances[i])
        total += x.size + gap.size
    clean = np.pad(np.concatenate(parts), (0, n - total))
    noise_rec = noises[0]
    noise, _ = sf.read(str(corpus / noise_rec["path"]), dtype="float32")
    noise = np.tile(noise, -(-n // noise.size))[:n] if noise.size < n else noise[:n]
    noisy, target = mix(clean, noise, snr_db, -26.0, rng, degrade=False)
    out.mkdir(parents=True, exist_ok=True)
    write_wav_atomic(out / "noisy.wav", noisy)
    write_wav_atomic(out / "clean.wav", target)
    measured = 10 * np.log10(np.sum(target.astype(np.float64) ** 2) / np.sum((noisy - target).astype(np.float64) ** 2))
    lines = [
        "# Example recordings",
        "",
        f"`noisy.wav` and `clean.wav`: {seconds:g} s, 16 kHz mono PCM16, time-aligned (same length, no delay).",
        (f"`noisy.wav` = `clean.wav` + noise at {snr_db:g} dB SNR (measured after PCM16 rounding: "
        f"{measured:.2f} dB), active speech level -26 dBFS."),
        "Both come from the corpus's **test** split: the voice and the noise recording were never used in training.",
        f"Regenerate with `python benchmarks/make_example.py --corpus CORPUS --out examples --seed {seed}`.",
        "",
        f"## Speech: {speaker} ({used[0]['language'] if used else '?'}), licence {utterances[0]['licence']}",
        "",
        "Voice of Carlo Flora (asterisk-core-sounds-it, © 2012 Carlo Flora, translated by Silvia Petrin), "
        "CC-BY-3.0." if speaker == "asterisk-Carlo" else f"Speaker `{speaker}`.",
        "",
        *(f"- {_licence_line(r)}" for r in used),
        "",
        f"## Noise: {noise_category}, licence {noise_rec['licence']}",
        "",
        f"- {_licence_line(noise_rec)}",
        "",
        ("The corpus files are decoded, resampled to 16 kHz, trimmed and loudness-normalised versions of the package "
        "files (see training/corpus.py); a corpus file's name is its path inside the package with `/` → `__` and "
        "`usr/share/` dropped. The licences are those of the packages' debian/copyright."),
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return {"speech": [r["path"] for r in used], "noise": noise_rec["path"], "snr_db": round(float(measured), 2),
            "seconds": seconds}


def main() -> None:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/data/corpus"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples")
    ap.add_argument("--seconds", type=float, default=9.0)
    ap.add_argument("--snr", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speaker", default="asterisk-Carlo")
    ap.add_argument("--noise-category", default="ambient")
    args = ap.parse_args()
    facts = make_example(args.corpus, args.out, args.seconds, args.snr, args.seed, args.speaker, args.noise_category)
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
