"""The run folder: one format for every task, written by `lfi train` and read by `lfi eval`, `lfi viz`,
`lfi curves` and `lfi report` through `load_run`.

    runs/<experiment>/
        config.yaml          the resolved config (`lfi train config.yaml` runs it again)
        metrics.csv          one row per epoch: epoch, step, train/{task,align,kd,aux,loss}, val/{...} (epochs
                             that validated), lr, wall_s
        metrics.json         final metrics: task, teacher, variant, seed, classes, epochs, best_val and
                             best_epoch (on the validation split), test (each test set's metrics), timings
        eval_metrics.json    written by `lfi eval`: every evaluation (overrides, weights, test) and `test`,
                             the test sets of all of them (a later evaluation of a set wins)
        model.safetensors    the final student weights (no pickle)
        checkpoints/         last.ckpt (every trainer.checkpoint_every_n_epochs epochs and after the last; full
                             state for --resume), best-epoch=NNN.ckpt (weights only)
        tb/                  TensorBoard events (per-step losses, learning rates, map figures)
        .lock                held (flock) by the one `lfi train` writing the folder; holds its pid

Result files are written whole or not at all (`lfi.files.atomic_write`): metrics.json exists only complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfi.config import Config, load_config
from lfi.files import exclusive_lock


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "eval_metrics.json"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def finished(root: str | Path) -> bool:
    """A run is finished once it wrote metrics.json (after its test evaluation)."""
    return RunFiles(root).metrics.is_file()


def check_run_folder(files: RunFiles, resume: bool) -> None:
    """Refuse to train into a folder whose run would be lost: a finished run (metrics.json) always, an
    unfinished one with checkpoints/last.ckpt unless resuming. A folder without a checkpoint (a run killed
    before its first one, or only a sweep's train.log) holds nothing to resume and is started afresh."""
    if finished(files.root):
        what = "--resume has nothing to continue" if resume else "training again would overwrite it"
        raise FileExistsError(
            f"{files.root} is finished (metrics.json exists): {what}; "
            "train into a new experiment name to run it again"
        )
    if not resume and files.last_checkpoint.is_file():
        raise FileExistsError(
            f"{files.root} holds an unfinished run ({files.last_checkpoint}): continue it with "
            "`lfi train ... --resume`, or train into a new experiment name"
        )


@contextlib.contextmanager
def hold_run_folder(files: RunFiles) -> Iterator[None]:
    """One writer per run folder: hold `<run>/.lock` for the block; a second `lfi train` into the same
    folder (e.g. a sweep run again while the first one's trainer still runs) is refused at once, naming it."""
    busy = f"{files.root} is being written by another `lfi train`; wait for it to end or stop it"
    with exclusive_lock(files.lock, busy):
        yield


@dataclass
class Run:
    """A run folder, read: its config, final metrics (empty while it trains), per-epoch rows and the test sets
    of its later evaluations (`lfi eval`, eval_metrics.json's `test`)."""

    path: Path
    cfg: Config
    metrics: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)
    evaluated: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.path)

    def curve(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) of a metrics.csv column, e.g. 'val/acc1', over the epochs that logged it."""
        return [(int(r["epoch"]), r[key]) for r in self.epochs if key in r]


def load_run(path: str | Path) -> Run:
    """Read a run folder; errors name the missing or damaged file."""
    files = RunFiles(path)
    if not files.config.is_file():
        raise FileNotFoundError(f"{files.root}: no config.yaml: not a run folder of `lfi train`")
    # a run that exists is read wherever it lies: the output_dir roots only bound where runs are written
    cfg = load_config(files.config, ["output_dir_allow_outside=true"])  # a ConfigError names the file and key
    metrics = _read_json(files.metrics, f"re-run `lfi eval {files.root}`")
    evaluated = _read_json(files.eval_metrics, f"re-run `lfi eval {files.root}`").get("test", {})
    return Run(files.root, cfg, metrics, read_epochs(files.metrics_csv), evaluated)


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON file's object, {} when the file does not exist; a damaged file is named with `fix`."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: damaged JSON ({error}); {fix}") from None


def add_evaluation(path: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    """eval_metrics.json at `path` with `evaluation` ({overrides, weights, test}) appended to its evaluations;
    its `test` holds the test sets of every evaluation (a set evaluated again: the latest). A file of one
    evaluation from before this format counts as the first."""
    old = _read_json(path, "delete it and evaluate again")
    evaluations = old.get("evaluations", [old] if old else [])
    tests: dict[str, Any] = {}
    for e in [*evaluations, evaluation]:
        tests |= {name: m for name, m in e.get("test", {}).items() if isinstance(m, dict)}
    return {"run": evaluation.get("run"), "evaluations": [*evaluations, evaluation], "test": tests}


def read_epochs(path: Path) -> list[dict[str, float]]:
    """metrics.csv rows with numbers as floats (empty cells dropped); [] when the file does not exist."""
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def load_model(run: Run, weights: str | Path | None = None, device: Any = "cpu") -> Any:
    """The run's student with its trained weights (model.safetensors, or `weights`), in eval mode."""
    from safetensors.torch import load_file

    from lfi.train.build import build_model

    path = Path(weights) if weights else run.files.weights
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path} (a finished `lfi train` run writes model.safetensors)")
    classes = run.metrics.get("classes")
    if not classes:
        raise ValueError(f"{run.files.metrics}: no 'classes' recorded; is the run finished?")
    cfg = run.cfg
    cfg.model.checkpoint = None  # the run's own weights replace any initial checkpoint
    cfg.model.freeze_backbone = False
    model = build_model(cfg, len(classes))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()
