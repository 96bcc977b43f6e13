"""Publishing to the Hub: model cards (YAML metadata in `ModelCardData`, a short body, rendered with huggingface_hub's
`ModelCard`) and `push_folder`, which uploads a saved model folder as one commit.

`library_name` is `dinov3-hf`, not `transformers`: the Hub's transformers snippet (`AutoModel.from_pretrained(repo)`
without `import dinov3_hf`) and its transformers-based widgets cannot load the `dinov3_hf_*` model types, while the
card's own snippet, which imports dinov3_hf first, can.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pathlib import Path

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

LIBRARY_NAME = "dinov3-hf"
# Meta's weights and everything derived from them (conversions, heads on a Meta backbone).
DINOV3_LICENSE = {
    "license": "other",
    "license_name": "dinov3-license",
    "license_link": "https://ai.meta.com/resources/models-and-libraries/dinov3-license/",
}
# Weights this package trained from scratch: the licence of its code (setup.cfg).
PACKAGE_LICENSE = {"license": "apache-2.0"}
TAGS = ("dinov3", "dinov3-hf", "vision")


def card_data(
    *,
    pipeline_tag: str,
    license: dict[str, str] = DINOV3_LICENSE,
    base_model: str | Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] = (),
    model_name: str | None = None,
    eval_results: Sequence[EvalResult] | None = None,
) -> ModelCardData:
    """The card's metadata: `license` is `DINOV3_LICENSE`, `PACKAGE_LICENSE` or another {license, license_name,
    license_link} dict; `eval_results` (model-index) need a `model_name`."""
    return ModelCardData(
        library_name=LIBRARY_NAME, pipeline_tag=pipeline_tag, tags=list(dict.fromkeys([*TAGS, *tags])),
        base_model=list(base_model) if base_model is not None and not isinstance(base_model, str) else base_model,
        datasets=list(datasets) if datasets else None, model_name=model_name,
        eval_results=list(eval_results) if eval_results else None, **license,
    )


def eval_table(eval_results: Sequence[EvalResult]) -> list[str]:
    """A markdown table of the results: dataset, split, metric, value."""
    lines = ["| dataset | split | metric | value |", "|---|---|---|---|"]
    for result in eval_results:
        lines.append(f"| {result.dataset_name} | {result.dataset_split or ''} | "
                     f"{result.metric_name or result.metric_type} | {result.metric_value:.4f} |")
    return lines


def render_card(data: ModelCardData, title: str, body: list[str]) -> ModelCard:
    """`---\n{metadata}\n---`, `# title`, the `body` lines, then an `## Evaluation` table of `data.eval_results`
    when there are any."""
    if data.eval_results:
        body = [*body, "", "## Evaluation", *eval_table(data.eval_results)]
    return ModelCard("\n".join([f"---\n{data.to_yaml()}\n---", "", f"# {title}", "", *body, ""]))


def licence_lines(license: dict[str, str]) -> list[str]:
    """The licence section's text for a `license` dict."""
    if license == DINOV3_LICENSE:
        return [f"Derived from Meta's DINOv3 weights, released under the [DINOv3 License]({license['license_link']})."]
    if license == PACKAGE_LICENSE:
        return ["Trained from scratch with dinov3-hf; the weights are released under Apache-2.0, its code's licence."]
    link = f" ({license['license_link']})" if license.get("license_link") else ""
    return [f"{license.get('license_name') or license['license']}{link}"]


def is_hub_repo_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` names a Hub repo ('namespace/name') rather than a local file or folder."""
    if name is None or Path(name).exists() or "/" not in str(name):
        return False
    try:
        validate_repo_id(str(name))
        return True
    except HFValidationError:
        return False


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload model",
    commit_description: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Upload every file of `folder` to the model repo `repo_id` as one commit: the repo is created if missing
    (`private` only applies then), and the branch `revision` from `main` if missing. Returns the commit (its `oid` is
    the sha to pin with `from_pretrained(..., revision=oid)`)."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        folder_path=folder, repo_id=repo_id, revision=revision, commit_message=commit_message,
        commit_description=commit_description, create_pr=create_pr,
    )
