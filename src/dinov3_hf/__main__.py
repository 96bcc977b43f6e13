"""`python -m dinov3_hf ...` runs the `dinov3-hf` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
