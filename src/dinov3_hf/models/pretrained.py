"""Behaviour shared by every dinov3_hf PreTrainedModel family, and the one point where other checkpoint layouts plug
into `from_pretrained`."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from huggingface_hub import CommitInfo, EvalResult, ModelCard, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel
from transformers.utils import cached_file

from ..common import NORMALIZATION
from .hub import DINOV3_LICENSE, card_data, licence_lines, push_folder, render_card


class PretrainingDataMixin:
    """Config mixin: `image_mean` / `image_std` follow the config's `pretraining_data`."""

    pretraining_data: str

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return NORMALIZATION[self.pretraining_data][0]

    @property
    def image_std(self) -> tuple[float, float, float]:
        return NORMALIZATION[self.pretraining_data][1]


# Keyword arguments that locate a Hub repository (passed on to huggingface_hub).
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path, Hub repo or revision that does not exist (caught as a CheckpointError or as a
    FileNotFoundError)."""


class CheckpointAccessError(CheckpointError, PermissionError):
    """A gated Hub repo that the request may not read (caught as a CheckpointError or as a PermissionError)."""


def _hub_error_in(err: BaseException) -> HfHubHTTPError | None:
    """The huggingface_hub repo / revision error behind `err` (transformers wraps them in an OSError), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def explained_hub_errors(name_or_path: str | os.PathLike, revision: str | None = None) -> Iterator[None]:
    """Turn a Hub repo that is missing, private without a token or gated, and a missing revision, into a
    CheckpointNotFoundError / CheckpointAccessError naming the repo, the Hub endpoint and the fix."""
    try:
        yield
    except CheckpointError:
        raise
    except OSError as err:
        hub_error = _hub_error_in(err)
        if hub_error is None:
            raise
        where = f"Hub repo {str(name_or_path)!r} on {constants.ENDPOINT}"
        if isinstance(hub_error, GatedRepoError):
            raise CheckpointAccessError(
                f"{where} is gated: request access on {constants.ENDPOINT}/{name_or_path}, then log in with "
                "`hf auth login` or pass token=... (a token of an account that was granted access)."
            ) from err
        if isinstance(hub_error, RevisionNotFoundError):
            raise CheckpointNotFoundError(
                f"{where} has no revision {revision!r}: pass an existing branch, tag or commit sha as revision= "
                f"(HfApi().list_repo_refs({str(name_or_path)!r}) lists the branches and tags)."
            ) from err
        unauthorised = hub_error.response is not None and hub_error.response.status_code == 401
        raise CheckpointNotFoundError(
            f"{where} was not found{' or needs a token (the request was not authorised)' if unauthorised else ''}. "
            "Check the repo id ('namespace/name'); if the repo is private, log in with `hf auth login` or pass "
            "token=... with read access to it; for a local folder, check the path."
        ) from err


# Loaders of checkpoints in another key layout, by the `model_type` of their config.json:
# `loader(name_or_path, model_class=cls, dtype=dtype, **kwargs)` returns a `model_class` in eval mode.
# Importing dinov3_hf registers `convert.load_model` for transformers' `dinov3_vit` / `dinov3_convnext` here
# (`registration.register_auto_classes` calls `convert.register_layout_loaders`).
LayoutLoader = Callable[..., PreTrainedModel]
LAYOUT_LOADERS: dict[str, LayoutLoader] = {}


def register_layout_loader(model_type: str, loader: LayoutLoader) -> None:
    """Make `from_pretrained` load checkpoints whose config.json has this `model_type` through `loader`."""
    LAYOUT_LOADERS[model_type] = loader


def check_local_path(name_or_path: str | os.PathLike) -> None:
    """Raise CheckpointNotFoundError naming `name_or_path` when it does not exist and is a `Path` or cannot be a Hub
    repo id ("name" or "namespace/name"), so that a missing folder is reported as missing, not looked up on the Hub."""
    if os.path.exists(name_or_path):
        return
    if isinstance(name_or_path, str):
        try:
            validate_repo_id(name_or_path)
            return
        except HFValidationError:
            pass
    raise CheckpointNotFoundError(
        f"{str(name_or_path)!r} does not exist (looked for {Path(name_or_path).absolute()}), and it is not a Hub repo "
        "id ('name' or 'namespace/name'). Check the path."
    )


def open_safetensors(path: str | os.PathLike) -> safe_open:
    """`safe_open(path)` (header read, tensors on access); a CheckpointError naming the file if it is unreadable."""
    try:
        return safe_open(str(path), framework="pt")
    except SafetensorError as err:
        raise CheckpointError(
            f"Cannot read the weights file {path} ({err}): it is truncated or corrupt, e.g. by an interrupted save, "
            "copy or download. Save or download it again."
        ) from None


def _config_file(name_or_path: str | os.PathLike | None, **hub_kwargs) -> Path | None:
    """The config.json of a folder, or of a Hub repo (downloaded or in the HF cache); None without a path or a config."""
    if name_or_path is None:
        return None
    check_local_path(name_or_path)
    keep = {k: hub_kwargs[k] for k in HUB_KWARGS if k in hub_kwargs}
    path = Path(name_or_path)
    config = path / "config.json" if path.is_dir() else cached_file(
        str(name_or_path), "config.json", _raise_exceptions_for_missing_entries=False, **keep
    )
    return Path(config) if config is not None and Path(config).is_file() else None


