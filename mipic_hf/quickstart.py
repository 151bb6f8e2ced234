"""``python -m mipic_hf.quickstart``: the command of :mod:`mipic_hf.cli.quickstart` (also ``mipic quickstart``)."""

from mipic_hf.cli.quickstart import main

if __name__ == "__main__":
    raise SystemExit(main())
