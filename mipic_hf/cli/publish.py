"""``python -m mipic_hf.publish OUT_DIR --repo_id org/name [--private] [--revision BRANCH]``.

Uploads an export folder or a standard budget folder (``mipic_hf.export``, ``--standard``: give each its own
repo, e.g. ``org/name-layer4-dim64``) to the Hub with ``HfApi.create_repo`` + ``upload_folder``.
The token comes from ``HF_TOKEN`` or the stored login (``hf auth login``) and is never
printed. Without a token or without network the command fails with one line and the folder is untouched;
when the card names another repo id, README.md is rendered again for ``--repo_id`` before the upload.
"""

from __future__ import annotations

import argparse
import sys

from ..hub.publish import PublishError, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder", help="an export folder or a standard folder (python -m mipic_hf.export RUN_DIR OUT_DIR [--standard])"
    )
    parser.add_argument("--repo_id", required=True, help="org/name on the Hub")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--commit_message", default=None, help="default: names the run")
    args = parser.parse_args(argv)
    try:
        url = publish(
            args.folder, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
        )
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"published {args.folder} -> {url}")
    return 0
