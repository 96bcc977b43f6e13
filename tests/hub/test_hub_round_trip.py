"""The Hub round trip through a real local Hub server: push a ViT backbone, a segmentation model, a depth model and a
dino.txt model with their processor and card, then `from_pretrained` in a fresh process with an empty cache gives
bit-identical outputs; a pinned revision keeps returning the old weights after a new push; the card on the server
parses and validates; missing repos and revisions, private and gated repos give clear errors; an offline run with a
warm cache opens no socket."""

from __future__ import annotations

import json

import pytest
import torch
from hub.hub_server import validate_metadata
from hub.tiny_models import CLASSES, KINDS
from huggingface_hub import ModelCard

PUSH = """
import sys, tempfile, torch
from huggingface_hub import HfApi
from hub.tiny_models import KINDS, build, outputs

out = {}
for kind in KINDS:
    repo = f"me/tiny-{kind}"
    model, processor = build(kind, seed=0)
    model.push_to_hub(repo)
    first = processor.push_to_hub(repo).oid  # the commit that holds the first weights and the processor
    old = outputs(kind, model, processor)
    model, _ = build(kind, seed=1)
    model.push_to_hub(repo)
    out[kind] = {"repo": repo, "first": first, "old": old, "new": outputs(kind, model, processor)}
vit, _ = build("vit", seed=2)
vit.push_to_hub("me/private-vit", private=True)
with tempfile.TemporaryDirectory() as folder:  # save_pretrained(push_to_hub=True) pushes with the card too
    vit.save_pretrained(folder, push_to_hub=True, repo_id="me/gated-vit")
HfApi().update_repo_settings("me/gated-vit", gated="auto")
torch.save(out, sys.argv[1])
"""

PULL = """
import sys, torch
from huggingface_hub import ModelCard
from transformers import AutoProcessor
from hub.tiny_models import CLASSES, outputs

kind, repo, first, path = sys.argv[1:]
got = {}
for name, revision in (("latest", None), ("pinned", first)):
    model = CLASSES[kind].from_pretrained(repo, revision=revision)
    got[name] = outputs(kind, model, AutoProcessor.from_pretrained(repo, revision=revision))
card = ModelCard.load(repo)
card.validate()  # the server's metadata checks
got["card"] = str(card)
torch.save(got, path)
"""


@pytest.fixture(scope="module")
def pushed(local_hub, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("push")
    local_hub.python(PUSH, folder / "cache", str(folder / "pushed.pt"))
    return torch.load(folder / "pushed.pt")


@pytest.mark.parametrize("kind", KINDS)
def test_push_then_from_pretrained_in_a_fresh_process(local_hub, pushed, kind, tmp_path):
    ref = pushed[kind]
    local_hub.python(PULL, tmp_path / "cache", kind, ref["repo"], ref["first"], str(tmp_path / "got.pt"))
    got = torch.load(tmp_path / "got.pt")
    for field, new in ref["new"].items():
        assert not torch.equal(new, ref["old"][field])  # the two pushes differ, so the pinned check can fail
        assert torch.equal(got["latest"][field], new)
        assert torch.equal(got["pinned"][field], ref["old"][field])
    card = ModelCard(got["card"])
    assert validate_metadata(got["card"]) == []
    assert card.data.pipeline_tag == CLASSES[kind].pipeline_tag
    assert (card.data.library_name, card.data.license, card.data.license_name) == ("dinov3-hf", "other", "dinov3-license")
    assert f'{CLASSES[kind].__name__}.from_pretrained("{ref["repo"]}")' in card.text


ERRORS = """
import json
from dinov3_hf import Dinov3HfForSemanticSegmentation, Dinov3HfViTModel

calls = {
    "missing repo": lambda: Dinov3HfViTModel.from_pretrained("me/no-such-model"),
    "missing repo, task model": lambda: Dinov3HfForSemanticSegmentation.from_pretrained("me/no-such-model"),
    "missing revision": lambda: Dinov3HfViTModel.from_pretrained("me/tiny-vit", revision="no-such-branch"),
    "private": lambda: Dinov3HfViTModel.from_pretrained("me/private-vit"),
    "gated": lambda: Dinov3HfViTModel.from_pretrained("me/gated-vit"),
    "private with the token": lambda: Dinov3HfViTModel.from_pretrained("me/private-vit", token="hub-test-token"),
}
result = {}
for name, call in calls.items():
    try:
        call()
        result[name] = None
    except Exception as err:
        result[name] = [[c.__name__ for c in type(err).__mro__], str(err)]
print(json.dumps(result))
"""


def test_missing_repo_revision_and_unauthorised_requests_explain_the_fix(local_hub, pushed, tmp_path):
    result = json.loads(local_hub.python(ERRORS, tmp_path / "cache", token=False).stdout.splitlines()[-1])
    endpoint = local_hub.endpoint
    for name in ("missing repo", "missing repo, task model"):
        classes, message = result[name]
        assert "CheckpointNotFoundError" in classes and "FileNotFoundError" in classes
        assert "'me/no-such-model'" in message and endpoint in message and "Check the repo id" in message
    classes, message = result["missing revision"]
    assert "CheckpointNotFoundError" in classes
    assert "'me/tiny-vit'" in message and "'no-such-branch'" in message and "list_repo_refs" in message
    classes, message = result["private"]
    assert "CheckpointNotFoundError" in classes
    assert "'me/private-vit'" in message and "not authorised" in message and "hf auth login" in message
    classes, message = result["gated"]
    assert "CheckpointAccessError" in classes and "PermissionError" in classes
    assert f"{endpoint}/me/gated-vit" in message and "request access" in message and "hf auth login" in message
    assert result["private with the token"] is None


OFFLINE = """
import socket, sys
attempts = []

def refuse(self, address):
    attempts.append(address)
    raise OSError(f"this test forbids network access (to {address})")

socket.socket.connect = socket.socket.connect_ex = refuse
import torch
from transformers import AutoProcessor
from hub.tiny_models import CLASSES, outputs

model = CLASSES["vit"].from_pretrained("me/tiny-vit")
got = outputs("vit", model, AutoProcessor.from_pretrained("me/tiny-vit"))
opened = list(attempts)
try:  # the guard itself works: a real connection attempt is refused
    socket.create_connection(("127.0.0.1", int(sys.argv[2])))
except OSError:
    pass
torch.save({"outputs": got, "attempts": opened, "guard": attempts[len(opened):]}, sys.argv[1])
"""


def test_offline_with_a_warm_cache_opens_no_socket(local_hub, pushed, tmp_path):
    cache = tmp_path / "cache"
    local_hub.python("from huggingface_hub import snapshot_download; snapshot_download('me/tiny-vit')", cache)
    port = local_hub.endpoint.rsplit(":", 1)[1]
    local_hub.python(OFFLINE, cache, str(tmp_path / "got.pt"), port, offline=True)
    got = torch.load(tmp_path / "got.pt")
    assert got["attempts"] == [] and got["guard"] == [("127.0.0.1", int(port))]
    torch.testing.assert_close(got["outputs"]["last_hidden_state"], pushed["vit"]["new"]["last_hidden_state"],
                               rtol=0, atol=0)
