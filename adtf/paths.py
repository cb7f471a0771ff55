"""Where adtf keeps its caches and where it looks for the shared datasets."""
import os
from pathlib import Path

from adtf.errors import AdtfError


def expand_user(path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; left as written where no such user exists (as a shell
    leaves it), so that the caller's "not found" names it, instead of pathlib's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def adtf_home() -> Path:
    """Cache root: ``$ADTF_HOME`` or ``~/.keras/adtf`` (converted weights, synthetic data)."""
    root = os.environ.get("ADTF_HOME")
    path = expand_user(root) if root else expand_user(os.environ.get("KERAS_HOME", "~/.keras")) / "adtf"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only or missing HOME on a locked-down machine
        raise AdtfError(f"adtf's cache folder {path} cannot be made ({error.strerror or error}): set ADTF_HOME to "
                        f"a writable folder (converted weights and the synthetic sets are kept there)") from error
    return path


def datasets_root() -> Path:
    """Folder holding the shared datasets: ``$ADTF_DATASETS`` or ``../shared/datasets`` next to the repo."""
    root = os.environ.get("ADTF_DATASETS")
    if root:
        return expand_user(root)
    for base in (Path(__file__).resolve().parents[2], Path.cwd().parent):
        if (base / "shared" / "datasets").is_dir():
            return base / "shared" / "datasets"
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


RUN_FILES = ("run.json", "model.keras")  # what adtf-fit leaves in a run folder and nothing else writes


def run_files(folder) -> list:
    """The names of ``RUN_FILES`` in ``folder``: non-empty where it is an adtf run (a place no other output may go)."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]
