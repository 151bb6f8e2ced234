"""``python -m mipic_hf.export_onnx``: the command of :mod:`mipic_hf.cli.export_onnx` (also ``mipic export-onnx``)."""

from mipic_hf.cli.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(main())
