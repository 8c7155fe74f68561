"""The `denoise` command's contract: every command has useful help, user errors are one line and exit non-zero,
and the runtime side never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["enhance", "live", "devices", "bench", "export", "train", "eval", "data"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], check=False, capture_output=True, text=True,
                          timeout=120)


def test_top_level_help_lists_every_command() -> None:
    res = run("--help")
    assert res.returncode == 0
    for name in COMMANDS:
        assert name in res.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help(name: str) -> None:
    res = run(name, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


def test_user_error_is_one_line_without_traceback(tmp_path) -> None:
    res = run("enhance", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "out.wav"))
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "missing.wav" in lines[0]
    assert not (tmp_path / "out.wav").exists()


def test_verbose_shows_the_traceback(tmp_path) -> None:
    res = run("--verbose", "enhance", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "out.wav"))
    assert res.returncode != 0
    assert "Traceback" in res.stderr


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys, importlib, pkgutil, realtime\n"
        "for m in pkgutil.iter_modules(realtime.__path__):\n"
        "    importlib.import_module('realtime.' + m.name)\n"
        "import cli, evaluation.metrics\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training', 'export'))]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_file_modes_work_without_portaudio() -> None:
    """Importing the engine and the file tools must not import sounddevice (PortAudio may be absent)."""
    code = (
        "import sys, realtime.engine, realtime.batch, realtime.bench\n"
        "assert 'sounddevice' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
