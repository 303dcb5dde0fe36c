"""Checkpoint -> self-describing ONNX model, with a parity proof against PyTorch that can fail."""
