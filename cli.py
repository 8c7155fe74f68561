"""The ``denoise`` command: thin typer commands that lazy-import the heavy parts.

Every user-fixable problem is a :class:`realtime.errors.DenoiseError`; it is printed as one line and the
command exits non-zero (the full traceback only with ``--verbose``).
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(
    name="denoise",
    help="Real-time speech denoiser built around a GAN: enhance files, run live on a mic, train, export, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build the offline speech + noise training corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"verbose": False}


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Latency(str, Enum):
    low = "low"
    high = "high"


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors.")) -> None:
    _state["verbose"] = verbose


MODEL_OPT = typer.Option(None, "--model", "-m", help="ONNX model exported by `denoise export` (default: the shipped model).")
ATTEN_OPT = typer.Option(None, "--atten-lim", metavar="DB",
                         help="Suppress noise by at most DB decibels (mixes that much of the input back in; "
                              "e.g. 20 keeps some room tone). Default: full suppression.")


@app.command()
def enhance(
    inputs: list[Path] = typer.Argument(..., help="Audio files (WAV/FLAC/OGG) or folders (searched recursively)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (one input file) or folder."),
    model: Path | None = MODEL_OPT,
    device: Device = typer.Option(Device.cpu, help="ONNX Runtime device."),
    threads: int = typer.Option(0, help="CPU intra-op threads (0 = ONNX Runtime default)."),
    mono: bool = typer.Option(False, "--mono", help="Downmix to mono before denoising (default: each channel)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    streaming: bool = typer.Option(False, "--streaming", help="Run through the streaming object (same result)."),
    atten_lim: float | None = ATTEN_OPT,
) -> None:
    """Denoise audio files; the output keeps the input's rate, channels and length (latency compensated)."""
    from realtime.batch import enhance_paths

    enhance_paths(inputs, output, model=model, device=device.value, threads=threads, mono=mono,
                  overwrite=overwrite, streaming=streaming, atten_lim_db=atten_lim)


@app.command()
def live(
    input: str = typer.Option("mic", "--input", "-i", help="'mic' (default input), a device name/index, or a WAV file."),
    output: str = typer.Option("speakers", "--output", "-o", help="'speakers', a device name/index, or a WAV path to record."),
    model: Path | None = MODEL_OPT,
    samplerate: int | None = typer.Option(None, help="Device sample rate (default: the device's; resampled to the model's)."),
    blocksize: int | None = typer.Option(None, help="Device block size in frames (default: one model hop; on JACK, its period)."),
    latency: Latency = typer.Option(Latency.low, help="PortAudio latency class."),
    device: Device = typer.Option(Device.cpu, help="ONNX Runtime device."),
    threads: int = typer.Option(1, help="CPU intra-op threads (1: one core must suffice)."),
    bypass: bool = typer.Option(False, "--bypass", help="Start in bypass (A/B); press Enter to toggle."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace a WAV input in real time."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds."),
    status_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object."),
    atten_lim: float | None = ATTEN_OPT,
    stall_timeout: float = typer.Option(5.0, help="Seconds without audio from a running device (or for it to start or stop) before the run ends with an error (exit 2) instead of waiting on a hung sound server."),
) -> None:
    """Denoise a microphone (or WAV) into speakers (or a WAV) with low latency."""
    from realtime.live import run_live

    run_live(input=input, output=output, model=model, samplerate=samplerate, blocksize=blocksize,
             latency=latency.value, device=device.value, threads=threads, bypass=bypass, realtime=realtime,
             duration=duration, json_summary=status_json, atten_lim_db=atten_lim,
             stall_timeout=stall_timeout)


@app.command()
def devices() -> None:
    """List audio input and output devices with their default sample rates."""
    from realtime.audio_io import print_devices

    print_devices()


