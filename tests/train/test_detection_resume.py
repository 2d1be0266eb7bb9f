"""Detection trains on the same engine as classification, so it resumes the same way: a tiny I-DETR run on
real COCO images killed mid-epoch and resumed from checkpoints/last.ckpt ends with the uninterrupted run's
weights, bit for bit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Subset

from lfi.config import load_config
from lfi.train.data import ExperimentData
from lfi.train.engine import train


class Kill(L.Callback):
    """Raise after step 3 (of 6), mid-epoch: the step checkpoint of step 2 is the last one written."""

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == 3:
            raise RuntimeError("simulated kill")


@pytest.mark.slow
@pytest.mark.data
def test_detection_resumes_bit_exact(shared_data, tmp_path):
    from lfi.data.coco import CocoDetection

    ds = CocoDetection(shared_data / "coco", "val")
    few = Subset(ds, list(range(4)))
    data = ExperimentData(few, few, {"val": few}, list(ds.classes), coco_gt=ds.coco, category_ids=ds.coco_ids)

    def config(name: str):
        return load_config(Path(__file__).resolve().parents[2] / "configs/detection/coco_tiny_cvlm.yaml", [
            "model.size=tiny", "model.num_queries=10", "data.scales=[96]", "data.max_size=128",
            "data.augment=true", "data.batch_size=2", "data.num_workers=0", "trainer.max_epochs=3",
            "trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false",
            "trainer.checkpoint_every_n_steps=1", f"output_dir={tmp_path}", f"experiment={name}",
        ])  # fmt: skip

    straight = train(config("straight"), data)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(config("killed"), data, callbacks=[Kill()])
    resumed = train(config("killed"), data, resume=True)
    assert resumed.metrics["global_step"] == straight.metrics["global_step"] == 6
    a, b = load_file(straight.run_dir / "model.safetensors"), load_file(resumed.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.metrics["test"] == straight.metrics["test"]
