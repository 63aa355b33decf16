"""Where shipped data (models/, config/) lives: a source checkout or a colcon install."""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The checkout (pip install -e) or ``share/snn_control`` (colcon build)."""
    if (SOURCE_ROOT / "models").is_dir():
        return SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("snn_control"))
    except Exception:  # noqa: BLE001 - no ament index: fall back to the source layout
        return SOURCE_ROOT


def resolve(path: str | Path) -> Path:
    """An absolute path, one relative to the working directory if it exists there, else one
    relative to :func:`data_root` (so ``models/panda_snn`` works from anywhere)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return data_root() / p
