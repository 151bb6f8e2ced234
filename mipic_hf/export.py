"""``python -m mipic_hf.export``: the command of :mod:`mipic_hf.cli.export` (also ``mipic export``)."""

from mipic_hf.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
