"""Draw the training diagnostics of an SSL run (losses, target entropy, prototype usage, score spread, student-teacher
agreement, CLS spread) to a PNG.

    python training/plot_diagnostics.py runs/fashion_mnist_cpu                 # -> runs/fashion_mnist_cpu/diagnostics.png
    python training/plot_diagnostics.py runs/fashion_mnist_cpu/checkpoint-500 --out curves.png

The run folder's `log_history.json` (written at the end of a run) or a checkpoint's `trainer_state.json` (the last
checkpoint of a run folder that has no `log_history.json`) is read.
"""

from __future__ import annotations

import sys

from dinov3_hf.ssl.pretraining import plot_main

if __name__ == "__main__":
    sys.exit(plot_main())
