"""Publish: create_repo + upload_folder of exactly the export folder; clean failures; the token never leaks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError
from test_trainer import WORDS

from mipic_hf.cli.publish import main
from mipic_hf.hub.publish import PublishError, publish
from mipic_hf.run import main as run_main

TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"


class FakeApi:
    """Records the HfApi calls publish makes (no network)."""

    def __init__(self, token: str | None = None, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        if self.fail is not None:
            raise self.fail
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def create_branch(self, **kwargs):
        self.calls.append(("create_branch", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        root = Path(kwargs["folder_path"])
        self.uploaded = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

        class Info:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123"

        return Info()


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_backbone: str) -> Path:
    root = tmp_path_factory.mktemp("publish")
    data = root / "train.txt"
    data.write_text("\n".join(" ".join(WORDS[i : i + 5]) for i in range(12)) + "\n")
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", str(data)),
        *("--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_tasks", "none"),
        *("--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--output_dir", str(root / "run")),
    ]
    assert run_main(args) == 0
    return root / "run" / "export"


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def test_publish_uploads_exactly_the_export_folder(export: Path, online, tmp_path: Path, capsys) -> None:
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(export, folder)
    api = FakeApi()
    url = publish(folder, "my-org/tiny-mipic", private=True, revision="v1", api=api)
    assert url.endswith("/commit/abc123")
    assert [name for name, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (kwargs for _, kwargs in api.calls)
    assert create["repo_id"] == "my-org/tiny-mipic" and create["private"] is True and create["exist_ok"] is True
    assert branch["branch"] == "v1"
    assert upload["folder_path"] == str(folder) and upload["revision"] == "v1"
    assert upload["commit_message"] == "mipic-hf: upload run run (mipic, default)"
    assert set(api.uploaded) == set(digest(folder))  # every file of the folder, nothing else
    # The card now names the repo: its snippets load it.
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "my-org/tiny-mipic"
    assert 'AutoModel.from_pretrained("my-org/tiny-mipic", trust_remote_code=True)' in card.text
    assert TOKEN not in capsys.readouterr().out


def test_a_standard_folder_goes_to_its_own_repo_with_its_card(export: Path, online, tmp_path: Path) -> None:
    from mipic_hf.hub.budget import Budget
    from mipic_hf.hub.standard import export_standard

    (folder,) = export_standard(export, tmp_path / "standard", [Budget(2, 8)])
    api = FakeApi()
    publish(folder, "my-org/tiny-mipic-layer2-dim8", api=api)
    upload = api.calls[-1][1]
    assert upload["commit_message"] == "mipic-hf: upload the standard folder of budget layer 2, dim 8"
    assert set(api.uploaded) == set(digest(folder)) and not [f for f in api.uploaded if f.endswith(".py")]
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "my-org/tiny-mipic-layer2-dim8" and card.data.library_name == "sentence-transformers"
    assert 'SentenceTransformer("my-org/tiny-mipic-layer2-dim8")' in card.text
    assert "--model-id my-org/tiny-mipic-layer2-dim8" in card.text and "trust_remote_code" not in card.text


def test_publish_fails_cleanly(export: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    before = digest(export)
    # No token: HF_TOKEN unset and no stored login.
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    api = FakeApi()
    with pytest.raises(PublishError, match="no Hugging Face token: set HF_TOKEN"):
        publish(export, "my-org/x", api=api)
    assert api.calls == []
    assert main([str(export), "--repo_id", "my-org/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Hugging Face token") and err.count("\n") == 1

    # Offline, bad repo id, not an export folder: refused before any call.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set"):
        publish(export, "my-org/x", api=api)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(PublishError, match="--repo_id must be 'org/name'"):
        publish(export, "no-slash", api=api)
    with pytest.raises(PublishError, match="is neither an export folder nor a standard folder"):
        publish(tmp_path, "my-org/x", api=api)
    assert api.calls == []

    # The network fails: one line, no token in it, the folder untouched (the card is restored).
    import importlib

    from huggingface_hub import errors

    client = importlib.import_module(errors.Response.__module__.split(".")[0])  # httpx or httpx2, as the Hub uses
    response = client.Response(503, request=client.Request("POST", "https://huggingface.co/api/repos/create"))
    http_error = HfHubHTTPError("503 Service Unavailable", response=response)
    for failure in (OSError(f"connection refused (token {TOKEN})"), http_error):
        api = FakeApi(fail=failure)
        with pytest.raises(PublishError) as info:
            publish(export, "other-org/x", api=api)
        assert str(info.value).startswith("upload to other-org/x failed:") and TOKEN not in str(info.value)
        assert "\n" not in str(info.value)
    assert digest(export) == before


@pytest.mark.parametrize("token_from", ["env", "command line"])
def test_recipe_push_to_hub_checks_first_and_uploads_the_export(
    token_from: str, tiny_backbone: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    data = tmp_path / "train.txt"
    data.write_text("\n".join(" ".join(WORDS[i : i + 5]) for i in range(12)) + "\n")
    out = tmp_path / "run"
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", str(data)),
        *("--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_tasks", "none", "--report_to", "none"),
        *("--save_strategy", "no", "--use_cpu", "true", "--output_dir", str(out), "--push_to_hub", "true"),
    ]
    # Checked before any work: the repo id, the network, the token.
    assert run_main([*args, "--dry_run"]) == 2
    assert "hub.hub_model_id must be 'org/name'" in capsys.readouterr().err
    assert run_main([*args, "--hub_model_id", "me/tiny", "--dry_run"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert run_main([*args, "--hub_model_id", "me/tiny"]) == 2
    assert "hub.push_to_hub: no Hugging Face token" in capsys.readouterr().err
    assert not out.exists()

    apis: list[FakeApi] = []

    def make_api(token=None):
        apis.append(FakeApi(token))
        return apis[-1]

    monkeypatch.setattr(huggingface_hub, "HfApi", make_api)
    if token_from == "env":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    else:
        args += ["--hub_token", TOKEN]
    from mipic_hf.recipe import parse_recipe
    from mipic_hf.recipe.plan import build_plan

    plan = build_plan(parse_recipe([*args, "--hub_model_id", "me/tiny", "--dry_run"]))
    assert plan.push.token == TOKEN and TOKEN not in repr(plan) + plan.describe()
    assert run_main([*args, "--hub_model_id", "me/tiny", "--hub_private_repo", "true"]) == 0
    printed = capsys.readouterr()
    assert [name for name, _ in apis[0].calls] == ["create_repo", "upload_folder"]
    assert apis[0].calls[0][1]["private"] is True
    assert apis[0].calls[1][1]["folder_path"] == str(out / "export")
    assert "pushed     https://huggingface.co/me/tiny/commit/abc123" in printed.out
    # The token is nowhere: not printed, not in any file written.
    assert TOKEN not in printed.out + printed.err
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    recipe = (out / "mipic_recipe.yaml").read_text()
    assert "push_to_hub: true" in recipe and "hub_model_id: me/tiny" in recipe and "hub_token" not in recipe
    assert json.loads((out / "export" / "config.json").read_text())["mipic_training"]["run_name"] == "run"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("org/name", True),
        ("o/n", True),
        ("name", False),  # the Hub allows it; pushing here needs the org
        ("a/b/c", False),
        ("org/na me", False),
        ("org/name.git", False),  # huggingface_hub's rules, which a split on "/" alone let through
        ("org/--x", False),
        ("", False),
        (None, False),
    ],
)
def test_one_repo_id_rule_for_publish_and_the_recipe(name, valid):
    from mipic_hf.hub.ids import is_repo_id

    assert is_repo_id(name) is valid
