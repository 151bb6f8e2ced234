"""``python -m mipic_hf.publish``: the command of :mod:`mipic_hf.cli.publish` (also ``mipic publish``)."""

from mipic_hf.cli.publish import main

if __name__ == "__main__":
    raise SystemExit(main())
