"""Command line interface: `dinov3-hf COMMAND ...` (also `python -m dinov3_hf COMMAND ...`).

Each subcommand is one `_add_<name>_parser(subparsers)` function, listed in `SUBCOMMANDS`, that registers its
arguments and sets `func=run_<name>`; `run_<name>(args) -> int` does the work and raises `CliError` for user errors.

Building the parser imports nothing beyond the standard library, so that `--help` and `--version` answer at once:
torch, transformers, numpy, PIL and the package's models are imported inside the functions that use them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import PretrainedConfig, PreTrainedModel

    from .processing import Dinov3HfImageProcessor

DEFAULT_GRID = 28  # default --size: 28 output tokens along the shorter image side
# `dinov3_hf.convert.FORMATS` and the names of `convert.heads.OFFICIAL_HEADS` and `LINEAR_PROBES`, spelt out so that
# building the parser imports no torch (tests/test_newcomer.py checks that they agree)
CONVERT_FORMATS = ("dinov3_hf", "hf", "official")
CONVERT_HEADS = (
    "dinov3_vit7b16_lc", "dinov3_vit7b16_dd", "dinov3_vitl16_chmv2", "dinov3_vit7b16_de", "dinov3_vit7b16_ms",
    "linear_segmentation", "linear_depth",
)
# `dinov3_hf.pretrained_models.DEFAULT_MODEL`: the name by which `export` takes the shipped default model
SHIPPED_MODEL = "fmnist_vit"
EXPORT_FORMATS = ("onnx",)


class CliError(Exception):
    """A user-facing error: printed as `dinov3-hf <command>: error: <message>`, exit status 1."""


def _add_backbone_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """IMAGE paths, and `--model` / `--arch` for a backbone checkpoint described by `what`."""
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (anything PIL reads)")
    parser.add_argument(
        "--model",
        "-m",
        help=(
            f"{what}: a dinov3_hf or transformers folder, a Hub id, or an official .pth (with --arch). Default: the "
            "small ViT shipped with dinov3-hf, pretrained with this package on Fashion-MNIST "
            "(model_cards/dinov3_hf_fmnist_vit.md)"
        ),
    )
    parser.add_argument("--arch", help="preset of an official .pth checkpoint given as --model, e.g. vitl16")


def _add_tile_arguments(parser: argparse.ArgumentParser) -> None:
    """`--tile` / `--tile-overlap`: run the model on overlapping windows (`dinov3_hf.dense.tiling`)."""
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="SIZE",
        help=(
            "run the model on SIZE x SIZE pixel windows of the resized image and average the overlaps (memory bounded "
            "by the window, for inputs whose full-image attention does not fit); a multiple of the model's stride. "
            "With --tile the image processor's token limit (max_tokens) is lifted, unless `features` gets --max-tokens"
        ),
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        metavar="PIXELS",
        help="overlap of neighbouring windows, a multiple of the stride below --tile; default a quarter of --tile",
    )


def _tile_settings(args: argparse.Namespace, stride: int) -> tuple[int, int] | None:
    """(tile, overlap) from `--tile` / `--tile-overlap` checked against the model's `stride`; None without --tile."""
    from .dense.tiling import check_tiling, default_overlap

    if args.tile is None:
        if args.tile_overlap is not None:
            raise CliError("--tile-overlap needs --tile SIZE.")
        return None
    overlap = default_overlap(args.tile, stride) if args.tile_overlap is None else args.tile_overlap
    try:
        check_tiling(args.tile, overlap, stride)
    except ValueError as err:
        raise CliError(f"--tile {args.tile} --tile-overlap {overlap}: {err}") from err
    return args.tile, overlap


# -- features ----------------------------------------------------------------------------------------------------------


def _add_features_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features",
        help="extract CLS, register and patch features of images, with a PCA visualisation",
        description=(
            "For each IMAGE write OUT/<stem>.safetensors with tensors `cls` [D], `registers` [R, D] and "
            "`patch_tokens` [h, w, D] (metadata: model, weights, grid and input sizes), and OUT/<stem>_pca.png: the "
            "first 3 PCA components of the patch features as RGB, at the image's original size."
        ),
    )
    _add_backbone_arguments(parser, "checkpoint in any format")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=(
            "resize the shorter image side to SIZE pixels (snapped to a multiple of the patch size); default: "
            f"{DEFAULT_GRID} output tokens, i.e. {DEFAULT_GRID} x the model's stride (448 for a ViT/16)"
        ),
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help=(
            "refuse an image that would give more than this many patch tokens (input height x width / stride^2), "
            "e.g. a thin strip resized to --size; default: the model's image processor setting (max_tokens)"
        ),
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
    _add_tile_arguments(parser)
    parser.add_argument(
        "--upsample",
        choices=("bilinear", "bilateral"),
        default=None,
        help=(
            "also write OUT/<stem>_pca_upsampled.png: the PCA picture with the features upsampled to every pixel of "
            "the image, bilinearly or guided by the image (joint bilateral upsampling, dinov3_hf.dense.upsample)"
        ),
    )
    parser.add_argument(
        "--foreground",
        action="store_true",
        help=(
            "also write OUT/<stem>_foreground.png: the PCA picture of the foreground patches only (foreground = first "
            "PCA component above its mean, signed so that the image border is background), background black"
        ),
    )
    parser.set_defaults(func=run_features)


def run_features(args: argparse.Namespace) -> int:
    """The `features` command: see `_add_features_parser`."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from .dense.tiling import tiled_patch_features
    from .pretrained_models import DEFAULT_MODEL
    from .viz import pca_image

    if args.size is not None and args.size < 1:
        raise CliError(f"--size must be a positive number of pixels, got {args.size}.")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise CliError(f"--max-tokens must be a positive number of tokens, got {args.max_tokens}.")
    paths = _check_image_paths(args.images)
    _check_output_folder(args.out)
    model, processor, weights = _load_backbone_on_device(args)
    device = model.device
    model_name = args.model or f"{DEFAULT_MODEL} (shipped default)"
    size = args.size or DEFAULT_GRID * model.config.output_stride
    tiling = _tile_settings(args, model.config.output_stride)
    max_tokens = processor.max_tokens if args.max_tokens is None and tiling is None else args.max_tokens
    args.out.mkdir(parents=True, exist_ok=True)

    for path in tqdm(paths, desc="features", unit="image"):
        image = _read_image(path)
        pixel_values = _pixel_values(processor, image, path, size, max_tokens).to(device=device, dtype=model.dtype)
        with torch.inference_mode():
            if tiling is None:
                output = model(pixel_values=pixel_values)
            else:
                output = tiled_patch_features(model, pixel_values, *tiling, progress=True)
        tensors, grid = _features_of(output, pixel_values.shape[-2:], model.config.output_stride)
        metadata = {
            "source": str(path),
            "model": model_name,
            "weights": weights,
            "grid_height": str(grid[0]),
            "grid_width": str(grid[1]),
            "input_height": str(pixel_values.shape[-2]),
            "input_width": str(pixel_values.shape[-1]),
            "image_height": str(image.height),
            "image_width": str(image.width),
            "tiling": "none" if tiling is None else f"{tiling[0]} px windows, {tiling[1]} px overlap",
        }
        save_file(tensors, str(args.out / f"{path.stem}.safetensors"), metadata=metadata)
        pca_image(tensors["patch_tokens"], grid, size=image.size).save(args.out / f"{path.stem}_pca.png")
        _write_dense_pictures(args, tensors["patch_tokens"], image, path.stem)

    print(f"Wrote features of {len(paths)} image(s) to {args.out}", file=sys.stderr)
    return 0


def _write_dense_pictures(args: argparse.Namespace, patch_tokens: torch.Tensor, image: Image.Image, stem: str) -> None:
    """`features --upsample` / `--foreground`: OUT/<stem>_pca_upsampled.png and OUT/<stem>_foreground.png, both at the
    image's size."""
    from PIL import Image

    from .dense import foreground_pca, upsampled_pca_rgb

    if args.upsample is not None:
        rgb = upsampled_pca_rgb(patch_tokens, image.convert("RGB"), method=args.upsample)
        Image.fromarray(rgb).save(args.out / f"{stem}_pca_upsampled.png")
    if args.foreground:
        try:
            picture = foreground_pca(patch_tokens)
        except ValueError as err:
            raise CliError(f"--foreground on {stem}: {err} Pass a larger --size.") from err
        Image.fromarray(picture).resize(image.size, Image.Resampling.NEAREST).save(args.out / f"{stem}_foreground.png")


