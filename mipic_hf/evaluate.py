"""``python -m mipic_hf.evaluate``: the command of :mod:`mipic_hf.cli.evaluate` (also ``mipic evaluate``)."""

from mipic_hf.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
