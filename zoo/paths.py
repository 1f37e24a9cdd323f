"""Where the project's own files are: the Hydra configs and the weights next to the package."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