def _pixel_values(processor, image, path: Path, size: int, max_tokens: int | None):
    """The processor's [1, 3, H, W] input for `image` (shorter side resized to `size`, no crop); a CliError naming
    `path` when it cannot be preprocessed (e.g. more than `max_tokens` patch tokens)."""
    try:
        inputs = processor(
            image, size={"shortest_edge": size}, do_center_crop=False, max_tokens=max_tokens, return_tensors="pt"
        )
    except ValueError as err:
        raise CliError(f"cannot preprocess {path}: {err}") from err
    return inputs["pixel_values"]


def _check_image_paths(paths: Sequence[Path]) -> list[Path]:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CliError(f"image file(s) not found: {', '.join(missing)}")
    clashes = sorted(stem for stem, count in Counter(p.stem for p in paths).items() if count > 1)
    if clashes:
        raise CliError(
            f"several images share the name stem(s) {', '.join(clashes)}, so their outputs would overwrite each "
            "other; rename them or run them with different --out folders."
        )
    return list(paths)


def _check_output_folder(path: Path, option: str = "--out") -> None:
    """Before any work: a CliError naming `path` unless it is a folder, or can be created as one, in which files can be
    written. Creates nothing (a probe file in the nearest existing folder is removed at once)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        what = "is an existing file" if existing == path else f"lies under the file {existing}"
        raise CliError(f"{option} {path} {what}, but must be a folder (created if missing); pass another path.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise CliError(f"cannot write to {option} {path} ({existing}: {err.strerror or err}); pass a writable folder.")


def _read_image(path: Path) -> Image.Image:
    """The image at `path`, fully decoded and turned upright per its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CliError(f"cannot read image {path}: {err}") from err


def _load_backbone_on_device(args: argparse.Namespace) -> tuple[PreTrainedModel, Dinov3HfImageProcessor, str]:
    """`_load_model_and_processor(args.model, args.arch)` with the model in eval mode on `args.device`."""
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise CliError(f"invalid --device {args.device!r}: {err}") from err
    model, processor, weights = _load_model_and_processor(args.model, args.arch)
    try:
        model.to(device).eval()
    except (RuntimeError, AssertionError) as err:  # torch raises AssertionError when built without CUDA
        raise CliError(f"cannot use --device {args.device!r}: {err}") from err
    return model, processor, weights


def _load_model_and_processor(
    name: str | None, arch: str | None = None
) -> tuple[PreTrainedModel, Dinov3HfImageProcessor, str]:
    """(model, processor, "shipped" | "loaded"); without `name`, the package's shipped default model."""
    from transformers import AutoImageProcessor, AutoModel

    from .convert import load_model
    from .pretrained_models import default_model_path
    from .processing import Dinov3HfImageProcessor

    if name is None:
        path = default_model_path()
        model = AutoModel.from_pretrained(path)
        return model, AutoImageProcessor.from_pretrained(path), "shipped"
    try:
        model = load_model(name, arch=arch)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load model {name!r}: {err}") from err
    if Path(name).is_file():  # an official .pth carries no processor settings
        return model, Dinov3HfImageProcessor.for_model_config(model.config), "loaded"
    return model, _load_processor(name, model.config), "loaded"


