"""COCO-format instance segmentation for torchvision's Mask R-CNN, with the Mask^X A/B split.

:class:`CocoInstances` reads an image folder and a COCO annotation file through pycocotools and returns
torchvision targets. Set A classes carry masks; set B classes carry boxes and labels only, and their
masks are never decoded (``masks="A"``), unless the oracle asks for every mask (``masks="all"``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO

# The A/B split and the VOC class list live in mxr.data.splits (the checks use them too);
# re-exported here, where older code imports them from.
from mxr.data.splits import VOC_CAT_IDS, VOC_CAT_NAMES, resolve_split, split_root  # noqa: F401
from mxr.data.validate import check_coco_data


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO annotation file with errors that name it.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not valid JSON, or not a mapping with ``images``/``annotations``/``categories`` lists.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed JSON ({e}); expected a COCO annotation file") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"{path}: field '{key}' is {type(data.get(key)).__name__ if key in data else 'missing'}; "
                "expected a list"
            )
    return data


def _coco_from_dict(data: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


class CocoInstances(torch.utils.data.Dataset):
    """A COCO-format dataset returning ``(image, target)`` for torchvision's Mask R-CNN.

    Args:
        image_dir: folder of the images named by ``file_name``.
        ann_file: COCO instances JSON.
        split: set A (see :func:`resolve_split`); ``None`` puts every class in A.
        masks: ``"A"`` decodes masks of A-class instances only (B masks are never decoded);
            ``"all"`` decodes every mask (the oracle).
        train: apply augmentation (horizontal flip with ``flip_prob``).
        flip_prob: probability of a horizontal flip when ``train``; the decision is a pure function of
            ``(seed, epoch, index)``, so it is deterministic, resumable and the same on every process.
        seed: seed of the flip decisions.
        skip_empty: drop images with no usable annotation (for training); keep them for evaluation.
        root: folder for a relative split path (tried after the path as given and the annotation file's
            folder and its parent).
        keep_coco: keep the pycocotools index (``coco``, with the whole parsed file) for COCOeval;
            ``False`` (a training set) keeps only what ``__getitem__`` reads and sets ``coco`` to
            ``None``: at COCO scale that is most of the memory each process and loader worker holds.

    :attr:`image_sizes` holds ``(height, width)`` per index from the file (``None`` where missing).

    ``image`` is float32 ``(3, H, W)`` in [0, 1]; ``target`` holds ``boxes`` float32 ``(N, 4)`` XYXY
    pixels, ``labels`` int64 ``(N,)`` in 1..C-1, ``masks`` uint8 ``(M, H, W)`` for the M instances whose
    label is in :attr:`mask_labels` (in instance order), ``has_mask`` bool ``(N,)`` marking them,
    ``image_id`` int64 scalar (the COCO image id) and ``area`` float32 ``(N,)``.
    Crowd annotations are left out of the targets; boxes of zero width or height are dropped and counted
    in :attr:`num_dropped_boxes`.
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
            raise ValueError(f"masks={masks!r} is not valid; expected 'A' or 'all'")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob={flip_prob!r} is not valid; expected a number in [0, 1]")
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        data = read_coco_json(self.ann_file)
        categories = sorted(
            data["categories"],
            key=lambda c: int(c["id"]) if isinstance(c, dict) and "id" in c else -1,
        )
        for cat in categories:
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise ValueError(
                    f"{self.ann_file}: a category is missing required field 'id' or 'name': {cat!r}"
                )

        self.a_cat_ids, self.b_cat_ids = resolve_split(
            split, categories, split_root(split, self.ann_file, root), ann_file=self.ann_file
        )

        self.class_names: list[str] = ["__background__"] + [str(c["name"]) for c in categories]
        self.label_to_cat_id: dict[int, int] = {
            i + 1: int(c["id"]) for i, c in enumerate(categories)
        }
        self.cat_id_to_label: dict[int, int] = {v: k for k, v in self.label_to_cat_id.items()}
        self.num_classes: int = len(categories) + 1
        self.a_labels: tuple[int, ...] = tuple(self.cat_id_to_label[i] for i in self.a_cat_ids)
        self.b_labels: tuple[int, ...] = tuple(self.cat_id_to_label[i] for i in self.b_cat_ids)
        self.masks = masks
        self.mask_labels: tuple[int, ...] = (
            self.a_labels if masks == "A" else tuple(range(1, self.num_classes))
        )
        # The rules of `python -m mxr data check`, run with this split and mask set.
        report = check_coco_data(
            data, self.ann_file, mask_cat_ids={self.label_to_cat_id[x] for x in self.mask_labels}
        )
        if report.problems:
            more = len(report.problems) - 1
            opts = f" --split {split}" if isinstance(split, str | Path) else ""
            raise ValueError(
                report.problems[0]
                + (
                    f" (and {more} more problem(s); `python -m mxr data check {self.ann_file}"
                    f"{opts} --masks {masks}` lists them all)"
                    if more
                    else ""
                )
            )

        self.coco = _coco_from_dict(data)
        self.train = train
        self.flip_prob = float(flip_prob)
        self.seed = seed
        self.epoch = 0

        # Usable annotations per image, decided once: known category, not crowd, positive size.
        self.num_dropped_boxes = 0
        self.num_crowd = 0
        self._anns: dict[int, list[dict[str, Any]]] = {}
        image_ids = sorted(self.coco.imgs)
        for image_id in image_ids:
            kept = []
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann["category_id"] not in self.cat_id_to_label:
                    raise ValueError(
                        f"{self.ann_file}: annotation id {ann['id']} has category_id={ann['category_id']!r}; "
                        f"expected one of the file's category ids {sorted(self.cat_id_to_label)}"
                    )
                if ann.get("iscrowd", 0):
                    self.num_crowd += 1
                    continue
                _, _, w, h = (float(v) for v in ann["bbox"])
                if w <= 0 or h <= 0:
                    self.num_dropped_boxes += 1
                    continue
                kept.append(ann)
            self._anns[image_id] = kept
        for ann in self.coco.anns.values():
            if ann["image_id"] not in self.coco.imgs:
                raise ValueError(
                    f"{self.ann_file}: annotation id {ann['id']} has image_id={ann['image_id']!r}, "
                    "which is not in 'images'"
                )
        self.image_ids: list[int] = [i for i in image_ids if self._anns[i] or not skip_empty]
        self.image_sizes: list[tuple[int, int] | None] = [
            (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else None
            for im in (self.coco.imgs[i] for i in self.image_ids)
        ]
        if not keep_coco:
            self._drop_coco_index()

    def _drop_coco_index(self) -> None:
        """Free the parsed file and the pycocotools index, keeping per kept image its file name and
        per usable annotation the fields ``__getitem__`` reads (segmentations of mask classes only)."""
        seg_cats = {self.label_to_cat_id[label] for label in self.mask_labels}
        fields = ("id", "image_id", "category_id", "bbox", "area")
        self._images = {i: {"file_name": self.coco.imgs[i]["file_name"]} for i in self.image_ids}
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

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that (with ``seed`` and the index) decides each image's flip."""
        self.epoch = int(epoch)

    def flips(self, index: int) -> bool:
        """Whether item ``index`` is flipped in the current epoch (a pure function of seed, epoch, index)."""
        if not self.train or self.flip_prob <= 0.0:
            return False
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
        return bool(rng.random() < self.flip_prob)

    def load_image(self, image_id: int) -> np.ndarray:
        """The RGB image of ``image_id`` as uint8 ``(H, W, 3)``, with errors naming file and image id."""
        info = self.coco.imgs[image_id] if self.coco is not None else self._images[image_id]
        path = self.image_dir / str(info["file_name"])
        if not path.is_file():
            raise FileNotFoundError(
                f"image file not found: {path} (image id {image_id} in {self.ann_file})"
            )
        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(
                f"{path} (image id {image_id} in {self.ann_file}) is not a readable image: {e}"
            ) from e

    def _decode(self, ann: dict[str, Any], h: int, w: int) -> np.ndarray:
        seg = ann["segmentation"]
        where = f"{self.ann_file}: annotation id {ann['id']} (image id {ann['image_id']})"
        try:
            if isinstance(seg, list):
                rles = mask_utils.frPyObjects(seg, h, w)
                rle = mask_utils.merge(rles)
            elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
                if list(seg["size"]) != [h, w]:
                    raise ValueError(
                        f"RLE size {seg['size']} does not match the image size [{h}, {w}]"
                    )
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
            else:
                raise ValueError("expected a list of polygons or an RLE {'size', 'counts'}")
            return mask_utils.decode(rle)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{where}: field 'segmentation' could not be decoded: {e}") from e

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.image_ids[index]
        pixels = self.load_image(image_id)
        h, w = pixels.shape[:2]
        anns = self._anns[image_id]
        boxes = np.zeros((len(anns), 4), dtype=np.float32)
        labels = np.zeros(len(anns), dtype=np.int64)
        area = np.zeros(len(anns), dtype=np.float32)
        has_mask = np.zeros(len(anns), dtype=bool)
        masks = []
        mask_labels = set(self.mask_labels)
        for i, ann in enumerate(anns):
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            boxes[i] = (x, y, x + bw, y + bh)
            labels[i] = self.cat_id_to_label[ann["category_id"]]
            area[i] = float(ann.get("area", bw * bh))
            if labels[i] in mask_labels:
                has_mask[i] = True
                masks.append(self._decode(ann, h, w))
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
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
        return (
            f"CocoInstances({len(self)} images, {self.num_classes - 1} classes: {len(self.a_labels)} A / "
            f"{len(self.b_labels)} B, masks={self.masks!r}, ann_file={ann!r})"
        )


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """Binary masks as COCO compressed RLE, JSON-ready (the one encoder: ShapesX's annotation files
    and the evaluation's results both write masks with it).

    Args:
        masks: ``(N, H, W)`` bool or 0/1 array.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}``.
    """
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
    """Collate ``(image, target)`` pairs into ``(list of images, list of targets)`` (sizes may differ)."""
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets
