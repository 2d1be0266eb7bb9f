"""ViT teacher: class-conditional relevance of a pretrained timm ViT (a VFM->VFM *substitute* teacher).

This is not the paper's VLM teacher: no VLM can be run on these machines, so an ImageNet ViT (the shared
DeiT-Tiny) stands in, and every map it makes says so in its store metadata (field "kind").

C_fore: gradient-weighted attention rollout for the image's label (Chefer et al., "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021; the relevance rule of
their CVPR 2021 work without LRP): R = I, then for every block R += mean_h(relu(dy_c/dA ⊙ A)) R, where A is
the block's softmax attention (B, heads, N, N); the class token's row over the patch tokens, (h, w).

C_back, two documented choices, each map L1-normalised over patches before Eq. 11 so that the contrast
compares where the evidence lies, not its magnitude:
  "uniform" (default): 1 / (h*w), so Eq. 11 keeps the patches with above-average relevance for the label.
      Why default: an ImageNet classifier's runner-up classes are mostly fine-grained siblings of the label
      (tabby vs. tiger cat), whose evidence lies on the same object; subtracting them would erase it.
  "others": relevance of the teacher's top-k predicted classes other than the target (one backward pass
      on the mean of their logits), the analogue of the VLM's "background: [...]" words.

The label's ImageNet-1k index comes from the sample's wnid (TinyImageNet's 200 wnids are all ImageNet
classes) or from a class name equal to one of a synset's names; a class with no match is explained
through the teacher's own top-1 prediction, recorded per image in info["target_from"] = "top1".
Images are resized whole (no crop) to the model's input size so the map covers the whole image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from lfi.extract.teacher import Sample, Teacher, TeacherOutput, register_teacher

WEIGHTS_FILE = "deit_tiny_patch16_224.safetensors"
#: The same weights in bfloat16 (half the bytes: what travels to a lent GPU), used when WEIGHTS_FILE is absent.
WEIGHTS_FILE_BF16 = "deit_tiny_patch16_224.bf16.safetensors"
SYNSETS_FILE = "imagenet_synset_words.txt"
KIND = "VFM->VFM substitute teacher (ImageNet ViT relevance), not the paper's VLM"


def shared_weights_dir() -> Path:
    """Default folder of the shared weights: $LFI_DATA/weights, else ../shared/data/weights beside the repo."""
    root = os.environ.get("LFI_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "weights"


def default_weights(folder: Path | None = None) -> Path:
    """The DeiT-Tiny in `folder` (default: `shared_weights_dir()`): the float32 file, else its bfloat16 copy
    (the path of the float32 one if neither)."""
    folder = shared_weights_dir() if folder is None else folder
    bf16 = folder / WEIGHTS_FILE_BF16
    return bf16 if bf16.is_file() and not (folder / WEIGHTS_FILE).is_file() else folder / WEIGHTS_FILE


def read_synsets(path: Path) -> list[tuple[str, list[str]]]:
    """ImageNet-1k classes in output order from lines "<wnid> <name>, <name>, ...": [(wnid, names)]."""
    classes = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        wnid, _, names = line.strip().partition(" ")
        if not wnid.startswith("n") or not names:
            raise ValueError(f"{path}:{n}: expected '<wnid> <names>', got {line!r}")
        classes.append((wnid, [s.strip().lower() for s in names.split(",") if s.strip()]))
    if len(classes) != 1000:
        raise ValueError(f"{path}: expected 1000 ImageNet classes, found {len(classes)}")
    return classes


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_float_image(image: torch.Tensor | Image.Image, where: str) -> torch.Tensor:
    """uint8 (3, H, W) tensor or PIL -> float (3, H, W) in [0, 1]."""
    if isinstance(image, Image.Image):
        image = TF.pil_to_tensor(image.convert("RGB"))
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{where}: image must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    return TF.to_dtype(image.expand(3, -1, -1), torch.float32, scale=True)


class ViTRelevanceTeacher(Teacher):
    """Relevance maps from a timm ViT (default: the shared ImageNet DeiT-Tiny/16, 14x14 grid at 224 px).

    weights: safetensors file in timm's key layout; synsets: ImageNet class list in output order;
    grid: token grid (h, w), input size = grid * patch (positional embeddings resampled by timm) or the
    model's own; back: "uniform" | "others" (module docstring); top_k: classes in the "others" term.
    """

    name = "vit"

    def __init__(
        self,
        weights: Path | str | None = None,
        synsets: Path | str | None = None,
        model_name: str = "deit_tiny_patch16_224",
        grid: tuple[int, int] | None = None,
        back: Literal["uniform", "others"] = "uniform",
        top_k: int = 5,
        device: str | torch.device = "cpu",
    ) -> None:
        if back not in ("uniform", "others"):
            raise ValueError(f"vit teacher back must be 'uniform' or 'others', got {back!r}")
        self.weights = Path(weights) if weights else default_weights()
        self.synsets_path = Path(synsets) if synsets else self.weights.parent / SYNSETS_FILE
        for path, what in ((self.weights, "weights"), (self.synsets_path, "synsets")):
            if not path.is_file():
                raise FileNotFoundError(f"vit teacher: {what} file {path} not found (pass {what}=...)")
        self.model_name, self.back, self.top_k = model_name, back, top_k
        self.device = torch.device(device)
        self.model = self._create(None)
        patch = self.model.patch_embed.patch_size
        native = tuple(self.model.patch_embed.grid_size)
        if grid is not None and tuple(grid) != native:
            self.model = self._create((grid[0] * patch[0], grid[1] * patch[1]))
        self.grid = tuple(int(g) for g in self.model.patch_embed.grid_size)
        self.input_size = (self.grid[0] * patch[0], self.grid[1] * patch[1])
        if self.model.num_classes != 1000:
            raise ValueError(f"vit teacher: {model_name} has {self.model.num_classes} classes, expected 1000")
        classes = read_synsets(self.synsets_path)
        self.wnid_to_index = {wnid: i for i, (wnid, _) in enumerate(classes)}
        self.name_to_index: dict[str, int] = {}
        for i, (_, names) in enumerate(classes):
            for n in names:
                self.name_to_index.setdefault(n, i)
        self.revision = _file_sha256(self.weights)[:16]
        self._attn: list[torch.Tensor] = []
        for block in self.model.blocks:
            block.attn.fused_attn = False  # the explicit path materialises softmax(QK^T) for the hook below
            block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: self._attn.append(out))

    def _create(self, img_size: tuple[int, int] | None) -> torch.nn.Module:
        kwargs = {"img_size": img_size} if img_size else {}
        model = timm.create_model(
            self.model_name, pretrained=True, pretrained_cfg_overlay={"file": str(self.weights)}, **kwargs
        )
        return model.eval().requires_grad_(False).to(self.device)

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "kind": KIND,
            "model": self.model_name,
            "checkpoint": self.weights.name,
            "revision": f"sha256:{self.revision}",
            "method": "gradient-weighted attention rollout (Chefer et al. 2021), class-token row",
            "layers": "all",
            "heads": "mean over heads of relu(grad * attn)",
            "back": self.back if self.back == "uniform" else f"others(top_k={self.top_k})",
            "input_size": list(self.input_size),
            "resize": "whole image, no crop",
        }

    def target_index(self, sample: Sample) -> int | None:
        """ImageNet-1k index of the sample's class, or None if it has no ImageNet match."""
        for value in (sample.get("wnid"), sample.get("class_name")):
            if value in self.wnid_to_index:
                return self.wnid_to_index[value]
        name = sample.get("class_name")
        if not isinstance(name, str):
            return None
        # whole name first, then each comma-separated synonym (TinyImageNet's words.txt style)
        for candidate in [name, *name.split(",")]:
            idx = self.name_to_index.get(candidate.strip().lower())
            if idx is not None:
                return idx
        return None

    def preprocess(self, batch: Sequence[Sample]) -> torch.Tensor:
        """Samples -> normalised model input (B, 3, *input_size)."""
        cfg = self.model.pretrained_cfg
        images = [
            TF.resize(
                _to_float_image(s["image"], s.get("relpath", "<sample>")),
                list(self.input_size),
                antialias=True,
            )
            for s in batch
        ]
        return TF.normalize(torch.stack(images), list(cfg["mean"]), list(cfg["std"])).to(self.device)

    def _relevance(self, objective: torch.Tensor, attn: list[torch.Tensor], retain: bool) -> torch.Tensor:
        """Rollout for a scalar objective summed over the batch (images are independent): (B, h, w)."""
        grads = torch.autograd.grad(objective, attn, retain_graph=retain)
        b, _, n, _ = attn[0].shape
        rel = torch.eye(n, device=self.device).expand(b, n, n)
        for a, g in zip(attn, grads, strict=True):
            rel = rel + (g * a).clamp(min=0).mean(dim=1) @ rel
        patches = rel[:, 0, self.model.num_prefix_tokens :]
        return patches.reshape(b, *self.grid)

    @torch.enable_grad()
    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        x = self.preprocess(batch).requires_grad_(True)  # gives the attention maps a graph to differentiate
        self._attn.clear()
        logits = self.model(x)
        attn, self._attn = self._attn, []
        targets, info = [], []
        for s, top1 in zip(batch, logits.argmax(dim=1).tolist(), strict=True):
            idx = self.target_index(s)
            targets.append(top1 if idx is None else idx)
            info.append({"target": targets[-1], "target_from": "top1" if idx is None else "label"})
        target = torch.tensor(targets, device=self.device)
        fore = self._relevance(logits.gather(1, target[:, None]).sum(), attn, retain=self.back == "others")
        fore = fore / fore.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        if self.back == "uniform":
            back = torch.full_like(fore, 1.0 / fore[0].numel())
        else:
            masked = logits.detach().scatter(1, target[:, None], float("-inf"))
            others = masked.topk(self.top_k, dim=1).indices
            back = self._relevance(logits.gather(1, others).mean(dim=1).sum(), attn, retain=False)
            back = back / back.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return TeacherOutput(fore=fore.detach().cpu(), back=back.detach().cpu(), info=info)


@register_teacher("vit")
def build_vit(**kwargs: Any) -> ViTRelevanceTeacher:
    return ViTRelevanceTeacher(**kwargs)