def _load_processor(name: str, config: PretrainedConfig) -> Dinov3HfImageProcessor:
    """The model's saved processor if it is ours; else ours built from the config (and the saved mean / std)."""
    from transformers import AutoImageProcessor
    from transformers.utils import IMAGE_PROCESSOR_NAME
    from transformers.utils.hub import cached_file

    from .processing import Dinov3HfImageProcessor

    has_processor = cached_file(
        name,
        IMAGE_PROCESSOR_NAME,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if has_processor is None:
        return Dinov3HfImageProcessor.for_model_config(config)
    processor = AutoImageProcessor.from_pretrained(name)
    if isinstance(processor, Dinov3HfImageProcessor):
        return processor
    return Dinov3HfImageProcessor.for_model_config(
        config, image_mean=processor.image_mean, image_std=processor.image_std
    )


def _features_of(
    output: object, input_size: Sequence[int], stride: int
) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
    """`cls` [D], `registers` [R, D] (R = 0 without registers) and `patch_tokens` [h, w, D] of the first image in a
    model output, and the token grid (h, w) = (H // stride, W // stride) of the (H, W) input."""
    fields = ("pooler_output", "patch_tokens")
    missing = [name for name in fields if getattr(output, name, None) is None]
    if missing:
        raise CliError(
            f"the model returned {type(output).__name__} without {', '.join(missing)}; `features` needs a dinov3_hf "
            "model (Dinov3HfViTModel or Dinov3HfConvNextModel)."
        )
    h, w = int(input_size[0]) // stride, int(input_size[1]) // stride
    cls = output.pooler_output[0]
    registers = getattr(output, "register_tokens", None)
    tensors = {
        "cls": cls,
        "registers": cls.new_zeros(0, cls.shape[-1]) if registers is None else registers[0],
        "patch_tokens": output.patch_tokens[0].reshape(h, w, -1),
    }
    return {name: t.float().cpu().contiguous() for name, t in tensors.items()}, (h, w)


# -- convert -----------------------------------------------------------------------------------------------------------


def _add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between the official, transformers and dinov3_hf formats",
        description=(
            "Convert SRC (an official .pth state dict, a transformers or dinov3_hf folder, or a Hub id) to DST. "
            "For --to dinov3_hf and hf, DST is a folder (config.json, safetensors, preprocessor_config.json); for "
            "--to official, DST is a .pth file (or a folder that receives model.pth). Tensors are converted one at "
            "a time and checked strictly against the architecture."
        ),
    )
    parser.add_argument("src", metavar="SRC")
    parser.add_argument("dst", type=Path, metavar="DST")
    parser.add_argument("--arch", help="preset of an official .pth SRC (required for it), e.g. vits16, vit7b16_sat")
    parser.add_argument("--to", choices=CONVERT_FORMATS, default="dinov3_hf", help="target format (default dinov3_hf)")
    parser.add_argument(
        "--backbone",
        help=(
            "dino.txt (--arch dinov3_vitl16_dinotxt_tet1280d20h24l) and --head: the backbone checkpoint that goes "
            "with the official head SRC (an official .pth, read with --backbone-arch, or a folder); for dino.txt DST "
            "receives one folder with the model, its image processor and tokenizer"
        ),
    )
    parser.add_argument(
        "--backbone-arch", help="preset of an official .pth --backbone (default: the dino.txt / released head's one)"
    )
    parser.add_argument(
        "--head",
        choices=CONVERT_HEADS,
        help=(
            "convert an official head file: a released head, or a linear probe written by the official training "
            "scripts ({\"model\": ...} files). --to dinov3_hf: SRC is the head .pth, --backbone its backbone (an "
            "official .pth, read with --backbone-arch, or a folder / Hub id), DST the task-model folder; "
            "--to official: SRC is our task-model folder, DST the head .pth"
        ),
    )
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        help="linear probes: the backbone layers whose features the probe was trained on (default the last)",
    )
    parser.add_argument(
        "--interaction-indexes",
        type=int,
        nargs=4,
        metavar="BLOCK",
        help="--head dinov3_vit7b16_ms: the 4 ViT blocks (0-based) the adapter was trained on; the file does not "
        "record them (default: the official four even intervals of the backbone's depth, 9 19 29 39 on the 7B)",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="then upload DST (with its model card) to this Hub model repo as one commit (--to dinov3_hf only; log "
        "in first with `hf auth login` or set HF_TOKEN; HF_ENDPOINT selects another Hub)",
    )
    parser.add_argument("--private", action="store_true", help="--push-to-hub: create the repo private")
    parser.add_argument("--revision", help="--push-to-hub: the branch to push to (created from main if missing)")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """The `convert` command: see `_add_convert_parser`."""
    from .convert import CheckpointError, convert_checkpoint
    from .convert.checkpoints import _OFFICIAL_SUFFIXES
    from .models.dinotxt import DINOTXT_PRESETS

    official_file = args.to == "official" and args.dst.suffix in _OFFICIAL_SUFFIXES
    if official_file:
        _check_output_folder(args.dst.parent, "the folder of DST")
    else:
        _check_output_folder(args.dst, "DST")
    if args.push_to_hub is None and (args.private or args.revision):
        raise CliError("--private and --revision apply to --push-to-hub REPO_ID; pass it too, or drop them.")
    if args.push_to_hub is not None and args.to != "dinov3_hf":
        raise CliError(f"--push-to-hub uploads dinov3_hf folders; drop --to {args.to} (or push that folder yourself).")
    if args.head:
        return _push_converted(args, _convert_head(args))
    if args.arch in DINOTXT_PRESETS or args.backbone:
        return _push_converted(args, _convert_dinotxt(args))
    try:
        out = convert_checkpoint(args.src, args.dst, arch=args.arch, to=args.to)
    except CheckpointError as err:
        raise CliError(str(err)) from err
    print(f"Wrote {args.to} checkpoint to {out}", file=sys.stderr)
    return _push_converted(args, 0)


def _push_converted(args: argparse.Namespace, status: int) -> int:
    """`convert --push-to-hub`: write DST's model card for the repo, then upload DST as one commit."""
    if status != 0 or args.push_to_hub is None:
        return status
    import json

    import torch
    from huggingface_hub.errors import HfHubHTTPError

    from .models.hub import is_hub_repo_id, push_folder
    from .registration import BACKBONES, TASK_MODELS

    classes = {cls.__name__: cls for _, model, backbone in BACKBONES for cls in (model, backbone)}
    classes.update({model.__name__: model for _, _, model in TASK_MODELS})
    model_class = classes[json.loads((args.dst / "config.json").read_text())["architectures"][0]]
    with torch.device("meta"):  # the card counts the parameters; no weights are read
        model = model_class(model_class.config_class.from_pretrained(args.dst))
    base_model = [name for name in (args.src, args.backbone) if is_hub_repo_id(name)]
    model.model_card(args.push_to_hub, base_model=base_model or None).save(args.dst / "README.md")
    try:
        commit = push_folder(args.dst, args.push_to_hub, private=args.private or None, revision=args.revision,
                             commit_message=f"Convert {Path(args.src).name} with dinov3-hf")
    except HfHubHTTPError as err:
        raise CliError(
            f"Could not push {args.dst} to {args.push_to_hub}: {err}\nLog in with `hf auth login` (or set HF_TOKEN) "
            "with a token that may write to that namespace."
        ) from err
    print(f"Pushed {args.dst} to {commit.repo_url.url} at revision {commit.oid} "
          f"(branch {args.revision or 'main'})", file=sys.stderr)
    return 0


def _convert_head(args: argparse.Namespace) -> int:
    """`convert --head`: an official head file -> our task model on --backbone, or our task model -> the head file."""
    from transformers import AutoConfig

    from .convert import CheckpointError
    from .convert.heads import (
        LINEAR_PROBES,
        OFFICIAL_HEAD_MODELS,
        build_official_head_model,
        official_head_kind,
        save_official_head,
    )
    from .processing import Dinov3HfDetectionImageProcessor, Dinov3HfImageProcessor

    if args.layers and args.head not in LINEAR_PROBES:
        raise CliError(f"--layers applies to the linear probes ({', '.join(LINEAR_PROBES)}), not to {args.head}.")
    segmentor = "dinov3_vit7b16_ms"
    if args.interaction_indexes and (args.head != segmentor or args.to != "dinov3_hf"):
        raise CliError(
            f"--interaction-indexes applies to --head {segmentor} --to dinov3_hf (the adapter's ViT blocks), not to "
            f"--head {args.head} --to {args.to}."
        )
    try:
        if args.to == "official":
            config = AutoConfig.from_pretrained(args.src)
            kind, wanted = official_head_kind(config), official_head_kind(args.head)
            if kind != wanted:
                raise CliError(f"{args.src} has a head of the official {kind} layout, not the {wanted} of {args.head}.")
            out = save_official_head(OFFICIAL_HEAD_MODELS[kind].from_pretrained(args.src), args.dst)
            print(f"Wrote official {args.head} head to {out}", file=sys.stderr)
            return 0
        if args.to != "dinov3_hf" or not args.backbone:
            raise CliError(
                "--head converts SRC (the head .pth) with --backbone BACKBONE to --to dinov3_hf, or SRC (our task "
                f"model) to --to official; got --to {args.to!r}, --backbone {args.backbone!r}."
            )
        fields = {"layers": args.layers} if args.layers else {}
        if args.interaction_indexes:
            fields["interaction_indexes"] = args.interaction_indexes
        model = build_official_head_model(args.head, args.src, args.backbone, args.backbone_arch, **fields)
    except (CheckpointError, OSError, ValueError) as err:
        raise CliError(str(err)) from err
    model.save_pretrained(args.dst)
    is_detector = official_head_kind(model.config) == "plain_detr"
    processor_class = Dinov3HfDetectionImageProcessor if is_detector else Dinov3HfImageProcessor
    processor_class.for_model_config(model.config).save_pretrained(args.dst)
    print(f"Wrote {type(model).__name__} and its image processor to {args.dst}", file=sys.stderr)
    if args.head == segmentor:
        indexes = model.config.backbone_config.interaction_indexes
        origin = "--interaction-indexes" if args.interaction_indexes else "the official four even intervals"
        print(f"The adapter reads ViT blocks {indexes} ({origin}).", file=sys.stderr)
    return 0


