"""Model cards: one per official variant, generated from the presets and up to date."""

import subprocess
import sys
from pathlib import Path

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
