"""Where the zoo's committed files live.

Everything is resolved relative to this file rather than through the hub or the working directory,
so an installed package finds its corpus and models offline from any current directory.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"  # python/spectra/assets
CORPUS_FILE = ASSETS_DIR / "corpus" / "kjv.txt.xz"
MODELS_DIR = ASSETS_DIR / "models"