def _convert_dinotxt(args: argparse.Namespace) -> int:
    from .convert import CheckpointError
    from .convert.dinotxt import load_official_dinotxt
    from .models.dinotxt import DINOTXT_PRESETS
    from .processing import Dinov3HfDinoTxtProcessor

    if args.arch not in DINOTXT_PRESETS or not args.backbone or args.to != "dinov3_hf":
        raise CliError(
            "a dino.txt checkpoint converts with --arch (one of "
            f"{', '.join(DINOTXT_PRESETS)}), --backbone BACKBONE and --to dinov3_hf; got --arch {args.arch!r}, "
            f"--backbone {args.backbone!r}, --to {args.to!r}."
        )
    try:
        model = load_official_dinotxt(args.src, args.backbone, arch=args.arch, backbone_arch=args.backbone_arch)
    except (CheckpointError, OSError) as err:
        raise CliError(str(err)) from err
    model.save_pretrained(args.dst)
    Dinov3HfDinoTxtProcessor.for_model_config(model.config, image_size=512).save_pretrained(args.dst)
    print(f"Wrote dino.txt model, image processor and tokenizer to {args.dst}", file=sys.stderr)
    return 0


# -- depth / segment ---------------------------------------------------------------------------------------------------

# checkpoint model types that are bare backbones: `depth` and `segment` need a model with a trained head
_BACKBONE_MODEL_TYPES = ("dinov3_hf_vit", "dinov3_vit", "dinov3_hf_convnext", "dinov3_convnext")
# what a model of each of our checkpoint types is, and where it is used, for the errors on a model of the wrong kind
_MODEL_KINDS = {
    **{
        model_type: "a bare backbone without a head: use it with `dinov3-hf features`, or train a head on it first "
        "(e.g. with the probe scripts in examples/) and pass the saved folder"
        for model_type in _BACKBONE_MODEL_TYPES
    },
    "dinov3_hf_semantic_segmentation": "a semantic-segmentation model: use it with `dinov3-hf segment`",
    "dinov3_hf_depth_estimation": "a depth-estimation model: use it with `dinov3-hf depth`",
    "dinov3_hf_dinotxt": "a dino.txt model: use it with `dinov3-hf segment-text`",
    "dinov3_hf_image_classification": "an image classifier: use it with transformers' image-classification pipeline",
}
RAW_DEPTH_FORMATS = ("npy", "safetensors")


def _add_dense_arguments(parser: argparse.ArgumentParser, task: str, trainer: str) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (anything PIL reads)")
    parser.add_argument(
        "--model",
        "-m",
        required=True,
        help=(
            f"a saved {task} model: a folder or Hub id with a DINOv3 backbone and a trained head, e.g. the output of "
            f"{trainer}"
        ),
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=(
            "resize the shorter image side to SIZE pixels (snapped to a multiple of the model's stride) before the "
            f"model; default {DEFAULT_GRID} x the stride. Outputs are always at the original image size"
        ),
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
    _add_tile_arguments(parser)


def _add_depth_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "depth",
        help="estimate depth with a depth-estimation model; write a coloured depth map and the raw depth",
        description=(
            "For each IMAGE write OUT/<stem>_depth.png (the depth coloured, near = red, far = blue, at the image's "
            "size) and the raw float32 depth [H, W] in the model's units as OUT/<stem>_depth.npy or "
            "OUT/<stem>_depth.safetensors (tensor `depth`)."
        ),
    )
    _add_dense_arguments(parser, "depth-estimation", "examples/train_depth_probe.py")
    parser.add_argument(
        "--raw-format", choices=RAW_DEPTH_FORMATS, default="npy", help="file format of the raw depth (default npy)"
    )
    parser.add_argument("--cmap", default="turbo", help="colormap: turbo (default), gray, or any matplotlib name")
    parser.set_defaults(func=run_depth)


def _add_segment_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="semantic segmentation with a segmentation model; write the label map and an overlay",
        description=(
            "For each IMAGE write OUT/<stem>_mask.png, the class index of every pixel at the image's size (a "
            "palette PNG: reading it as an array gives the indices, viewers show the class colours; 16-bit "
            "grayscale above 256 classes), and OUT/<stem>_overlay.png, the image blended with the class colours. "
            "The classes found are printed."
        ),
    )
    _add_dense_arguments(parser, "semantic-segmentation", "examples/train_segmentation_probe.py")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the class colours in the overlay, 0..1 (default 0.5)"
    )
    parser.set_defaults(func=run_segment)