@app.command()
def bench(
    model: Path | None = MODEL_OPT,
    device: Device = typer.Option(Device.cpu, help="ONNX Runtime device."),
    threads: int = typer.Option(1, help="CPU intra-op threads."),
    seconds: float = typer.Option(20.0, help="Seconds of audio to stream (after warm-up)."),
    streams: int = typer.Option(1, help="Concurrent streams batched in one session."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Measure algorithmic latency, per-hop compute and real-time factor through the streaming engine."""
    from realtime.bench import run_bench

    run_bench(model=model, device=device.value, threads=threads, seconds=seconds, streams=streams, as_json=as_json)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint file, a run folder (its best/latest checkpoint), or an fp32 .onnx model this denoise exported (re-export it, e.g. as int8)."),
    output: Path = typer.Option(..., "--output", "-o", help="ONNX file to write."),
    opset: int = typer.Option(17, help="ONNX opset."),
    quantize: str | None = typer.Option(None, help="'int8' for dynamic int8 quantization (CPU)."),
    fp16: bool = typer.Option(False, "--fp16", help="Store weights in float16."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check ONNX Runtime against PyTorch."),
) -> None:
    """Export a trained generator to a self-describing ONNX file."""
    from export.onnx_export import export_cli

    export_cli(checkpoint, output, opset=opset, quantize=quantize, fp16=fp16, verify=verify)


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="A corpus from `denoise data build`, or a folder with clean/ and noisy/."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, config.json, log.jsonl, TensorBoard."),
    preset: str = typer.Option("lowlat", help="Generator preset: 'lowlat' (live, default) or 'segan'."),
    config: Path | None = typer.Option(None, help="JSON config file (e.g. a run's config.json)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: --set optim.lr_g=2e-4 (repeatable)."),
    max_steps: int | None = typer.Option(None, help="Stop after this many steps."),
    checkpoint_every: int | None = typer.Option(None, help="Checkpoint every N steps."),
    device: Device = typer.Option(Device.auto, help="Training device."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    init: Path | None = typer.Option(None, "--init", help="Start a new run from this checkpoint's weights, or "
                                        "from an exported fp32 .onnx model's generator (e.g. the shipped default; "
                                        "fine-tuning: matching tensors are copied, new layers start fresh)."),
) -> None:
    """Train the GAN (generator + conditional discriminator). Also runs under torchrun for DDP."""
    from training.trainer import train_cli

    if init is not None:
        set_ = [*set_, f"run.init={init}"]
    train_cli(data=data, out=out, preset=preset, config=config, overrides=set_, max_steps=max_steps,
              checkpoint_every=checkpoint_every, device=device.value, resume=resume)


@app.command("eval")
def eval_(
    data: Path = typer.Option(..., "--data", help="Folder with noisy/ and clean/ pairs (e.g. a corpus's test/)."),
    model: Path | None = MODEL_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    report: Path | None = typer.Option(None, help="Write a Markdown report and spectrogram PNGs here."),
    streaming: bool = typer.Option(False, "--streaming", help="Enhance through the streaming object."),
    device: Device = typer.Option(Device.cpu, help="ONNX Runtime device."),
    limit: int | None = typer.Option(None, help="Evaluate only the first N pairs."),
    speaker: str | None = typer.Option(None, help="Only the pairs of this speaker (meta.jsonl), e.g. asterisk-Carlo, "
                                                  "the corpus's voice held out of every training split."),
    atten_lim: float | None = ATTEN_OPT,
) -> None:
    """PESQ-WB, STOI, SI-SDR and DNSMOS of noisy input vs enhanced output, per SNR and noise kind."""
    from evaluation.evaluate import run_eval

    run_eval(data=data, model=model, as_json=as_json, report=report, streaming=streaming, device=device.value,
             limit=limit, speaker=speaker, atten_lim_db=atten_lim)


@data_app.command("build")
def data_build(
    out: Path = typer.Option(..., "--out", help="Corpus folder to write (speech/, noise/, test/, manifest.jsonl)."),
    minutes: float | None = typer.Option(None, help="Cap on minutes of speech (default: everything)."),
    seed: int = typer.Option(0, help="Seed for splits and the test mixtures."),
    cache: Path | None = typer.Option(None, help="Download/extract cache (default: OUT/.cache)."),
    jobs: int = typer.Option(2, help="Parallel decoding (and TTS) processes."),
    tts_minutes: float = typer.Option(0.0, "--tts-minutes", help="Add about M minutes of offline TTS speech (piper, "
                                      "one voice reading Debian's fortunes-min) to the train split only; 0 = off. "
                                      "Tops up a finished corpus without decoding again. Needs "
                                      "`pip install -e '.\\[tts]'`."),  # rich markup: "\\[" prints "["
) -> None:
    """Download the listed Debian packages, decode, split by speaker/noise, and write a manifest + test set."""
    from training.corpus import build_corpus

    build_corpus(out=out, minutes=minutes, seed=seed, cache=cache, jobs=jobs, tts_minutes=tts_minutes)


def main() -> None:
    """Console entry point: run the app, turning typed errors into one line and a non-zero exit."""
    from realtime.errors import DenoiseError, DeviceStalled

    try:
        app(standalone_mode=False)
    except DeviceStalled as exc:
        # A thread is blocked inside PortAudio, and its exit handler (Pa_Terminate) would block the same way:
        # print, flush, and end without exit handlers. Output files were finished before this was raised.
        if _state["verbose"]:
            import traceback

            traceback.print_exc()
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.exit_code)
    except DenoiseError as exc:
        if _state["verbose"]:
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if _state["verbose"]:
            raise
        typer.secho(f"error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", err=True,
                    fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
