"""``denoise eval``: score a model on a folder of noisy/clean pairs, overall, per SNR and per noise kind.

Pipeline: find and validate the pairs (:func:`find_pairs`) → enhance each noisy clip with the model, offline or
through the streaming engine fed random block sizes (:class:`ClipEnhancer`) → score noisy and enhanced against
clean in a process pool (PESQ-WB, STOI, SI-SDR, and DNSMOS when ``speechmos`` is installed) → aggregate
(:func:`summarize`) → print a table or one JSON object, and optionally write ``report.md`` with spectrograms.

The enhanced clip is already latency-compensated by the engine; :func:`run_eval` checks that on a few files with a
cross-correlation (``residual_lag``) rather than trusting it.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import METRIC_NAMES, MetricWarning, align, score_pair
from realtime.errors import ConfigError, DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Pair-level metadata keys of meta.jsonl (written by `denoise data build`) used for the breakdowns.
SNR_KEY = "snr_db"
GROUP_KEYS = ("noise_kind", "noise_category")
# More distinct SNRs than this (e.g. a user's set with continuous SNRs) are binned into 5 dB bins.
MAX_SNR_LEVELS = 12
SNR_BIN_DB = 5.0
LAG_CHECK_FILES = 5
EXAMPLES = 3
SHORT = {"pesq": "PESQ", "stoi": "STOI", "si_sdr": "SI-SDR", "dnsmos_sig": "SIG", "dnsmos_bak": "BAK",
         "dnsmos_ovrl": "OVRL"}
LABELS = {"pesq": "PESQ-WB", "stoi": "STOI", "si_sdr": "SI-SDR (dB)", "dnsmos_sig": "DNSMOS SIG",
          "dnsmos_bak": "DNSMOS BAK", "dnsmos_ovrl": "DNSMOS OVRL"}
_FOLDER_HINT = ("point --data at a folder holding noisy/ and clean/ with same-named mono WAV files (e.g. a "
                "VoiceBank-DEMAND test set), or at a corpus built by `denoise data build` (its test/ is used).")


@dataclass(frozen=True)
class Pair:
    """One noisy/clean pair: file paths, the shared sample rate and length, and its meta.jsonl entry (or {})."""

    name: str
    noisy: Path
    clean: Path
    sample_rate: int
    frames: int
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PairSet:
    """The validated pairs of one folder (sorted by name), and whether a meta.jsonl described them."""

    root: Path
    pairs: list[Pair]
    has_meta: bool

    @property
    def seconds(self) -> float:
        return sum(p.frames / p.sample_rate for p in self.pairs)


def _audio_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
            if p.stem in files:
                raise DataError(f"{folder} holds two audio files named {p.stem!r} ({files[p.stem].name}, {p.name}).",
                                "keep one file per name in noisy/ and clean/.")
            files[p.stem] = p
    return files


def _read_meta(path: Path) -> dict[str, dict[str, Any]]:
    meta: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name = Path(str(entry["name"])).stem
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{lineno} is not a JSON object with a 'name' ({line[:80]!r}).",
                            "fix or delete meta.jsonl (without it only overall scores are reported).") from exc
        meta[name] = entry
    return meta


def _resolve_root(data: Path) -> Path:
    if not data.exists():
        raise DataError(f"--data {data} does not exist.", _FOLDER_HINT)
    if not data.is_dir():
        raise DataError(f"--data {data} is a file, expected a folder.", _FOLDER_HINT)
    for root in (data, data / "test"):
        if (root / "noisy").is_dir() and (root / "clean").is_dir():
            return root
    raise DataError(f"{data} has neither noisy/ + clean/ nor test/noisy/ + test/clean/.", _FOLDER_HINT)


def find_pairs(data: Path, limit: int | None = None, speaker: str | None = None) -> PairSet:
    """Find and validate the pairs under ``data`` (a folder with noisy/ and clean/, or a corpus root with test/).

    Every pair must exist on both sides, be mono, and agree in sample rate and length; otherwise a
    :class:`DataError` lists the offending files and the fix. ``speaker`` keeps the pairs whose meta.jsonl
    ``speaker`` is that one (e.g. the voice held out of every training split); ``limit`` then keeps the first N
    pairs by name.
    """
    import soundfile as sf

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit is {limit}, expected >= 1.", "pass --limit N with N >= 1, or omit it.")
    root = _resolve_root(Path(data))
    noisy, clean = _audio_files(root / "noisy"), _audio_files(root / "clean")
    only_noisy, only_clean = sorted(set(noisy) - set(clean)), sorted(set(clean) - set(noisy))
    if only_noisy or only_clean:
        raise DataError(
            f"{root}: {len(only_noisy)} noisy files have no clean twin (e.g. {only_noisy[:3]}) and "
            f"{len(only_clean)} clean files have no noisy twin (e.g. {only_clean[:3]}).",
            "give each noisy/NAME.wav a clean/NAME.wav with the same name, or remove the unpaired files.",
        )
    if not noisy:
        raise DataError(f"{root}/noisy and {root}/clean hold no audio files ({', '.join(AUDIO_SUFFIXES)}).",
                        _FOLDER_HINT)
    meta_path = root / "meta.jsonl"
    meta = _read_meta(meta_path) if meta_path.is_file() else {}
    names = sorted(noisy)
    if speaker is not None:
        names = [n for n in names if meta.get(n, {}).get("speaker") == speaker]
        if not names:
            known = sorted({str(m.get("speaker")) for m in meta.values() if m.get("speaker")})
            raise DataError(f"no pair in {root} has speaker {speaker!r} in its meta.jsonl"
                            + ("" if meta else " (there is no meta.jsonl)") + ".",
                            f"use one of {known}." if known else "evaluate without --speaker.")
    names = names[:limit]
    pairs: list[Pair] = []
    problems: list[str] = []
    for name in names:
        infos = []
        for path in (noisy[name], clean[name]):
            try:
                infos.append(sf.info(str(path)))
            except (RuntimeError, sf.SoundFileError) as exc:
                raise DataError(f"{path} cannot be read as audio ({exc}).", "replace or remove that file.") from exc
        n_info, c_info = infos
        if n_info.channels != 1 or c_info.channels != 1:
            problems.append(f"{name}: {n_info.channels} noisy / {c_info.channels} clean channels, expected mono")
        elif n_info.samplerate != c_info.samplerate:
            problems.append(f"{name}: noisy at {n_info.samplerate} Hz, clean at {c_info.samplerate} Hz")
        elif n_info.frames != c_info.frames:
            problems.append(f"{name}: noisy {n_info.frames} samples, clean {c_info.frames} samples")
        elif n_info.frames == 0:
            problems.append(f"{name}: empty")
        pairs.append(Pair(name, noisy[name], clean[name], n_info.samplerate, n_info.frames, meta.get(name, {})))
    if problems:
        raise DataError(
            f"{len(problems)} of {len(names)} pairs in {root} do not match: {'; '.join(problems[:4])}"
            + ("; ..." if len(problems) > 4 else "") + ".",
            "each noisy/clean pair must be the same mono recording length at the same sample rate "
            "(e.g. `sox in.wav -c 1 -r 16000 out.wav`, then trim both to the same length), or remove those pairs.",
        )
    has_meta = bool(meta) and all(p.meta for p in pairs)
    return PairSet(root, pairs, has_meta)


def load_pair(pair: Pair, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair as float32 ``[T]`` (clean, noisy), resampled to ``sample_rate`` when the files differ."""
    import soundfile as sf

    out = []
    for path in (pair.clean, pair.noisy):
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = audio[:, 0]
        if not np.all(np.isfinite(x)):
            raise DataError(f"{path} contains NaN or Inf samples.", "replace or remove that file.")
        if sr != sample_rate:
            import soxr

            x = soxr.resample(x, sr, sample_rate, quality="HQ").astype(np.float32)
        out.append(x)
    return out[0], out[1]


