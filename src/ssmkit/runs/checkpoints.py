"""The run behind a checkpoint: ``ssmkit eval`` rebuilds a model from the ``run.json`` that
``training.fit`` writes into every checkpoint folder (``step-XXXXXXXX/``) and beside them."""
from __future__ import annotations

import json
from pathlib import Path

from ..training import latest_checkpoint
from ..training.checkpoint import RUN, STATE
from .config import RunConfig


def find_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, its run.json or None) for a ``step-XXXXXXXX`` folder or a folder of them.

    The step's own run.json comes first; the one beside the steps serves checkpoints written
    before fit stored it in each step."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {path}: no such folder")
    step = path if (path / STATE).is_file() else latest_checkpoint(path)
    if step is None:
        raise FileNotFoundError(f"--checkpoint {path}: neither a checkpoint (step-XXXXXXXX with {STATE}) "
                                "nor a folder holding checkpoints")
    for folder in (step, step.parent):
        if (folder / RUN).is_file():
            return step, folder / RUN
    return step, None


def read_run(path: str | Path) -> RunConfig:
    """A ``RunConfig`` from a run.json file; errors name the file."""
    path = Path(path)
    try:
        return RunConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected the {RUN} that training.fit writes") from None
    except (ValueError, TypeError, KeyError) as e:
        raise type(e)(f"{path}: {e}") from None
