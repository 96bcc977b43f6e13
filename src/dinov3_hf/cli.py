"""Command line interface: `dinov3-hf COMMAND ...` (also `python -m dinov3_hf COMMAND ...`).

Each subcommand is one `_add_<name>_parser(subparsers)` function, listed in `SUBCOMMANDS`, that registers its
arguments and sets `func=run_<name>`; `run_<name>(args) -> int` does the work and raises `CliError` for user errors.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import IMAGE_PROCESSOR_NAME
from transformers.utils.hub import cached_file

from .convert import FORMATS, CheckpointError, convert_checkpoint, load_model
from .pretrained_models import DEFAULT_MODEL, default_model_path
from .processing import Dinov3HfImageProcessor
from .viz import pca_image

DEFAULT_GRID = 28  # default --size: 28 output tokens along the shorter image side


class CliError(Exception):
    """A user-facing error: printed as `dinov3-hf <command>: error: <message>`, exit status 1."""


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
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (anything PIL reads)")
    parser.add_argument(
        "--model",
        "-m",
        help=(
            "checkpoint in any format: a dinov3_hf or transformers folder, a Hub id, or an official .pth (with "
            "--arch). Default: the small ViT shipped with dinov3-hf, pretrained with this package on Fashion-MNIST "
            "(model_cards/dinov3_hf_fmnist_vit.md)"
        ),
    )
    parser.add_argument("--arch", help="preset of an official .pth checkpoint given as --model, e.g. vitl16")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=(
            "resize the shorter image side to SIZE pixels (snapped to a multiple of the patch size); default: "
            f"{DEFAULT_GRID} output tokens, i.e. {DEFAULT_GRID} x the model's stride (448 for a ViT/16)"
        ),
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda; default cpu")
    parser.set_defaults(func=run_features)


def run_features(args: argparse.Namespace) -> int:
    """The `features` command: see `_add_features_parser`."""
    if args.size is not None and args.size < 1:
        raise CliError(f"--size must be a positive number of pixels, got {args.size}.")
    paths = _check_image_paths(args.images)
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise CliError(f"invalid --device {args.device!r}: {err}") from err

    model, processor, weights = _load_model_and_processor(args.model, args.arch)
    try:
        model.to(device).eval()
    except (RuntimeError, AssertionError) as err:  # torch raises AssertionError when built without CUDA
        raise CliError(f"cannot use --device {args.device!r}: {err}") from err
    model_name = args.model or f"{DEFAULT_MODEL} (shipped default)"
    size = args.size or DEFAULT_GRID * model.config.output_stride
    args.out.mkdir(parents=True, exist_ok=True)

    for path in tqdm(paths, desc="features", unit="image"):
        image = _read_image(path)
        try:
            inputs = processor(image, size={"shortest_edge": size}, do_center_crop=False, return_tensors="pt")
        except ValueError as err:
            raise CliError(f"cannot preprocess {path}: {err}") from err
        pixel_values = inputs["pixel_values"].to(device=device, dtype=model.dtype)
        with torch.inference_mode():
            output = model(pixel_values=pixel_values)
        tensors, grid = _features_of(output)
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
        }
        save_file(tensors, str(args.out / f"{path.stem}.safetensors"), metadata=metadata)
        pca_image(tensors["patch_tokens"], grid, size=image.size).save(args.out / f"{path.stem}_pca.png")

    print(f"Wrote features of {len(paths)} image(s) to {args.out}", file=sys.stderr)
    return 0


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


def _read_image(path: Path) -> Image.Image:
    """The image at `path`, fully decoded and turned upright per its EXIF orientation."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CliError(f"cannot read image {path}: {err}") from err


def _load_model_and_processor(
    name: str | None, arch: str | None = None
) -> tuple[PreTrainedModel, Dinov3HfImageProcessor, str]:
    """(model, processor, "shipped" | "loaded"); without `name`, the package's shipped default model."""
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


def _features_of(output: object) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
    """`cls` [D], `registers` [R, D] and `patch_tokens` [h, w, D] of the first image in a model output, and (h, w)."""
    fields = ("pooler_output", "register_tokens", "patch_tokens", "grid_size")
    missing = [name for name in fields if getattr(output, name, None) is None]
    if missing:
        raise CliError(
            f"the model returned {type(output).__name__} without {', '.join(missing)}; `features` needs a dinov3_hf "
            "model (Dinov3HfViTModel or Dinov3HfConvNextModel)."
        )
    h, w = int(output.grid_size[0]), int(output.grid_size[1])
    tensors = {
        "cls": output.pooler_output[0],
        "registers": output.register_tokens[0],
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
    parser.add_argument("--to", choices=FORMATS, default="dinov3_hf", help="target format (default dinov3_hf)")
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """The `convert` command: see `_add_convert_parser`."""
    try:
        out = convert_checkpoint(args.src, args.dst, arch=args.arch, to=args.to)
    except CheckpointError as err:
        raise CliError(str(err)) from err
    print(f"Wrote {args.to} checkpoint to {out}", file=sys.stderr)
    return 0


# -- entry point -------------------------------------------------------------------------------------------------------

SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_features_parser, _add_convert_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dinov3-hf", description="DINOv3 backbones on the Hugging Face stack.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dinov3-hf` with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"dinov3-hf {args.command}: error: {err}", file=sys.stderr)
        return 1
