"""``python -m mipic_hf.teacher_cache``: see :mod:`mipic_hf.cli.teacher_cache` (also ``mipic teacher-cache``)."""

from mipic_hf.cli.teacher_cache import main

if __name__ == "__main__":
    raise SystemExit(main())