def _check_model_kind(name: str, task: str, config_classes: Container[type]) -> None:
    """A CliError saying what the model `name` is and which command takes it, unless its config is one of
    `config_classes`."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load model {name!r}: {err}") from err
    if type(config) not in config_classes:
        kind = _MODEL_KINDS.get(config.model_type, "a model of another kind")
        raise CliError(f"{name} holds a {config.model_type!r} model, not a {task} model: it is {kind}.")


def _load_task_model(name: str, auto_class: type, task: str) -> tuple[PreTrainedModel, Dinov3HfImageProcessor]:
    """A saved task model and its processor, with clear errors for models of another kind and for checkpoints whose
    weights do not fit the model (e.g. a head whose weights are missing, which would predict from random ones)."""
    _check_model_kind(name, task, auto_class._model_mapping)
    try:
        model = auto_class.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load model {name!r}: {err}") from err
    try:
        processor = _load_processor(name, model.config)
    except ValueError as err:
        raise CliError(f"cannot build an image processor for {name!r}: {err}") from err
    return model, processor


class _DensePredictor:
    """Model, processor and settings shared by `depth` and `segment`; `predict(image)` runs the model at `--size`."""

    def __init__(self, args: argparse.Namespace, auto_class: type, task: str):
        import torch

        if args.size is not None and args.size < 1:
            raise CliError(f"--size must be a positive number of pixels, got {args.size}.")
        self.paths = _check_image_paths(args.images)
        _check_output_folder(args.out)
        try:
            self.device = torch.device(args.device)
        except RuntimeError as err:
            raise CliError(f"invalid --device {args.device!r}: {err}") from err
        self.model, self.processor = _load_task_model(args.model, auto_class, task)
        try:
            self.model.to(self.device).eval()
        except (RuntimeError, AssertionError) as err:  # torch raises AssertionError when built without CUDA
            raise CliError(f"cannot use --device {args.device!r}: {err}") from err
        stride = getattr(self.model.config, "output_stride", None) or self.processor.size_divisor
        self.size = args.size or DEFAULT_GRID * stride
        self.tiling = _tile_settings(args, stride)
        args.out.mkdir(parents=True, exist_ok=True)

    def predict(self, path: Path, image: Image.Image):
        import torch

        from .dense.tiling import tiled_predict

        limit = {} if self.tiling is None else {"max_tokens": None}  # with --tile the windows bound the memory
        try:
            inputs = self.processor(
                image, size={"shortest_edge": self.size}, do_center_crop=False, return_tensors="pt", **limit
            )
        except ValueError as err:
            raise CliError(f"cannot preprocess {path}: {err}") from err
        pixel_values = inputs["pixel_values"].to(device=self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            if self.tiling is None:
                return self.model(pixel_values=pixel_values)
            return tiled_predict(self.model, pixel_values, *self.tiling, progress=True)


def run_depth(args: argparse.Namespace) -> int:
    """The `depth` command: see `_add_depth_parser`."""
    import numpy as np
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    from transformers import AutoModelForDepthEstimation

    from .viz import colorize_depth

    predictor = _DensePredictor(args, AutoModelForDepthEstimation, "depth-estimation")
    for path in tqdm(predictor.paths, desc="depth", unit="image"):
        image = _read_image(path)
        output = predictor.predict(path, image)
        if getattr(output, "predicted_depth", None) is None:
            raise CliError(f"the model returned {type(output).__name__} without `predicted_depth`.")
        sizes = [(image.height, image.width)]
        depth = predictor.processor.post_process_depth_estimation(output, target_sizes=sizes)[0]["predicted_depth"]
        depth = depth.float().cpu()
        try:
            colorize_depth(depth, cmap=args.cmap).save(args.out / f"{path.stem}_depth.png")
        except ValueError as err:
            raise CliError(str(err)) from err
        if args.raw_format == "npy":
            np.save(args.out / f"{path.stem}_depth.npy", depth.numpy())
        else:
            metadata = {"source": str(path), "model": str(args.model)}
            save_file({"depth": depth.contiguous()}, str(args.out / f"{path.stem}_depth.safetensors"), metadata)
        print(
            f"{path.name}: depth {depth.min().item():.3g} .. {depth.max().item():.3g} (median "
            f"{depth.median().item():.3g})",
            file=sys.stderr,
        )
    print(f"Wrote depth of {len(predictor.paths)} image(s) to {args.out}", file=sys.stderr)
    return 0


def run_segment(args: argparse.Namespace) -> int:
    """The `segment` command: see `_add_segment_parser`."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForSemanticSegmentation

    if not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}.")
    predictor = _DensePredictor(args, AutoModelForSemanticSegmentation, "semantic-segmentation")
    id2label = getattr(predictor.model.config, "id2label", None) or {}
    for path in tqdm(predictor.paths, desc="segment", unit="image"):
        image = _read_image(path)
        output = predictor.predict(path, image)
        if getattr(output, "logits", None) is None:
            raise CliError(f"the model returned {type(output).__name__} without `logits`.")
        num_labels = output.logits.shape[1]
        sizes = [(image.height, image.width)]
        labels = predictor.processor.post_process_semantic_segmentation(output, target_sizes=sizes)[0].cpu().numpy()
        _write_label_map(args.out, path, image, labels, num_labels, id2label, args.alpha)
    print(f"Wrote segmentation of {len(predictor.paths)} image(s) to {args.out}", file=sys.stderr)
    return 0


def _write_label_map(
    out: Path, path: Path, image: Image.Image, labels: np.ndarray, num_labels: int, id2label: dict, alpha: float
) -> None:
    """Write OUT/<stem>_mask.png (class indices; a palette PNG up to 256 classes, else 16-bit) and
    OUT/<stem>_overlay.png, and print the classes present by area."""
    import numpy as np
    from PIL import Image

    from .viz import label_palette, segmentation_overlay

    palette = label_palette(num_labels)
    if num_labels <= 256:
        mask = Image.fromarray(labels.astype(np.uint8))
        mask.putpalette(palette.reshape(-1).tolist())  # mode L -> P: the values stay the class indices
    else:
        mask = Image.fromarray(labels.astype(np.uint16))
    mask.save(out / f"{path.stem}_mask.png")
    segmentation_overlay(image, labels, alpha=alpha, palette=palette, ignore_index=None).save(
        out / f"{path.stem}_overlay.png"
    )
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)
    summary = ", ".join(f"{id2label.get(int(ids[i]), int(ids[i]))} {counts[i] / labels.size:.0%}" for i in order)
    print(f"{path.name}: {summary}", file=sys.stderr)


# -- segment-text ------------------------------------------------------------------------------------------------------


