"""Streaming speech denoiser runtime: ONNX Runtime + numpy, never torch."""

__version__ = "0.1.0"
