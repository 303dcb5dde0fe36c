"""clf: image classification from a folder of images to a submission and a deployable ONNX model."""

__version__ = "0.1.0"