def _add_segment_text_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment-text",
        help="open-vocabulary segmentation with a dino.txt model: label every pixel with one of free-text classes",
        description=(
            "For each IMAGE write OUT/<stem>_mask.png (the index of the winning --labels entry per pixel, at the "
            "image's size, as a palette PNG) and OUT/<stem>_overlay.png (the image blended with the class colours), "
            "by dino.txt's official procedure: prompt-template averaging of the patch-aligned text embeddings, "
            "sliding windows with overlap averaging, per-pixel argmax."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (anything PIL reads)")
    parser.add_argument("--labels", "-l", required=True, help='comma-separated class names, e.g. "cat,grass,sky"')
    parser.add_argument(
        "--model", "-m", required=True,
        help="a saved dino.txt folder (model, image processor and tokenizer), e.g. from `dinov3-hf convert` of the "
        "official checkpoint or from training/train_dinotxt.py",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--size", type=int, default=512, help="shorter image side before the model (default 512)")
    parser.add_argument("--window", type=int, default=384, help="sliding window side in pixels (default 384)")
    parser.add_argument("--stride", type=int, default=192, help="sliding window stride in pixels (default 192)")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the class colours in the overlay, 0..1 (default 0.5)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
    parser.set_defaults(func=run_segment_text)


def run_segment_text(args: argparse.Namespace) -> int:
    """The `segment-text` command: see `_add_segment_text_parser`."""
    from tqdm.auto import tqdm
    from transformers import pipeline

    from .models.dinotxt import Dinov3HfDinoTxtConfig
    from .pipelines import OPEN_VOCAB_SEGMENTATION_TASK
    from .viz import rgb_image

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels:
        raise CliError(f'--labels needs at least one class name, e.g. --labels "cat,grass,sky"; got {args.labels!r}.')
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}.")
    if args.size < 1 or args.window < 1 or not 1 <= args.stride <= args.window:
        raise CliError(
            f"need --size >= 1, --window >= 1 and 1 <= --stride <= --window; got {args.size}, {args.window}, "
            f"{args.stride}."
        )
    paths = _check_image_paths(args.images)
    _check_output_folder(args.out)
    _check_model_kind(str(args.model), "dino.txt", (Dinov3HfDinoTxtConfig,))
    try:
        segmenter = pipeline(OPEN_VOCAB_SEGMENTATION_TASK, model=str(args.model), device=args.device)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CliError(f"cannot load dino.txt model {str(args.model)!r}: {err}") from err
    args.out.mkdir(parents=True, exist_ok=True)
    names = dict(enumerate(labels))
    for path in tqdm(paths, desc="segment-text", unit="image"):
        image = rgb_image(_read_image(path))
        result = segmenter(image, candidate_labels=labels, shortest_edge=args.size, window=args.window, stride=args.stride)
        label_map = result["segmentation"].cpu().numpy()
        _write_label_map(args.out, path, image, label_map, len(labels), names, args.alpha)
    print(f"Wrote open-vocabulary segmentation of {len(paths)} image(s) to {args.out}", file=sys.stderr)
    return 0


# -- attention ---------------------------------------------------------------------------------------------------------


def _add_attention_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attention",
        help="draw a ViT's last-layer CLS -> patch attention of every head over the image",
        description=(
            "For each IMAGE write OUT/<stem>_attention_head<i>.png, one per head of the last block: the attention "
            "probabilities of the CLS token on the patch tokens, min-max scaled per head, coloured and blended over "
            "the image at its original size."
        ),
    )
    _add_backbone_arguments(parser, "a ViT checkpoint in any format")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"resize the shorter image side to SIZE pixels; default {DEFAULT_GRID} x the patch size",
    )
    parser.add_argument("--alpha", type=float, default=0.6, help="opacity of the attention colours, 0..1 (default 0.6)")
    parser.add_argument("--cmap", default="turbo", help="colormap: turbo (default), gray, or any matplotlib name")
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    parser.set_defaults(func=run_attention)


def run_attention(args: argparse.Namespace) -> int:
    """The `attention` command: see `_add_attention_parser`."""
    import torch

    from .models.vit import Dinov3HfViTModel
    from .viz import attention_overlay

    if args.size is not None and args.size < 1:
        raise CliError(f"--size must be a positive number of pixels, got {args.size}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}.")
    paths = _check_image_paths(args.images)
    _check_output_folder(args.out)
    model, processor, _ = _load_model_and_processor(args.model, args.arch)
    if not isinstance(model, Dinov3HfViTModel):
        raise CliError(f"`attention` needs a ViT backbone, but the model is a {type(model).__name__}.")
    model.set_attn_implementation("eager")  # the implementation that returns the probabilities
    model.eval()
    patch = model.config.patch_size
    size = args.size or DEFAULT_GRID * patch
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        image = _read_image(path)
        pixel_values = _pixel_values(processor, image, path, size, processor.max_tokens).to(model.dtype)
        with torch.inference_mode():
            attention = model(pixel_values=pixel_values, output_attentions=True).attentions[-1][0]
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        cls_to_patches = attention[:, 0, model.num_prefix_tokens :].reshape(-1, *grid)
        for head, heatmap in enumerate(cls_to_patches):
            try:
                overlay = attention_overlay(image, heatmap, alpha=args.alpha, cmap=args.cmap)
            except ValueError as err:  # an unknown --cmap
                raise CliError(str(err)) from err
            overlay.save(args.out / f"{path.stem}_attention_head{head}.png")
    print(f"Wrote last-layer attention maps of {len(paths)} image(s) to {args.out}", file=sys.stderr)
    return 0


# -- match -------------------------------------------------------------------------------------------------------------

MATCH_FORMATS = ("json", "safetensors")
MATCH_REFINEMENTS = ("argmax", "soft-argmax")  # `dinov3_hf.dense.correspondence.REFINEMENTS`, spelt out as above


def _add_match_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "match",
        help="dense correspondences between two images from patch features: a picture of the matches and the matches",
        description=(
            "Match the patch features of two images A and B (mutual nearest neighbours by cosine similarity, with an "
            "optional Lowe ratio test and sub-patch refinement) and write OUT/<A>_<B>_matches.png, A and B side by "
            "side with one line per match coloured by its score (turbo: blue = lowest, red = highest of the drawn "
            "matches), and OUT/<A>_<B>_matches.json (or .safetensors): keypoints0, keypoints1 as (x, y) pixels of "
            "each original image (pixel centres at integers) and matching_scores (cosine similarity), best first."
        ),
    )
    _add_backbone_arguments(parser, "checkpoint in any format")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"resize the shorter side of each image to SIZE pixels; default {DEFAULT_GRID} x the model's stride",
    )
    parser.add_argument(
        "--ratio", type=float, default=None, help="Lowe's ratio test: keep a match if best / second-best distance < R"
    )
    parser.add_argument("--max-matches", type=int, default=None, help="keep the N best-scoring matches (default all)")
    parser.add_argument(
        "--refine",
        choices=MATCH_REFINEMENTS,
        default=None,
        help="move each match in B to sub-patch precision on features upsampled 4x (default: patch centres)",
    )
    parser.add_argument("--format", choices=MATCH_FORMATS, default="json", help="file format of the matches")
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
    parser.set_defaults(func=run_match)


def run_match(args: argparse.Namespace) -> int:
    """The `match` command: see `_add_match_parser`."""
    import json

    from safetensors.torch import save_file

    from .dense import draw_matches, match_images, top_matches
    from .pretrained_models import DEFAULT_MODEL

    if len(args.images) != 2:
        raise CliError(f"`match` takes exactly two images, A and B; got {len(args.images)}.")
    if args.size is not None and args.size < 1:
        raise CliError(f"--size must be a positive number of pixels, got {args.size}.")
    if args.ratio is not None and not 0.0 < args.ratio <= 1.0:
        raise CliError(f"--ratio must be in (0, 1], e.g. 0.9; got {args.ratio}.")
    if args.max_matches is not None and args.max_matches < 1:
        raise CliError(f"--max-matches must be a positive number of matches, got {args.max_matches}.")
    path_a, path_b = (_check_image_paths([path])[0] for path in args.images)  # A and B may share a name
    _check_output_folder(args.out)
    model, processor, weights = _load_backbone_on_device(args)
    size = args.size or DEFAULT_GRID * model.config.output_stride
    image_a, image_b = _read_image(path_a), _read_image(path_b)
    try:
        matches = match_images(model, processor, image_a, image_b, size=size, ratio=args.ratio, refine=args.refine)
    except ValueError as err:
        raise CliError(f"cannot match {path_a} and {path_b}: {err}") from err
    matches = top_matches(matches, args.max_matches)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{path_a.stem}_{path_b.stem}_matches"
    draw_matches(image_a, image_b, matches).save(args.out / f"{stem}.png")
    metadata = {
        "image_a": str(path_a),
        "image_b": str(path_b),
        "model": args.model or f"{DEFAULT_MODEL} (shipped default)",
        "weights": weights,
        "size": size,
        "ratio": args.ratio,
        "refine": args.refine,
    }
    if args.format == "json":
        content = {**metadata, **{name: value.tolist() for name, value in matches.items()}}
        (args.out / f"{stem}.json").write_text(json.dumps(content))
    else:
        tensors = {name: value.contiguous() for name, value in matches.items()}
        save_file(tensors, str(args.out / f"{stem}.safetensors"), {key: str(v) for key, v in metadata.items()})
    scores = matches["matching_scores"]
    summary = f", scores {scores.min().item():.3f} .. {scores.max().item():.3f}" if len(scores) else ""
    print(f"{len(scores)} matches{summary}; wrote {stem}.png and {stem}.{args.format} to {args.out}", file=sys.stderr)
    return 0


