"""COCO-format instance segmentation for torchvision's Mask R-CNN, with the Mask^X A/B split:
set A classes carry masks, set B classes boxes and labels only (their masks are never decoded).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO

from mxr.data.splits import random_split_text
from mxr.data.validate import check_coco_data, read_coco_json, segmentation_problem
from mxr.errors import MissingFileError, UserInputError


class CocoInstances(torch.utils.data.Dataset):
    """A COCO-format dataset of ``(image, target)`` pairs for torchvision's Mask R-CNN.

    ``ann_file`` must pass ``python -m mxr data check`` (else its first problem is raised). ``split``
    is set A (:func:`resolve_split`; ``None``: every class); ``masks="A"`` decodes the masks of A
    classes only, ``"all"`` every mask (the oracle). ``train`` flips with ``flip_prob``, a pure
    function of ``(seed, epoch, index)``; ``skip_empty`` drops images without a usable annotation;
    ``root`` is a folder for a relative split path; ``keep_coco=False`` frees the pycocotools index
    ``coco`` (kept for COCOeval): at COCO scale, most of each process's and loader worker's memory.

    ``image`` is float32 ``(3, H, W)`` in [0, 1]; ``target`` holds ``boxes`` float32 ``(N, 4)`` XYXY
    pixels, ``labels`` int64 ``(N,)`` in 1..C-1, ``masks`` uint8 ``(M, H, W)`` of the instances whose
    label is in :attr:`mask_labels` (``has_mask`` bool ``(N,)``), ``image_id`` int64 and ``area``
    float32 ``(N,)``. Crowds (:attr:`num_crowd`) and zero-size boxes (:attr:`num_dropped_boxes`) are
    left out; :attr:`image_sizes` holds ``(height, width)`` per index. :attr:`split_names` is the
    resolved split by name (for a random ``split``, which classes it drew).
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        *,
        split: Any = None,
        masks: str = "A",
        train: bool = False,
        flip_prob: float = 0.0,
        seed: int = 0,
        skip_empty: bool = False,
        root: str | Path | None = None,
        keep_coco: bool = True,
    ) -> None:
        if masks not in ("A", "all"):
            raise UserInputError(f"masks={masks!r} is not valid; expected 'A' or 'all'")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise UserInputError(
                f"flip_prob={flip_prob!r} is not valid; expected a number in [0, 1]"
            )
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        self.masks, self.train, self.flip_prob = masks, train, float(flip_prob)
        self.seed, self.epoch = seed, 0
        data = read_coco_json(self.ann_file)
        report = check_coco_data(data, self.ann_file, split=split, masks=masks, root=root)
        if report.problems:
            opts = f" --split {split}" if isinstance(split, str | Path) else ""
            if isinstance(split, Mapping):
                opts = f" --split '{random_split_text(split)}'"
            raise report.error(f"python -m mxr data check {self.ann_file}{opts} --masks {masks}")
        # Labels 1..C-1 in category-id order, their names, and the split as ids and labels.
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.a_cat_ids, self.b_cat_ids = report.a_cat_ids, report.b_cat_ids
        self.class_names: list[str] = ["__background__"] + [c["name"] for c in categories]
        self.label_to_cat_id: dict[int, int] = {i + 1: c["id"] for i, c in enumerate(categories)}
        self.cat_id_to_label: dict[int, int] = {v: k for k, v in self.label_to_cat_id.items()}
        self.num_classes: int = len(categories) + 1
        self.a_labels: tuple[int, ...] = tuple(self.cat_id_to_label[i] for i in self.a_cat_ids)
        self.b_labels: tuple[int, ...] = tuple(self.cat_id_to_label[i] for i in self.b_cat_ids)
        self.mask_labels = self.a_labels if self.masks == "A" else tuple(range(1, self.num_classes))
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
            self.coco.createIndex()
        # Per image id, the annotations its target holds: not crowd, box of positive size.
        self.num_dropped_boxes = self.num_crowd = 0
        self._anns: dict[int, list[dict[str, Any]]] = {}
        for image_id in sorted(self.coco.imgs):
            self._anns[image_id] = []
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann.get("iscrowd", 0):
                    self.num_crowd += 1
                elif ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
                    self.num_dropped_boxes += 1
                else:
                    self._anns[image_id].append(ann)
        self.image_ids = [i for i, a in sorted(self._anns.items()) if a or not skip_empty]
        self.image_sizes: list[tuple[int, int]] = [
            (self.coco.imgs[i]["height"], self.coco.imgs[i]["width"]) for i in self.image_ids
        ]
        if not keep_coco:  # keep per image its file name, per annotation what __getitem__ reads
            seg_cats = {self.label_to_cat_id[label] for label in self.mask_labels}
            fields = ("id", "image_id", "category_id", "bbox", "area")
            self._images = {
                i: {"file_name": self.coco.imgs[i]["file_name"]} for i in self.image_ids
            }
            self._anns = {
                i: [
                    {k: a[k] for k in fields if k in a}
                    | ({"segmentation": a["segmentation"]} if a["category_id"] in seg_cats else {})
                    for a in self._anns[i]
                ]
                for i in self.image_ids
            }
            self.coco = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def split_names(self) -> dict[str, list[str]]:
        """``{"A": [names], "B": [names]}`` in label order: the resolved split in a split file's
        format, so a run can write it down and a later one read it back as ``data.split``."""
        names = self.class_names
        return {"A": [names[i] for i in self.a_labels], "B": [names[i] for i in self.b_labels]}

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that (with ``seed`` and the index) decides each image's flip."""
        self.epoch = int(epoch)

    def flips(self, index: int) -> bool:
        """Whether item ``index`` is flipped this epoch (a pure function of seed, epoch, index)."""
        if not self.train or self.flip_prob <= 0.0:
            return False
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
        return bool(rng.random() < self.flip_prob)

    def load_image(self, image_id: int) -> np.ndarray:
        """The RGB image of ``image_id``, uint8 ``(H, W, 3)``; errors name the file and image id."""
        info = self.coco.imgs[image_id] if self.coco is not None else self._images[image_id]
        path = self.image_dir / str(info["file_name"])
        where = f"(image id {image_id} in {self.ann_file})"
        if not path.is_file():
            raise MissingFileError(f"image file not found: {path} {where}")
        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise UserInputError(f"{path} {where} is not a readable image: {e}") from e

    def _decode(self, ann: dict[str, Any], h: int, w: int) -> np.ndarray:
        """The uint8 ``(h, w)`` mask of ``ann``, its segmentation checked against the pixels."""
        seg = ann["segmentation"]
        where = f"{self.ann_file}: annotation id {ann['id']} (image id {ann['image_id']})"
        why = segmentation_problem(seg, (h, w))
        if why:
            raise UserInputError(f"{where}: field 'segmentation' {why}")
        try:
            if isinstance(seg, list):
                return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
            rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            return mask_utils.decode(rle)
        except (ValueError, TypeError) as e:  # pycocotools on a corrupt compressed RLE string
            raise UserInputError(f"{where}: field 'segmentation' could not be decoded: {e}") from e

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        pixels = self.load_image(image_id)
        h, w = pixels.shape[:2]
        anns = self._anns[image_id]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        labels = np.array([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        box_area = xywh[:, 2] * xywh[:, 3]
        area = np.array([a.get("area", b) for a, b in zip(anns, box_area, strict=True)], np.float32)
        has_mask = np.isin(labels, self.mask_labels)
        masks = [self._decode(a, h, w) for a, m in zip(anns, has_mask, strict=True) if m]
        mask_arr = np.stack(masks) if masks else np.zeros((0, h, w), dtype=np.uint8)
        if self.flips(index):
            pixels = pixels[:, ::-1]
            mask_arr = mask_arr[:, :, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)
        target = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(np.ascontiguousarray(mask_arr, dtype=np.uint8)),
            "has_mask": torch.from_numpy(has_mask),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "area": torch.from_numpy(area),
        }
        return image, target

    def __repr__(self) -> str:
        try:  # relative to the working directory: no machine path in logs and notebook outputs
            ann = os.path.relpath(self.ann_file)
        except ValueError:  # another drive (Windows)
            ann = str(self.ann_file)
        sets = f"{self.num_classes - 1} classes: {len(self.a_labels)} A / {len(self.b_labels)} B"
        return f"CocoInstances({len(self)} images, {sets}, masks={self.masks!r}, ann_file={ann!r})"


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """``(N, H, W)`` bool or 0/1 masks as ``N`` JSON-ready compressed RLEs (ShapesX, evaluation)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))
    return [
        {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles
    ]


def collate_fn(batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list, list]:
    """``(image, target)`` pairs as ``(list of images, list of targets)`` (sizes may differ)."""
    return [image for image, _ in batch], [target for _, target in batch]