def _model_type_of(name_or_path: str | os.PathLike | None, **hub_kwargs) -> str | None:
    """The `model_type` in the config.json of a folder or Hub repo; None without a path or a config.json."""
    config = _config_file(name_or_path, **hub_kwargs)
    return None if config is None else json.loads(config.read_text()).get("model_type")


class Dinov3HfPreTrainedModel(PreTrainedModel):
    """`from_pretrained` also loads the checkpoint layouts in `LAYOUT_LOADERS` (transformers' `dinov3_vit` /
    `dinov3_convnext`, folder or Hub id), converted on load.

    For those, keyword arguments are Hub arguments, `dtype`, or config fields to override (e.g. `out_indices`).
    A path that does not exist and cannot be a Hub repo id raises CheckpointNotFoundError (a FileNotFoundError), and so
    do a Hub repo or revision that does not exist; a gated repo without access raises CheckpointAccessError.

    `save_pretrained` also writes the model card (README.md, `model_card()`), and `push_to_hub` uploads the folder
    with that card as one commit.
    """

    # the Hub task of the model card; task models override it
    pipeline_tag = "image-feature-extraction"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        path = pretrained_model_name_or_path
        if path is not None:
            check_local_path(path)
        with explained_hub_errors(path, kwargs.get("revision")):
            if path is not None and not model_args and not os.path.isfile(path):
                loader = LAYOUT_LOADERS.get(_model_type_of(path, **kwargs))
                if loader is not None:
                    return loader(path, model_class=cls, dtype=kwargs.pop("dtype", None), **kwargs)
            try:
                return super().from_pretrained(path, *model_args, **kwargs)
            except SafetensorError as err:  # its message does not name the file: find it
                config = _config_file(path, **kwargs)
                for file in sorted(config.parent.glob("*.safetensors")) if config is not None else ():
                    open_safetensors(file)  # raises, naming the unreadable file
                raise CheckpointError(
                    f"A weights file of {path} is unreadable ({err}); save or download it again."
                ) from None

    def model_card(
        self,
        repo_id: str | None = None,
        *,
        license: dict[str, str] = DINOV3_LICENSE,
        base_model: str | Sequence[str] | None = None,
        datasets: Sequence[str] | None = None,
        eval_results: Sequence[EvalResult] | None = None,
        tags: Sequence[str] = (),
        description: str | None = None,
    ) -> ModelCard:
        """The Hub model card: metadata (licence, `library_name: dinov3-hf`, this class's `pipeline_tag`, tags,
        base model, datasets, and `eval_results` as model-index) and a body with the model, usage and licence.

        `license` defaults to the DINOv3 License, which covers Meta's weights and everything derived from them;
        pass `hub.PACKAGE_LICENSE` for weights trained from scratch with this package.
        """
        name = repo_id or "path/to/this/folder"
        cls = type(self).__name__
        data = card_data(
            pipeline_tag=self.pipeline_tag, license=license, base_model=base_model, datasets=datasets, tags=tags,
            model_name=(repo_id or self.config.model_type) if eval_results else None, eval_results=eval_results,
        )
        description = description or (
            f"A DINOv3 {cls} (`{self.config.model_type}`, {self.num_parameters():,} parameters) in dinov3-hf's format "
            "(arXiv 2508.10104)."
        )
        body = [
            description,
            "",
            "## Usage",
            "```python",
            f"from dinov3_hf import {cls}  # importing dinov3_hf registers its classes with transformers",
            "",
            f'model = {cls}.from_pretrained("{name}")',
            "```",
            "",
            "## Licence",
            *licence_lines(license),
        ]
        return render_card(data, repo_id or cls, body)

    def save_pretrained(self, save_directory, *args, model_card: ModelCard | None = None, push_to_hub: bool = False,
                        **kwargs) -> None:
        """transformers' `save_pretrained`, plus README.md: `model_card`, or `model_card()` of the folder's model.
        `push_to_hub=True` then pushes with `push_to_hub` (`repo_id` defaults to the folder name)."""
        hub = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "create_pr", "private") if key in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            (model_card or self.model_card(hub.get("repo_id"))).save(os.path.join(save_directory, "README.md"))
        if push_to_hub:
            self.push_to_hub(hub.pop("repo_id", Path(save_directory).name), model_card=model_card,
                             token=kwargs.get("token"), **hub)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        model_card: ModelCard | None = None,
        commit_message: str = "Upload model",
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: Sequence[str] = (),
    ) -> CommitInfo:
        """Save the model with its card (`model_card`, or `model_card(repo_id, tags=tags)`) and upload the folder to
        `repo_id` as one commit, on branch `revision` (created from main if missing). Returns the commit; its `oid`
        pins this upload: `from_pretrained(repo_id, revision=oid)`."""
        card = model_card or self.model_card(repo_id, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size, model_card=card)
            return push_folder(
                folder, repo_id, private=private, revision=revision, token=token, commit_message=commit_message,
                commit_description=commit_description, create_pr=create_pr,
            )
