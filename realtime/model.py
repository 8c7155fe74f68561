"""An exported frame model: an ONNX Runtime session plus the :class:`~realtime.spec.ModelSpec` read from its metadata.

:func:`load_model` refuses anything the engine could not run correctly: a missing or non-ONNX file, a model that
is not ours, metadata that disagrees with the graph's inputs and outputs, windows that do not reconstruct
perfectly, or a CUDA request where the CUDA provider is absent (never a silent fallback to CPU).

Two ways to run it:

* :meth:`FrameModel.run` — any batch, allocating numpy in and out (offline chunks, tests).
* :meth:`FrameModel.stepper` — a :class:`FrameStepper` for one fixed batch: preallocated frame/output buffers bound
  once through IOBinding, and the recurrent state kept as OrtValues on the model's device, ping-ponged between
  two bindings so a hop neither allocates nor copies state (on CUDA the state never leaves the GPU; only the frame
  goes up and the enhanced frame comes down).
"""

from __future__ import annotations

import importlib.resources
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from realtime.dsp import check_perfect_reconstruction, window
from realtime.errors import ConfigError, DeviceError, ModelError
from realtime.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec, parse_metadata

DEVICES = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_FLOAT = "tensor(float)"
_EXPORT_HINT = "export a checkpoint with `denoise export CHECKPOINT -o model.onnx` and pass it with --model"


def default_model_path() -> Path:
    """Where the shipped default model lives (package data); it may not exist in a development checkout."""
    return Path(str(importlib.resources.files("realtime") / "models" / "default.onnx"))


# The default model's int8 export (`denoise export realtime/models/default.onnx --quantize int8`), beside it: the
# same weights, 1.5x faster per hop on one CPU thread and equal in PESQ-WB / STOI on the test split (model card).
INT8_TWIN = "default-int8.onnx"