class ClipEnhancer:
    """Enhances one mono clip ``[T] -> [T]`` (latency-compensated), offline or through the streaming engine.

    The streaming path feeds random block sizes (1 to 3 hops, seeded) and keeps ``out[L:L+T]``, which the engine
    guarantees equals the offline result.
    """

    def __init__(self, model: Any, streaming: bool, seed: int = 0, atten_lim_db: float | None = None) -> None:
        self.model = model
        self.streaming = streaming
        self.atten_lim_db = atten_lim_db
        self._rng = np.random.default_rng(seed)
        self._engine = None
        if streaming:
            from realtime.engine import StreamingEngine

            self._engine = StreamingEngine(model, channels=1, atten_lim_db=atten_lim_db)

    def __call__(self, noisy: np.ndarray) -> np.ndarray:
        x = np.asarray(noisy, dtype=np.float32)[None, :]
        if self._engine is None:
            from realtime.engine import enhance_offline

            return enhance_offline(self.model, x, self.atten_lim_db)[0]
        engine = self._engine
        engine.reset()
        hop = self.model.spec.hop
        parts = []
        pos = 0
        while pos < x.shape[1]:
            n = int(self._rng.integers(1, 3 * hop + 1))
            parts.append(engine.process(x[:, pos:pos + n]))
            pos += n
        parts.append(engine.flush())
        y = np.concatenate(parts, axis=1)
        latency = engine.latency_samples
        return y[0, latency:latency + x.shape[1]]


