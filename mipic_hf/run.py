"""``python -m mipic_hf.run recipes/X.yaml [--field value ...] [--dry_run]``: the command of
:mod:`mipic_hf.cli.train` (also ``mipic train``)."""

from mipic_hf.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
