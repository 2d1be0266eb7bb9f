"""Run by test_ddp.py: `python ddp_script.py OUT`; Lightning starts the second rank by re-running this file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lfi.store.shards import InteractionStore  # noqa: E402
from lfi.train.engine import train  # noqa: E402
from tests.train.conftest import tiny_config, tiny_data  # noqa: E402


def main(out: Path) -> None:
    cfg = tiny_config(out, epochs=2, trainer={"devices": 2, "strategy": "ddp"})
    run = train(cfg, tiny_data(), InteractionStore(out / "store"))
    trainer = run.module.trainer
    checksum = sum(float(p.double().sum()) for p in run.module.model.parameters())
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "checksum": checksum,
        "global_step": trainer.global_step,
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
