"""Command lines: one module per ``python -m mipic_hf.<name>`` command, and ``mipic`` with subcommands."""
