"""Metrics: pure scoring of outputs against ground truth, no model, run folder or teacher.

Modules: `classification` (top-k, the cross-domain summary, the accumulating `AccuracyEvaluator`),
`coco` (COCO AP through pycocotools, HF DETR outputs to COCO results) and `human` (how close maps come to
human attention: cosine, CC, NSS, AUC-Judd, their tables and ratios). Training validates with them
(`lfi.train.tasks`); the evaluation runners (`lfi.evaluate`) score trained runs with them. Nothing is imported
here, so that pycocotools loads only where COCO is scored.
"""