def _score_job(clean: np.ndarray, noisy: np.ndarray, enhanced: np.ndarray, sr: int,
               with_dnsmos: bool) -> dict[str, dict[str, float]]:
    """Scores of one pair for the noisy input and the enhanced output (runs in a worker process)."""
    with warnings.catch_warnings():
        # An undefined metric is a NaN that the aggregate counts; a warning per file would only be noise.
        warnings.simplefilter("ignore", MetricWarning)
        result = {"noisy": score_pair(clean, noisy, sr), "enhanced": score_pair(clean, enhanced, sr)}
        if with_dnsmos:
            from evaluation.dnsmos import dnsmos

            result["noisy"].update(dnsmos(noisy, sr))
            result["enhanced"].update(dnsmos(enhanced, sr))
    return result


class ScorePool:
    """Runs :func:`_score_job` in ``workers`` spawned processes (in this process when ``workers`` <= 1).

    At most ``4 * workers`` jobs are in flight, so that a fast enhancer does not pile clips up in memory.
    """

    def __init__(self, workers: int) -> None:
        self._pool = (ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
                      if workers > 1 else None)
        self._limit = 4 * max(workers, 1)
        self._pending: deque[tuple[Any, Future[Any]]] = deque()
        self.done: list[tuple[Any, dict[str, Any]]] = []

    def submit(self, key: Any, fn: Callable[..., dict[str, Any]], *args: Any) -> None:
        if self._pool is None:
            self.done.append((key, fn(*args)))
            return
        self._pending.append((key, self._pool.submit(fn, *args)))
        while len(self._pending) > self._limit:
            self._collect_one()

    def _collect_one(self) -> None:
        key, fut = self._pending.popleft()
        self.done.append((key, fut.result()))

    def finish(self) -> list[tuple[Any, dict[str, Any]]]:
        while self._pending:
            self._collect_one()
        self.close()
        return self.done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def nanmean(values: Iterable[float]) -> float | None:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return None
    return float(np.nanmean(arr))


