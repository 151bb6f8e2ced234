"""Folders other people load: the export (transformers + sentence-transformers), ONNX budget graphs, the model
card, and the upload to the Hub."""