def _weights_id(path: Path) -> str | None:
    """The ``weights_sha256`` a model file's metadata records (None when unreadable or absent). Read through an
    unoptimised ONNX Runtime session (tens of ms): importing ``onnx`` would cost a second on every start."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), options, providers=[_CPU])
    except Exception:  # noqa: BLE001 - a damaged twin is passed over; the fp32 default is checked on opening
        return None
    return session.get_modelmeta().custom_metadata_map.get("weights_sha256")


def resolve_default(providers: list[str]) -> Path:
    """The shipped model to open when none is given: the int8 twin for a CPU-only session when it holds the same
    weights as ``default.onnx`` (a default replaced by a user's own export is never paired with a stale twin),
    else ``default.onnx`` itself (always on CUDA, where ONNX Runtime has no integer matrix kernels)."""
    fp32 = default_model_path()
    twin = fp32.with_name(INT8_TWIN)
    if providers == [_CPU] and twin.is_file() and fp32.is_file():
        ident = _weights_id(twin)
        if ident is not None and ident == _weights_id(fp32):
            return twin
    return fp32


class FrameModel:
    """An ONNX Runtime session over a denoise frame model.

    ``spec`` is the model's metadata; ``analysis``/``synthesis`` its windows (float32 ``[window]``);
    ``fixed_batch`` is the batch size baked into the graph, or None when the batch axis is dynamic.
    """

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, path: Path, device: str,
                 fixed_batch: int | None, load_seconds: float) -> None:
        self.session = session
        self.spec = spec
        self.path = path
        self.device = device  # "cpu" or "cuda": where the session actually runs
        self.providers: list[str] = session.get_providers()
        self.fixed_batch = fixed_batch
        self.load_seconds = load_seconds
        self.analysis = window(spec.analysis_window, spec.window)
        self.synthesis = window(spec.synthesis_window, spec.window)
        self._output_names = [OUTPUT_NAME, *(s.output for s in spec.state)]

    @property
    def stateful(self) -> bool:
        return bool(self.spec.state)

    def check_batch(self, batch: int) -> None:
        """Raise :class:`ModelError` when the graph's fixed batch cannot take ``batch`` streams/channels."""
        if batch < 1:
            raise ConfigError(f"batch is {batch}, expected >= 1.", "pass at least one channel/stream.")
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise ModelError(
                f"{self.path.name} was exported with a fixed batch of {self.fixed_batch}; {batch} channels/streams "
                "were asked for.",
                "use --mono (or one stream), or re-export the model with a dynamic batch axis.",
            )

    def initial_state(self, batch: int) -> list[np.ndarray]:
        """Zero state, one float32 ``[batch, *shape]`` array per state entry of the metadata."""
        return [np.zeros((batch, *s.shape), dtype=np.float32) for s in self.spec.state]

    def run(self, frames: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call: frames float32 ``[B, window]`` (analysis-windowed, pre-emphasised) and the state before it ->
        enhanced float32 ``[B, window]`` and the state after it."""
        if frames.ndim != 2 or frames.shape[1] != self.spec.window:
            raise ModelError(f"frames have shape {frames.shape}, expected [B, {self.spec.window}].",
                             "frame the audio with the model's window (the engine does this).")
        if len(state) != len(self.spec.state):
            raise ModelError(f"{len(state)} state arrays were given, the model has {len(self.spec.state)}.",
                             "start from FrameModel.initial_state(batch).")
        feed = {INPUT_NAME: np.ascontiguousarray(frames, dtype=np.float32)}
        for s, value in zip(self.spec.state, state):
            feed[s.input] = np.ascontiguousarray(value, dtype=np.float32)
        outputs = self.session.run(self._output_names, feed)
        return outputs[0], list(outputs[1:])

    def stepper(self, batch: int) -> FrameStepper:
        """A per-hop runner for ``batch`` streams with preallocated, pre-bound buffers (see :class:`FrameStepper`)."""
        self.check_batch(batch)
        return FrameStepper(self, batch)


class FrameStepper:
    """Runs one hop for a fixed batch without allocating.

    Write the analysis-windowed frame into ``frame`` (float32 ``[B, window]``), call :meth:`step`, read
    ``enhanced`` (float32 ``[B, window]``; overwritten by the next step). State starts at zeros and is carried
    from step to step until :meth:`reset`.
    """

    def __init__(self, model: FrameModel, batch: int) -> None:
        spec = model.spec
        self.batch = batch
        self.frame = np.zeros((batch, spec.window), dtype=np.float32)
        self.enhanced = np.zeros((batch, spec.window), dtype=np.float32)
        self._session = model.session
        self._cuda = model.device == "cuda"
        # Frame and output stay in host memory (numpy-backed OrtValues share it); ORT copies them across on CUDA.
        frame_value = ort.OrtValue.ortvalue_from_numpy(self.frame)
        out_value = ort.OrtValue.ortvalue_from_numpy(self.enhanced)
        self._state_shapes = [(batch, *s.shape) for s in spec.state]
        self._host_state: list[np.ndarray] = []  # CPU only: the arrays behind the state OrtValues
        pairs = [(self._state_value(shape), self._state_value(shape)) for shape in self._state_shapes]
        self._state_values = pairs
        # Two bindings with the state buffers swapped: step k reads what step k-1 wrote, no copy, no rebinding.
        self._bindings = []
        for parity in (0, 1):
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(INPUT_NAME, frame_value)
            binding.bind_ortvalue_output(OUTPUT_NAME, out_value)
            for s, pair in zip(spec.state, pairs):
                binding.bind_ortvalue_input(s.input, pair[parity])
                binding.bind_ortvalue_output(s.output, pair[1 - parity])
            self._bindings.append(binding)
        self._parity = 0

    def _state_value(self, shape: tuple[int, ...]) -> ort.OrtValue:
        if self._cuda:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, "cuda", 0)
            value.update_inplace(np.zeros(shape, dtype=np.float32))
            return value
        array = np.zeros(shape, dtype=np.float32)
        self._host_state.append(array)
        return ort.OrtValue.ortvalue_from_numpy(array)

    def step(self) -> None:
        """Run the model on ``frame``; the result is in ``enhanced`` and the new state is kept for the next step."""
        binding = self._bindings[self._parity]
        self._session.run_with_iobinding(binding)
        if self._cuda:
            binding.synchronize_outputs()
        self._parity ^= 1

    def reset(self) -> None:
        """Back to the zero initial state."""
        if self._cuda:
            for (a, b), shape in zip(self._state_values, self._state_shapes):
                zeros = np.zeros(shape, dtype=np.float32)
                a.update_inplace(zeros)
                b.update_inplace(zeros)
        else:
            for array in self._host_state:
                array[...] = 0.0
        self._parity = 0


def _providers(device: str) -> list[str]:
    if device not in DEVICES:
        raise DeviceError(f"Unknown device {device!r}, expected one of {DEVICES}.", "pass --device auto|cpu|cuda.")
    available = ort.get_available_providers()
    if device == "cuda" and _CUDA not in available:
        raise DeviceError(
            f"--device cuda was asked for but this ONNX Runtime ({ort.__version__}) has no CUDA provider "
            f"(available: {', '.join(available)}).",
            "install the GPU build (`pip uninstall -y onnxruntime && pip install -e '.[gpu]'`) or use --device cpu.",
        )
    if device == "cpu" or (device == "auto" and _CUDA not in available):
        return [_CPU]
    return [_CUDA, _CPU]


def _dims_match(actual: list[int | str | None], expected: tuple[int, ...]) -> bool:
    """Graph dims (ints, or names/None for dynamic axes) against expected sizes; dynamic dims match anything."""
    return len(actual) == len(expected) and all(not isinstance(a, int) or a == e for a, e in zip(actual, expected))


def _check_graph(session: ort.InferenceSession, spec: ModelSpec, source: str) -> int | None:
    """Check the graph's I/O against the metadata; returns the fixed batch size or None when it is dynamic."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    want_in = [INPUT_NAME, *(s.input for s in spec.state)]
    want_out = [OUTPUT_NAME, *(s.output for s in spec.state)]
    fix = "re-export it with `denoise export` (the metadata must describe the graph)."
    missing = [n for n in want_in if n not in inputs] + [n for n in want_out if n not in outputs]
    if missing:
        raise ModelError(f"{source}: the graph lacks the inputs/outputs {missing} named in its metadata "
                         f"(graph inputs {sorted(inputs)}, outputs {sorted(outputs)}).", fix)
    extra = sorted(set(inputs) - set(want_in))
    if extra:
        raise ModelError(f"{source}: the graph has inputs {extra} that the metadata does not describe.", fix)
    shapes = {INPUT_NAME: (spec.window,), OUTPUT_NAME: (spec.window,)}
    for s in spec.state:
        shapes[s.input] = s.shape
        shapes[s.output] = s.shape
    batches: set[int] = set()
    for name, tail in shapes.items():
        arg = inputs.get(name) or outputs[name]
        if arg.type != _FLOAT:
            raise ModelError(f"{source}: '{name}' is {arg.type}, expected {_FLOAT} (float32).", fix)
        if arg.shape is None:  # rank unknown to ONNX Runtime: nothing to check before the first run
            continue
        shape = list(arg.shape)
        if not shape or not _dims_match(shape[1:], tail):
            implied = ", ".join(["B", *map(str, tail)])
            raise ModelError(f"{source}: '{name}' has shape {shape}, the metadata implies [{implied}].", fix)
        if isinstance(shape[0], int):
            batches.add(shape[0])
    if len(batches) > 1:
        raise ModelError(f"{source}: inconsistent fixed batch sizes {sorted(batches)} across inputs and outputs.", fix)
    return batches.pop() if batches else None


def load_model(path: Path | None = None, device: str = "cpu", threads: int = 1) -> FrameModel:
    """Open a frame model. ``path`` None means the shipped default; ``device`` auto|cpu|cuda; ``threads`` is ONNX
    Runtime's intra-op thread count (0 = its default), with one inter-op thread and sequential execution."""
    if path is None:
        path = resolve_default(_providers(device))
        if not path.is_file():
            raise ModelError(
                f"No model was given and the shipped default model {path} does not exist.",
                "train and export one (`denoise train ...`, then `denoise export CHECKPOINT -o "
                "realtime/models/default.onnx`), or pass --model MODEL.onnx.",
            )
    path = Path(path)
    if not path.exists():
        raise ModelError(f"Model file {path} does not exist.", f"check the path, or {_EXPORT_HINT}.")
    if not path.is_file():
        raise ModelError(f"Model path {path} is not a file.", f"pass an .onnx file; {_EXPORT_HINT}.")
    if threads < 0:
        raise ConfigError(f"threads is {threads}, expected >= 0 (0 = ONNX Runtime's default).", "pass --threads 1.")
    providers = _providers(device)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # keep ORT's own warnings off the console; our errors carry the story
    start = time.perf_counter()
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own (Fail, InvalidProtobuf, InvalidGraph, ...) without a base class
        raise ModelError(f"{path} cannot be opened as an ONNX model ({type(exc).__name__}: {exc}).",
                         f"pass a model file written by `denoise export`; {_EXPORT_HINT}.") from exc
    load_seconds = time.perf_counter() - start
    spec = parse_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    fixed_batch = _check_graph(session, spec, str(path))
    check_perfect_reconstruction(window(spec.analysis_window, spec.window), window(spec.synthesis_window, spec.window),
                                 spec.hop)
    used = session.get_providers()
    if device == "cuda" and _CUDA not in used:
        raise DeviceError(
            f"--device cuda was asked for but ONNX Runtime could not start its CUDA provider (using {used}).",
            "install the CUDA and cuDNN versions this onnxruntime-gpu was built for, or use --device cpu.",
        )
    return FrameModel(session, spec, path, "cuda" if _CUDA in used else "cpu", fixed_batch, load_seconds)