def _aggregate(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Means (NaNs skipped and counted) of the noisy and enhanced scores of ``rows``, and their difference."""
    out: dict[str, Any] = {"n": len(rows)}
    for side in ("noisy", "enhanced"):
        out[side] = {m: nanmean(r[side][m] for r in rows) for m in metrics}
    out["delta"] = {m: (None if out["noisy"][m] is None or out["enhanced"][m] is None
                        else out["enhanced"][m] - out["noisy"][m]) for m in metrics}
    nan = {f"{side}.{m}": sum(1 for r in rows if math.isnan(r[side][m]))
           for side in ("noisy", "enhanced") for m in metrics}
    out["nan_counts"] = {k: v for k, v in nan.items() if v}
    return out


def snr_labels(values: Sequence[float]) -> tuple[list[str], Callable[[float], str]]:
    """Group labels for SNRs: the values themselves when few, else 5 dB bins ``[lo, hi)``."""
    distinct = sorted(set(values))
    if len(distinct) <= MAX_SNR_LEVELS:
        return [f"{v:g}" for v in distinct], lambda v: f"{v:g}"

    def label(v: float) -> str:
        lo = math.floor(v / SNR_BIN_DB) * SNR_BIN_DB
        return f"[{lo:g}, {lo + SNR_BIN_DB:g})"

    order = sorted({math.floor(v / SNR_BIN_DB) * SNR_BIN_DB for v in distinct})
    return [f"[{lo:g}, {lo + SNR_BIN_DB:g})" for lo in order], label


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Overall means plus breakdowns by SNR (``by_snr``) and by each noise key present in every row's meta.

    ``rows``: per-file dicts with ``noisy`` and ``enhanced`` score dicts and the pair's meta fields. Returns
    ``{"overall": agg, "by_snr": {label: agg}, "by_noise_kind": {...}, "by_noise_category": {...}}`` (the
    breakdowns only when the meta has the key), where ``agg`` is ``{"n", "noisy", "enhanced", "delta",
    "nan_counts"}``.
    """
    out: dict[str, Any] = {"overall": _aggregate(rows, metrics)}
    if rows and all(isinstance(r.get(SNR_KEY), (int, float)) for r in rows):
        order, label = snr_labels([float(r[SNR_KEY]) for r in rows])
        out["by_snr"] = {g: _aggregate([r for r in rows if label(float(r[SNR_KEY])) == g], metrics) for g in order}
    for key in GROUP_KEYS:
        if rows and all(r.get(key) not in (None, "") for r in rows):
            groups = sorted({str(r[key]) for r in rows})
            out[f"by_{key}"] = {g: _aggregate([r for r in rows if str(r[key]) == g], metrics) for g in groups}
    return out


def _choose_examples(pairs: Sequence[Pair]) -> list[str]:
    """Up to :data:`EXAMPLES` names spanning the SNR range (lowest, middle, highest) when SNRs are known."""
    with_snr = [p for p in pairs if isinstance(p.meta.get(SNR_KEY), (int, float))]
    if len(with_snr) == len(pairs) and pairs:
        ordered = sorted(pairs, key=lambda p: (float(p.meta[SNR_KEY]), p.name))
        picks = {0, len(ordered) // 2, len(ordered) - 1}
        return [ordered[i].name for i in sorted(picks)][:EXAMPLES]
    return [p.name for p in pairs[:EXAMPLES]]


def _json_safe(obj: Any) -> Any:
    """NaN/Inf become null so that the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def run_eval(data: Path, model: Path | None = None, as_json: bool = False, report: Path | None = None,
             streaming: bool = False, device: str = "cpu", limit: int | None = None, speaker: str | None = None, *,
             dnsmos: bool = True, workers: int = 2, seed: int = 0, quiet: bool = False,
             atten_lim_db: float | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (None = the shipped default) on the pairs under ``data``; print and return the result.

    ``dnsmos`` False skips DNSMOS even when installed; ``workers`` is the scoring pool size (<= 1: in process);
    ``seed`` seeds the streaming block sizes; ``quiet`` prints nothing (the dict is still returned).
    Returned keys: ``data, model, preset, sample_rate, latency_ms, mode, atten_lim_db, pairs, seconds, enhance_rtf,
    metrics, residual_lag, overall, by_snr?, by_noise_kind?, by_noise_category?, notes, per_file``.
    """
    from realtime.dsp import dry_share
    from realtime.model import load_model

    dry_share(atten_lim_db)  # a bad limit is refused before any work
    pair_set = find_pairs(Path(data), limit, speaker)
    frame_model = load_model(model, device=device, threads=1)
    spec = frame_model.spec
    sr = spec.sample_rate
    notes: list[str] = []
    metrics = list(METRIC_NAMES)
    with_dnsmos = False
    if dnsmos:
        from evaluation.dnsmos import DNSMOS_KEYS, dnsmos_available

        with_dnsmos, why = dnsmos_available()
        if with_dnsmos:
            metrics += list(DNSMOS_KEYS)
        else:
            notes.append(why)
    if not pair_set.has_meta:
        notes.append(f"No complete meta.jsonl in {pair_set.root}: only overall scores are reported.")
    rates = sorted({p.sample_rate for p in pair_set.pairs})
    if rates != [sr]:
        notes.append(f"Pairs at {rates} Hz were resampled to the model's {sr} Hz (soxr HQ) before enhancing and "
                     "scoring.")
    enhancer = ClipEnhancer(frame_model, streaming, seed, atten_lim_db)
    examples = set(_choose_examples(pair_set.pairs)) if report is not None else set()
    kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    lags: list[dict[str, Any]] = []
    max_lag = max(2 * spec.latency_samples, sr // 50)
    pool = ScorePool(workers)
    compute = 0.0
    audio_seconds = 0.0
    progress = None
    if not (as_json or quiet):
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task("enhancing + scoring", total=len(pair_set.pairs))
    try:
        for i, pair in enumerate(pair_set.pairs):
            clean, noisy = load_pair(pair, sr)
            start = time.perf_counter()
            enhanced = enhancer(noisy)
            compute += time.perf_counter() - start
            audio_seconds += noisy.shape[0] / sr
            if i < LAG_CHECK_FILES:
                lags.append({"name": pair.name, "noisy": align(clean, noisy, max_lag),
                             "enhanced": align(clean, enhanced, max_lag)})
            if pair.name in examples:
                kept[pair.name] = (noisy, enhanced, clean)
            pool.submit(i, _score_job, clean, noisy, enhanced, sr, with_dnsmos)
            if progress is not None:
                progress.update(task, completed=i + 1)
        scored = pool.finish()
    finally:
        pool.close()
        if progress is not None:
            progress.stop()
    rows: list[dict[str, Any]] = []
    for i, scores in sorted(scored, key=lambda t: t[0]):
        pair = pair_set.pairs[i]
        extra = {k: pair.meta[k] for k in (SNR_KEY, *GROUP_KEYS) if k in pair.meta}
        rows.append({"name": pair.name, **extra, **scores})
    for side in ("noisy", "enhanced"):
        for m in metrics:
            undefined = [r["name"] for r in rows if math.isnan(r[side][m])]
            if undefined:
                notes.append(f"{LABELS[m]} of the {side} clip is undefined (NaN, left out of the means) on "
                             f"{len(undefined)} pairs: {', '.join(undefined[:5])}{', ...' if len(undefined) > 5 else ''}.")
    residual = [abs(entry["enhanced"]) for entry in lags]
    if any(residual):
        notes.append(f"Residual delay between enhanced and clean on {len(lags)} files: {residual} samples "
                     "(expected 0: the enhanced clips are latency-compensated).")
    result: dict[str, Any] = {
        "data": str(pair_set.root),
        "speaker": speaker,
        "model": str(frame_model.path),
        "preset": spec.preset,
        "train_step": spec.train_step,
        "sample_rate": sr,
        "latency_ms": spec.latency_ms,
        "mode": "streaming" if streaming else "offline",
        "atten_lim_db": atten_lim_db,
        "pairs": len(rows),
        "seconds": round(audio_seconds, 3),
        "enhance_rtf": compute / audio_seconds if audio_seconds else None,
        "metrics": metrics,
        "residual_lag": {"max_lag_searched": max_lag, "files": lags,
                         "max_abs_samples": max(residual) if residual else 0},
        **summarize(rows, metrics),
        "notes": notes,
        "per_file": rows,
    }
    if report is not None:
        write_report(Path(report), result, kept, sr)
    if as_json:
        print(json.dumps(_json_safe(result)))
    elif not quiet:
        print_tables(result)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# presentation
# ---------------------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, metric: str, signed: bool = False, short: bool = False) -> str:
    if value is None:
        return "n/a"
    digits = 1 if metric == "si_sdr" and short else 2 if metric == "si_sdr" or short else 3
    if abs(value) < 0.5 * 10.0**-digits:
        value = 0.0  # no "-0.000"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _group_sections(result: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    titles = {"by_snr": "SNR (dB)", "by_noise_kind": "noise kind", "by_noise_category": "noise category"}
    return [(title, result[key]) for key, title in titles.items() if key in result]


def _header(result: Mapping[str, Any]) -> str:
    rtf = result["enhance_rtf"]
    speed = f", RTF {rtf:.3f} on one thread" if rtf is not None else ""
    who = f" (speaker {result['speaker']})" if result.get("speaker") else ""
    return (f"{result['pairs']} pairs ({result['seconds']:.0f} s) from {result['data']}{who}; model {result['model']} "
            f"(preset {result['preset']}, {result['latency_ms']:.1f} ms algorithmic latency), {result['mode']} "
            f"enhancement{speed}"
            + (f", attenuation limited to {result['atten_lim_db']:g} dB" if result.get("atten_lim_db") else ""))


def print_tables(result: Mapping[str, Any]) -> None:
    """The result as rich tables: overall (noisy, enhanced, Δ), then one table per breakdown."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    metrics = result["metrics"]
    console.print(_header(result))
    table = Table(title="overall")
    for col in ("metric", "noisy", "enhanced", "Δ"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    overall = result["overall"]
    for m in metrics:
        table.add_row(LABELS[m], _fmt(overall["noisy"][m], m), _fmt(overall["enhanced"][m], m),
                      _fmt(overall["delta"][m], m, signed=True))
    console.print(table)
    for title, groups in _group_sections(result):
        table = Table(title=f"by {title}")
        table.add_column(title)
        table.add_column("n", justify="right")
        table.add_column("")
        for m in metrics:
            table.add_column(SHORT[m], justify="right")
        for label, agg in groups.items():
            table.add_row(label, str(agg["n"]), "noisy", *(_fmt(agg["noisy"][m], m, short=True) for m in metrics))
            table.add_row("", "", "enhanced", *(_fmt(agg["enhanced"][m], m, short=True) for m in metrics),
                          end_section=True)
        console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}")


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _spectrogram_png(path: Path, title: str, signals: Sequence[tuple[str, np.ndarray]], sr: int) -> None:
    """Stacked log-magnitude spectrograms (shared colour scale) of ``signals`` (label, ``[T]``) into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.signal import stft

    fig = Figure(figsize=(10, 2.4 * len(signals)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(signals), 1, sharex=True, squeeze=False)[:, 0]
    specs = []
    for _, x in signals:
        f, t, z = stft(x, fs=sr, nperseg=512, noverlap=384)
        specs.append(20.0 * np.log10(np.abs(z) + 1e-9))
    # One colour scale for all panels (80 dB below the loudest bin) so that removed noise shows as darker.
    top = max(float(db.max()) for db in specs)
    for ax, (label, _), db in zip(axes, signals, specs):
        mesh = ax.pcolormesh(t, f / 1000.0, db, vmin=top - 80.0, vmax=top, shading="auto", cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(label, loc="left", fontsize=10)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(mesh, ax=list(axes), label="dB")
    fig.suptitle(title)
    fig.savefig(str(path), dpi=90)


def write_report(folder: Path, result: Mapping[str, Any], examples: Mapping[str, tuple[np.ndarray, ...]],
                 sr: int) -> Path:
    """Write ``folder/report.md`` (the tables in Markdown) and one spectrogram PNG per example; returns the .md."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = result["metrics"]
    parts = [f"# denoise eval\n\n{_header(result)}.\n", "## Overall\n"]
    overall = result["overall"]
    parts.append(_markdown_table(["metric", "noisy", "enhanced", "Δ"],
                                 ([LABELS[m], _fmt(overall["noisy"][m], m), _fmt(overall["enhanced"][m], m),
                                   _fmt(overall["delta"][m], m, signed=True)] for m in metrics)) + "\n")
    for title, groups in _group_sections(result):
        parts.append(f"## By {title} (noisy → enhanced)\n")
        parts.append(_markdown_table(
            [title, "n", *(LABELS[m] for m in metrics)],
            ([label, str(agg["n"]), *(f"{_fmt(agg['noisy'][m], m)} → {_fmt(agg['enhanced'][m], m)}"
                                      for m in metrics)] for label, agg in groups.items())) + "\n")
    lag = result["residual_lag"]
    parts.append(f"Residual delay (enhanced vs clean, cross-correlation within ±{lag['max_lag_searched']} samples "
                 f"on {len(lag['files'])} files): max |lag| = {lag['max_abs_samples']} samples.\n")
    if examples:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parts.append("Spectrograms omitted: matplotlib is not installed (pip install 'denoise[eval]').\n")
        else:
            parts.append("## Examples\n")
            by_name = {r["name"]: r for r in result["per_file"]}
            for name, (noisy, enhanced, clean) in examples.items():
                png = f"{name}.png"
                row = by_name[name]
                snr = f", {row[SNR_KEY]:g} dB SNR" if SNR_KEY in row else ""
                _spectrogram_png(folder / png, f"{name}{snr}",
                                 [("noisy", noisy), ("enhanced", enhanced), ("clean", clean)], sr)
                scores = ", ".join(f"{LABELS[m]} {_fmt(row['noisy'][m], m)} → {_fmt(row['enhanced'][m], m)}"
                                   for m in ("pesq", "stoi", "si_sdr"))
                parts.append(f"### {name}{snr}\n\n{scores}\n\n![{name}]({png})\n")
    if result["notes"]:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in result["notes"]) + "\n")
    path = folder / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