# -- propagate ---------------------------------------------------------------------------------------------------------

# `dinov3_hf.dense.propagation` defaults (Meta's notebooks/segmentation_tracking.ipynb), spelt out as above
PROPAGATION_DEFAULTS = {"context": 7, "topk": 5, "radius": 12.0, "temperature": 0.2, "short_side_tokens": 60}
PROPAGATION_NEIGHBOURHOODS = ("circle", "square")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _add_propagate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "propagate",
        help="video object segmentation: propagate the first frame's mask through a video by patch-feature similarity",
        description=(
            "Propagate --mask (frame 0's label map) through the frames of SOURCE by the label propagation with which "
            "DINOv3 is evaluated on DAVIS-2017: each frame's patches take a softmax-weighted vote of the top-k most "
            "similar patches, within --radius patches, of frame 0 and the last --context frames. Write "
            "OUT/masks/<frame>.png for every frame (label ids as a palette PNG: the mask's own palette, else black "
            "background and distinct colours) and OUT/overlay.gif (the frames with the objects coloured)."
        ),
    )
    parser.add_argument(
        "source", type=Path, metavar="FRAMES_OR_VIDEO",
        help=f"a folder of frames ({', '.join(FRAME_SUFFIXES)}; in natural name order) or a video file (needs PyAV: "
        "pip install 'dinov3-hf[video]')",
    )
    parser.add_argument(
        "--mask", required=True, type=Path,
        help="frame 0's label map at the frames' size: a palette or grayscale PNG of ids (0 = background), as DAVIS",
    )
    parser.add_argument(
        "--model", "-m",
        help="backbone: a dinov3_hf or transformers folder, a Hub id, or an official .pth (with --arch). Default: the "
        "small ViT shipped with dinov3-hf (model_cards/dinov3_hf_fmnist_vit.md)",
    )
    parser.add_argument("--arch", help="preset of an official .pth checkpoint given as --model, e.g. vitl16")
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    defaults = PROPAGATION_DEFAULTS
    parser.add_argument(
        "--size", type=int, default=None,
        help=f"shorter frame side before the model, in pixels; default {defaults['short_side_tokens']} x the model's "
        "stride (960 for a ViT/16, as Meta's notebook)",
    )
    parser.add_argument(
        "--context", type=int, default=defaults["context"],
        help=f"previous frames attended to besides frame 0 (default {defaults['context']})",
    )
    parser.add_argument(
        "--topk", type=int, default=defaults["topk"], help=f"source patches kept per patch (default {defaults['topk']})"
    )
    parser.add_argument(
        "--radius", type=float, default=defaults["radius"],
        help=f"neighbourhood radius in patches (default {defaults['radius']:g})",
    )
    parser.add_argument(
        "--temperature", type=float, default=defaults["temperature"],
        help=f"softmax temperature on cosine similarities (default {defaults['temperature']:g})",
    )
    parser.add_argument(
        "--neighbourhood", choices=PROPAGATION_NEIGHBOURHOODS, default="circle",
        help="circle (Euclidean, Meta's notebook; default) or square (Chebyshev, DINO)",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames (default all)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the GIF (default the video's, else 10)")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the object colours in the overlay, 0..1 (default 0.5)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
    parser.set_defaults(func=run_propagate)


def _natural_key(path: Path) -> list:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _read_frames(source: Path, max_frames: int | None) -> tuple[list[Image.Image], list[str], float | None]:
    """(RGB frames, output names, frame rate or None) of a folder of images or a video file."""
    from itertools import islice

    from .viz import rgb_image

    if source.is_dir():
        paths = sorted((p for p in source.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
        if not paths:
            raise CliError(f"the folder {source} holds no frames ({', '.join(FRAME_SUFFIXES)} files).")
        paths = paths[:max_frames]
        return [rgb_image(_read_image(p)) for p in paths], [p.stem for p in paths], None
    if not source.is_file():
        raise CliError(f"FRAMES_OR_VIDEO {source} does not exist; pass a folder of frames or a video file.")
    try:
        import av
    except ImportError as err:
        raise CliError(f"reading the video {source} needs PyAV: pip install 'dinov3-hf[video]' (or av).") from err
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise CliError(f"{source} has no video stream.")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            frames = [frame.to_image() for frame in islice(container.decode(stream), max_frames)]
    except av.FFmpegError as err:
        raise CliError(f"cannot read the video {source}: {err}") from err
    if not frames:
        raise CliError(f"the video {source} has no frames.")
    return frames, [f"{i:05d}" for i in range(len(frames))], rate


def _read_label_mask(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(label ids [H, W], the PNG's palette [256, 3] or None) of a palette or grayscale mask."""
    import numpy as np

    image = _read_image(path)
    if image.mode not in ("P", "L", "1", "I", "I;16"):
        raise CliError(
            f"--mask {path} is a {image.mode} image; give the label ids as a palette (P) or grayscale (L) PNG, as "
            "DAVIS annotations are."
        )
    palette = None
    if image.mode == "P":
        colours = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: len(colours)] = colours[:256]
    return np.asarray(image).astype(np.int64), palette


def run_propagate(args: argparse.Namespace) -> int:
    """The `propagate` command: see `_add_propagate_parser`."""
    import numpy as np
    from PIL import Image

    from .dense.propagation import propagate_video
    from .viz import label_palette, segmentation_overlay

    if args.context < 0 or args.topk < 1 or args.radius < 0 or not args.temperature > 0:
        raise CliError(
            "need --context >= 0, --topk >= 1, --radius >= 0 and --temperature > 0; got "
            f"{args.context}, {args.topk}, {args.radius}, {args.temperature}."
        )
    for option, value in (("--size", args.size), ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            raise CliError(f"{option} must be positive, got {value}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}.")
    if args.fps is not None and not args.fps > 0:
        raise CliError(f"--fps must be positive, got {args.fps}.")
    if not args.mask.is_file():
        raise CliError(f"--mask {args.mask} not found.")
    _check_output_folder(args.out)
    frames, names, rate = _read_frames(args.source, args.max_frames)
    mask, palette = _read_label_mask(args.mask)
    if mask.shape != (frames[0].height, frames[0].width):
        raise CliError(
            f"--mask {args.mask} is {mask.shape[1]} x {mask.shape[0]} but the frames are {frames[0].width} x "
            f"{frames[0].height}; give frame 0's mask at the frames' size."
        )
    model, processor, _ = _load_backbone_on_device(args)
    try:
        result = propagate_video(
            model, processor, frames, mask, size=args.size, context=args.context, topk=args.topk,
            radius=args.radius, temperature=args.temperature, neighbourhood=args.neighbourhood,
        )
    except ValueError as err:
        raise CliError(f"cannot propagate through {args.source}: {err}") from err

    if palette is None:
        palette = label_palette(256)
        palette[0] = 0  # the background black, as DAVIS's palette
    if int(result.labels.max()) > 255:
        raise CliError(f"--mask {args.mask} holds ids above 255, which a palette PNG cannot store.")
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    overlays = []
    for frame, name, labels in zip(frames, names, result.masks.numpy(), strict=True):
        png = Image.fromarray(labels.astype(np.uint8))
        png.putpalette(palette.reshape(-1).tolist())
        png.save(args.out / "masks" / f"{name}.png")
        overlays.append(segmentation_overlay(frame, labels, alpha=args.alpha, palette=palette, ignore_index=0))
    duration = round(1000 / (args.fps or rate or 10.0))
    overlays[0].save(args.out / "overlay.gif", save_all=True, append_images=overlays[1:], duration=duration, loop=0)
    areas = ", ".join(
        f"object {int(i)} {float((result.masks[-1] == i).float().mean()):.1%}" for i in result.labels if i != 0
    )
    print(f"Wrote {len(frames)} masks and overlay.gif to {args.out} (last frame: {areas or 'no object'})",
          file=sys.stderr)
    return 0


# -- export ------------------------------------------------------------------------------------------------------------


def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX with dynamic batch, height and width",
        description=(
            "Export MODEL to DST/model.onnx with the input `pixel_values` [batch, 3, height, width] (any multiple "
            "of the model's stride) and one output per field of the model output (e.g. last_hidden_state, "
            "pooler_output, logits, predicted_depth); a dino.txt model gives DST/image_model.onnx (image_embeds, "
            "patch_tokens) and DST/text_model.onnx (input_ids [batch, sequence] -> text_embeds, not normalised). "
            "The model's image processor (and a dino.txt tokenizer) is saved to DST as well. Needs the onnx extra: "
            "pip install 'dinov3-hf[onnx]'."
        ),
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=(
            "a backbone, task-model or dino.txt checkpoint: a dinov3_hf or transformers folder, a Hub id, an official "
            f".pth (with --arch), or {SHIPPED_MODEL} for the small ViT shipped with dinov3-hf"
        ),
    )
    parser.add_argument("dst", type=Path, metavar="DST", help="output folder (created if missing)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="export format (default onnx)")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and outputs (the input stays float32)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--arch", help="preset of an official .pth checkpoint given as MODEL, e.g. vitl16")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """The `export` command: see `_add_export_parser`."""
    from transformers import AutoConfig

    from .export import DINOTXT_TOWERS, check_onnx_installed, export_onnx

    if args.opset is not None and args.opset < 1:
        raise CliError(f"--opset must be a positive ONNX opset version, got {args.opset}.")
    try:
        check_onnx_installed()
    except ImportError as err:
        raise CliError(str(err)) from err
    _check_output_folder(args.dst, "DST")
    shipped = args.model == SHIPPED_MODEL and not Path(args.model).exists()
    model_type = None
    if not shipped and not Path(args.model).is_file():
        try:
            model_type = AutoConfig.from_pretrained(args.model).model_type
        except (OSError, ValueError) as err:
            raise CliError(f"cannot load model {args.model!r}: {err}") from err
    head_classes = _head_model_classes()
    if model_type in head_classes:
        model, processor = _load_head_model(args.model, head_classes[model_type])
    else:
        model, processor, _ = _load_model_and_processor(None if shipped else args.model, args.arch)
    towers = DINOTXT_TOWERS if model.config.model_type == "dinov3_hf_dinotxt" else (None,)
    args.dst.mkdir(parents=True, exist_ok=True)
    for tower in towers:
        path = args.dst / (f"{tower}_model.onnx" if tower else "model.onnx")
        try:
            export_onnx(model, path, opset=args.opset, fp16=args.fp16, tower=tower)
        except (RuntimeError, ValueError) as err:
            raise CliError(f"cannot export {args.model}: {err}") from err
        print(f"Wrote {path}", file=sys.stderr)
    if processor is not None:
        processor.save_pretrained(args.dst)
    return 0


def _head_model_classes() -> dict[str, type[PreTrainedModel]]:
    """Checkpoint model type -> class, for the task and dino.txt models (any other checkpoint is a backbone)."""
    from .models.dinotxt import Dinov3HfDinoTxtModel
    from .models.heads import (
        Dinov3HfForDepthEstimation,
        Dinov3HfForImageClassification,
        Dinov3HfForSemanticSegmentation,
    )

    classes = (
        Dinov3HfForImageClassification,
        Dinov3HfForSemanticSegmentation,
        Dinov3HfForDepthEstimation,
        Dinov3HfDinoTxtModel,
    )
    return {cls.config_class.model_type: cls for cls in classes}


def _load_head_model(name: str, model_class: type[PreTrainedModel]) -> tuple[PreTrainedModel, object | None]:
    """A saved task or dino.txt model and its processor (None when a dino.txt folder has none)."""
    from transformers import AutoProcessor

    try:
        model = model_class.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load model {name!r}: {err}") from err
    if model.config.model_type != "dinov3_hf_dinotxt":
        return model, _load_processor(name, model.config)
    try:
        return model, AutoProcessor.from_pretrained(name)
    except (OSError, ValueError, TypeError):
        print(f"{name} has no dino.txt processor and tokenizer; DST gets the ONNX files only", file=sys.stderr)
        return model, None


# -- entry point -------------------------------------------------------------------------------------------------------

SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_features_parser,
    _add_convert_parser,
    _add_depth_parser,
    _add_segment_parser,
    _add_segment_text_parser,
    _add_attention_parser,
    _add_match_parser,
    _add_propagate_parser,
    _add_export_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dinov3-hf", description="DINOv3 backbones on the Hugging Face stack.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dinov3-hf` with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    from .registration import register_auto_classes  # `dinov3_hf/__init__.py` skips it in the `dinov3-hf` process

    register_auto_classes()
    try:
        return args.func(args)
    except CliError as err:
        print(f"dinov3-hf {args.command}: error: {err}", file=sys.stderr)
        return 1
