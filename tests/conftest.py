"""Shared pytest set-up: makes the lab helpers (deploy/lab/clusterlab) importable."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy" / "lab"))
