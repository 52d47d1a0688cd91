"""Interop: System 1 and System 2 in formats other tools read (ONNX for System 2)."""
