"""Model cards: one per official variant, generated from the presets and up to date, each with Hub metadata that
parses with huggingface_hub's ModelCard and passes the local Hub server's metadata checks."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hub.hub_server import validate_metadata
from huggingface_hub import ModelCard

from dinov3_hf.convert import FAMILIES

CARDS = Path(__file__).parents[1] / "model_cards"


def test_one_card_per_variant_and_up_to_date():
    presets = {p for family in FAMILIES for p in family.presets}
    official = {p.stem for p in CARDS.glob("*.md") if not p.stem.startswith("dinov3_hf_")}  # dinov3_hf_*: ours
    assert official == presets
    result = subprocess.run([sys.executable, str(CARDS / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    card = (CARDS / "vit7b16.md").read_text()
    for section in ("## Architecture", "## Training data", "## Licence", "## Intended use", "## Loading with dinov3_hf"):
        assert section in card
    assert "6,716,043,264" in card and "DINOv3 License" in card


def meta_figures(card: ModelCard) -> dict[str, float]:
    """The model-index accuracies of a card, by metric name."""
    return {result.metric_name: result.metric_value for result in card.data.eval_results or []}


@pytest.mark.parametrize("path", sorted(CARDS.glob("*.md")), ids=lambda p: p.stem)
def test_every_card_has_valid_hub_metadata(path):
    card = ModelCard.load(path)
    assert card.data.library_name == "dinov3-hf"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.license is not None
    assert validate_metadata(path.read_text()) == []  # the local Hub server's checks (tests/hub/hub_server.py)
    if path.stem.startswith("dinov3_hf_"):  # trained here: the code's licence (setup.cfg)
        code_licence = re.search(r"^license = ([\w.-]+)", (CARDS.parent / "setup.cfg").read_text(), re.M)[1]
        assert card.data.license == code_licence.lower() and card.data.base_model is None
    else:  # Meta's weights
        assert (card.data.license, card.data.license_name) == ("other", "dinov3-license")
        assert card.data.license_link == "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"
        if card.data.base_model is not None:  # the repo the card's own loading example converts
            assert f'from_pretrained("{card.data.base_model}")' in card.text
        else:
            assert "no transformers-format release on the Hub" in card.text


def test_trained_model_card_reports_its_table_in_model_index():
    card = ModelCard.load(CARDS / "dinov3_hf_fmnist_vit.md")
    row = next(line for line in card.text.splitlines() if line.startswith("| **this model**"))
    knn, probe = (float(x) for x in re.findall(r"\*\*(0\.\d+)\*\*", row))
    assert meta_figures(card) == {"kNN accuracy (k = 20, CLS)": knn, "linear probe accuracy (CLS)": probe}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
