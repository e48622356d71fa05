"""Generate a small COCO 2017-format dataset of drawn cats, for the demo and the tests.

    python -m samples.drawn --out demo_coco [--seed 0] [--num-train 96] [--num-val 24]

writes the real COCO download's layout (annotations/instances_<split>.json with
COCO's 80-category table, <split>/<12-digit id>.jpg), so every stage runs on it
unchanged. Tabby cats are drawn among dogs of the same coat colours, people, cars
and balls: colour alone cannot separate them, stripes and shape can, which a small
U-Net learns in minutes on a CPU. Each image is painted from the rasterization of
its own annotations (polygons; crowds as uncompressed RLE), so masks and pictures
agree to the pixel. Image i depends only on (seed, split, i): the same seed gives
the same bytes, and asking for more images keeps the first.

Every split of three or more images holds cats (image 0: at least two) and a dog
(image 2), so `convert_coco.py --classes cat dog` makes a 3-class (background, cat,
dog) dataset of it at any size; people, cars and sports balls are further classes.
"""

import json
import os
import sys

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from utils import cli, errors

NUM_TRAIN = 96  # enough variety for a small U-Net to reach val IoU >= 0.7 in minutes
NUM_VAL = 24
SPLITS = ("train2017", "val2017")
FIRST_IMAGE_ID = {"train2017": 1, "val2017": 900001}  # disjoint, like real COCO
FIRST_ANN_ID = {"train2017": 1, "val2017": 9000001}
MIN_SIDE, MAX_SIDE = 200, 800
GRAYSCALE_P = 0.15
JPEG_QUALITY = 90

# COCO 2017's category table: (id, name, supercategory); the ids have gaps.
CATEGORIES = [
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"), (5, "airplane", "vehicle"), (6, "bus", "vehicle"),
    (7, "train", "vehicle"), (8, "truck", "vehicle"), (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"),
    (16, "bird", "animal"), (17, "cat", "animal"), (18, "dog", "animal"),
    (19, "horse", "animal"), (20, "sheep", "animal"), (21, "cow", "animal"),
    (22, "elephant", "animal"), (23, "bear", "animal"), (24, "zebra", "animal"),
    (25, "giraffe", "animal"), (27, "backpack", "accessory"), (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"), (32, "tie", "accessory"), (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"), (35, "skis", "sports"), (36, "snowboard", "sports"),
    (37, "sports ball", "sports"), (38, "kite", "sports"), (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"),
    (49, "knife", "kitchen"), (50, "spoon", "kitchen"), (51, "bowl", "kitchen"),
    (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"),
    (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"),
    (61, "cake", "food"), (62, "chair", "furniture"), (63, "couch", "furniture"),
    (64, "potted plant", "furniture"), (65, "bed", "furniture"),
    (67, "dining table", "furniture"), (70, "toilet", "furniture"), (72, "tv", "electronic"),
    (73, "laptop", "electronic"), (74, "mouse", "electronic"), (75, "remote", "electronic"),
    (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"),
    (85, "clock", "indoor"), (86, "vase", "indoor"), (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
]
CAT, DOG, PERSON, CAR, BALL = 17, 18, 1, 3, 37

# BGR. Cats and dogs share most coat colours on purpose: colour must not suffice.
COATS = [(40, 120, 215), (128, 128, 132), (50, 80, 125), (165, 205, 230), (45, 45, 50),
         (220, 222, 226), (70, 150, 200)]
EYES = [(40, 200, 170), (30, 190, 230), (190, 150, 60)]


# ---------------------------------------------------------------- textures


def _noise(rng, h, w, cells):
    """Smooth noise in about [-1, 1]: a coarse random grid upsampled, so no seams."""
    gh = max(2, round(cells * h / max(h, w)))
    gw = max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng, h, w):
    """[h, w, 3] float32 mottled surface, sometimes a floor below a horizon."""
    img = np.full((h, w, 3), rng.uniform(35, 225, 3), np.float32)
    if rng.random() < 0.5:
        horizon = int(h * rng.uniform(0.35, 0.75))
        img[horizon:] = rng.uniform(35, 225, 3)
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    img += _noise(rng, h, w, int(rng.integers(3, 8)))[..., None] * rng.uniform(15, 45) * tint
    img += _noise(rng, h, w, int(rng.integers(20, 50)))[..., None] * rng.uniform(4, 12)
    return img


def _fur(rng, s, base):
    """[s, s, 3] plain coat with soft shading and per-pixel grain."""
    img = np.full((s, s, 3), base, np.float32)
    img *= 1 + 0.12 * _noise(rng, s, s, 4)[..., None]
    img += rng.normal(0, 7, (s, s, 1)).astype(np.float32)
    return img


def _stripes(rng, s, base):
    """[s, s, 3] tabby coat: wavy dark stripes of period 7-13 px over the fur."""
    img = _fur(rng, s, base)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle) + 6 * _noise(rng, s, s, 5)
    stripe = np.sin(2 * np.pi * t / rng.uniform(7, 13)) > rng.uniform(0.0, 0.4)
    dark = 0.5 if np.mean(base) > 60 else 2.2  # black cats get light stripes
    img[stripe] *= dark
    return img


def _spots(rng, s, base):
    """[s, s, 3] dog coat: plain, or large patches of a second coat colour."""
    img = _fur(rng, s, base)
    if rng.random() < 0.6:
        patch = _noise(rng, s, s, int(rng.integers(3, 7))) > 0.3
        img[patch] = np.asarray(COATS[rng.integers(len(COATS))], np.float32)
        img[patch] += rng.normal(0, 7, (int(patch.sum()), 1)).astype(np.float32)
    return img


# ---------------------------------------------------------------- objects
# Each drawer returns (colour [s, s, 3] float32, mask [s, s] uint8 0/1) on an
# s x s canvas, shapes laid out in fractions of s.


def _p(s, *xy):
    return tuple(int(round(v * s)) for v in xy)


def _ears(mask, img, s, hx, hy, hr, colour):
    for side in (-1, 1):
        tri = np.array([_p(s, hx + side * 0.85 * hr, hy - 0.4 * hr),
                        _p(s, hx + side * 0.6 * hr, hy - 1.6 * hr),
                        _p(s, hx + side * 0.05 * hr, hy - 0.85 * hr)], np.int32)
        cv2.fillPoly(mask, [tri], 1)
        inner = ((tri.astype(np.float32) - tri.mean(0)) * 0.45 + tri.mean(0)).astype(np.int32)
        cv2.fillPoly(img, [inner], colour)


def _draw_cat(rng, s):
    mask = np.zeros((s, s), np.uint8)
    img = _stripes(rng, s, np.asarray(COATS[rng.integers(len(COATS))], np.float32))
    j = rng.uniform(0.9, 1.1, 4)
    thick = max(2, int(0.045 * s * j[3]))
    if rng.random() < 0.5:  # lying, head at the right end
        cv2.ellipse(mask, _p(s, 0.45, 0.6), _p(s, 0.3 * j[0], 0.14 * j[1]), 0, 0, 360, 1, -1)
        for x in (0.25, 0.33, 0.58, 0.66):
            cv2.rectangle(mask, _p(s, x, 0.62), _p(s, x + 0.05, 0.8), 1, -1)
        tail = [(0.17, 0.62), (0.08, 0.52), (0.06, 0.36)]
        hx, hy, hr = 0.76, 0.42, 0.12 * j[2]
    else:  # sitting, head on top
        cv2.ellipse(mask, _p(s, 0.5, 0.64), _p(s, 0.19 * j[0], 0.26 * j[1]), 0, 0, 360, 1, -1)
        for x in (0.41, 0.53):
            cv2.rectangle(mask, _p(s, x, 0.7), _p(s, x + 0.06, 0.92), 1, -1)
        tail = [(0.62, 0.88), (0.78, 0.88), (0.86, 0.74)]
        hx, hy, hr = 0.5, 0.3, 0.13 * j[2]
    cv2.polylines(mask, [np.array([_p(s, *q) for q in tail], np.int32)], False, 1, thick)
    cv2.circle(mask, _p(s, hx, hy), int(hr * s), 1, -1)
    _ears(mask, img, s, hx, hy, hr, (150, 150, 215))
    eye = EYES[rng.integers(len(EYES))]
    for side in (-1, 1):
        c = _p(s, hx + side * 0.45 * hr, hy - 0.08 * hr)
        cv2.ellipse(img, c, (max(2, int(0.2 * hr * s)), max(2, int(0.15 * hr * s))),
                    0, 0, 360, eye, -1)
        cv2.ellipse(img, c, (1, max(1, int(0.13 * hr * s))), 0, 0, 360, (10, 10, 10), -1)
    nose = np.array([_p(s, hx - 0.12 * hr, hy + 0.3 * hr), _p(s, hx + 0.12 * hr, hy + 0.3 * hr),
                     _p(s, hx, hy + 0.45 * hr)], np.int32)
    cv2.fillPoly(img, [nose], (140, 130, 220))
    return img, mask


def _draw_dog(rng, s):
    mask = np.zeros((s, s), np.uint8)
    img = _spots(rng, s, np.asarray(COATS[rng.integers(len(COATS))], np.float32))
    j = rng.uniform(0.9, 1.1, 3)
    cv2.ellipse(mask, _p(s, 0.45, 0.52), _p(s, 0.3 * j[0], 0.13 * j[1]), 0, 0, 360, 1, -1)
    for x in (0.2, 0.3, 0.58, 0.68):
        cv2.rectangle(mask, _p(s, x, 0.55), _p(s, x + 0.06, 0.9), 1, -1)
    cv2.line(mask, _p(s, 0.17, 0.48), _p(s, 0.07, 0.3), 1, max(2, int(0.03 * s)))
    hx, hy = 0.8, 0.34
    cv2.ellipse(mask, _p(s, hx, hy), _p(s, 0.1 * j[2], 0.09 * j[2]), 0, 0, 360, 1, -1)
    cv2.ellipse(mask, _p(s, hx + 0.1, hy + 0.04), _p(s, 0.08, 0.05), 0, 0, 360, 1, -1)
    cv2.rectangle(mask, _p(s, hx - 0.08, hy), _p(s, hx + 0.02, 0.5), 1, -1)  # neck
    ear = (_p(s, hx - 0.05, hy + 0.06), _p(s, 0.035, 0.09), 15)
    dark = tuple(float(v) * 0.6 for v in COATS[rng.integers(len(COATS))])
    cv2.ellipse(mask, ear[0], ear[1], ear[2], 0, 360, 1, -1)
    cv2.ellipse(img, ear[0], ear[1], ear[2], 0, 360, dark, -1)
    cv2.circle(img, _p(s, hx + 0.17, hy + 0.03), max(2, int(0.02 * s)), (20, 20, 20), -1)
    cv2.circle(img, _p(s, hx + 0.02, hy - 0.03), max(1, int(0.012 * s)), (15, 15, 15), -1)
    return img, mask


def _draw_person(rng, s):
    mask = np.zeros((s, s), np.uint8)
    img = np.zeros((s, s, 3), np.float32)
    skin = tuple(float(v) for v in rng.uniform([60, 90, 130], [180, 200, 235]))
    shirt = tuple(float(v) for v in rng.uniform(20, 235, 3))
    pants = tuple(float(v) for v in rng.uniform(20, 160, 3))
    parts = [("circle", (0.5, 0.11), 0.07, skin),
             ("rect", (0.38, 0.19, 0.62, 0.56), None, shirt),
             ("rect", (0.3, 0.2, 0.37, 0.52), None, shirt),
             ("rect", (0.63, 0.2, 0.7, 0.52), None, shirt),
             ("rect", (0.39, 0.56, 0.49, 0.97), None, pants),
             ("rect", (0.51, 0.56, 0.61, 0.97), None, pants)]
    for kind, geo, r, colour in parts:
        for target, value in ((mask, 1), (img, colour)):
            if kind == "circle":
                cv2.circle(target, _p(s, *geo), int(r * s), value, -1)
            else:
                cv2.rectangle(target, _p(s, *geo[:2]), _p(s, *geo[2:]), value, -1)
    img += rng.normal(0, 4, (s, s, 1)).astype(np.float32)
    return img, mask


def _draw_car(rng, s):
    mask = np.zeros((s, s), np.uint8)
    img = np.full((s, s, 3), rng.uniform(20, 235, 3), np.float32)
    img *= 1 + 0.1 * _noise(rng, s, s, 3)[..., None]
    cabin = np.array([_p(s, 0.22, 0.47), _p(s, 0.33, 0.27), _p(s, 0.7, 0.27),
                      _p(s, 0.82, 0.47)], np.int32)
    cv2.rectangle(mask, _p(s, 0.05, 0.45), _p(s, 0.95, 0.74), 1, -1)
    cv2.fillPoly(mask, [cabin], 1)
    window = ((cabin.astype(np.float32) - cabin.mean(0)) * 0.8 + cabin.mean(0)).astype(np.int32)
    cv2.fillPoly(img, [window], (215, 190, 160))
    for x in (0.25, 0.75):
        cv2.circle(mask, _p(s, x, 0.74), int(0.11 * s), 1, -1)
        cv2.circle(img, _p(s, x, 0.74), int(0.11 * s), (25, 25, 25), -1)
        cv2.circle(img, _p(s, x, 0.74), int(0.05 * s), (160, 160, 160), -1)
    return img, mask


def _draw_ball(rng, s):
    mask = np.zeros((s, s), np.uint8)
    cv2.circle(mask, _p(s, 0.5, 0.5), int(0.4 * s), 1, -1)
    img = np.full((s, s, 3), rng.uniform(20, 235, 3), np.float32)
    cv2.circle(img, _p(s, 0.4, 0.4), int(0.1 * s), (240, 240, 240), -1)
    return img, mask


# (category, drawer, probability, size range as a fraction of the short side);
# dogs come as big as cats so that size is no cue
DISTRACTORS = [(DOG, _draw_dog, 0.45, (0.35, 0.8)), (PERSON, _draw_person, 0.25, (0.25, 0.55)),
               (CAR, _draw_car, 0.2, (0.25, 0.55)), (BALL, _draw_ball, 0.1, (0.15, 0.35))]
DISTRACTOR_P = [d[2] for d in DISTRACTORS]


def _pose(rng, img, mask):
    """Mirror and tilt an object canvas; returns the transformed (img, mask)."""
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    s = mask.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-20, 20)), 1.0)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (s, s), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ascontiguousarray(mask), m, (s, s), flags=cv2.INTER_NEAREST)
    return img, mask


# ---------------------------------------------------------------- scenes


def _paste(canvas, h, w, y0, x0):
    """Place an s x s canvas at (y0, x0) on an h x w image, clipping at the borders."""
    s = canvas.shape[0]
    out = np.zeros((h, w) + canvas.shape[2:], canvas.dtype)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + s), min(w, x0 + s)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] = canvas[ys - y0:ye - y0, xs - x0:xe - x0]
    return out


def _polygons(mask):
    """COCO polygons [[x1, y1, x2, y2, ...], ...] tracing a 0/1 mask's outer contours."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.8, True)
        if len(c) >= 3 and cv2.contourArea(c) >= 4:
            # through pixel centres, 2 decimals like COCO's own files
            polys.append([round(float(v) + 0.5, 2) for v in c.reshape(-1)])
    return polys


def _rle_counts(mask):
    """COCO's uncompressed RLE counts: column-major runs, starting with a run of 0s."""
    flat = np.asarray(mask, np.uint8).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0] + counts if flat[0] else counts


def _annotation(category, segmentation, rle, iscrowd):
    return {"segmentation": segmentation, "area": float(mask_utils.area(rle)),
            "iscrowd": iscrowd, "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
            "category_id": category}


class _Scene:
    """An image being drawn: pixels, the occupied area, and its annotations."""

    def __init__(self, rng, h, w):
        self.rng, self.h, self.w = rng, h, w
        self.img = _background(rng, h, w)
        self.occupied = np.zeros((h, w), np.uint8)
        self.anns = []

    def add(self, category, drawer, scale):
        """Draw one object somewhere free; False when it does not fit."""
        rng, h, w = self.rng, self.h, self.w
        s = max(24, int(scale * min(h, w)))
        img, mask = _pose(rng, *drawer(rng, s))
        halo = cv2.dilate(mask, np.ones((9, 9), np.uint8))  # keep objects apart
        for _ in range(25):
            y0 = int(rng.integers(-s // 6, max(1, h - s + s // 6)))
            x0 = int(rng.integers(-s // 6, max(1, w - s + s // 6)))
            if not (_paste(halo, h, w, y0, x0) & self.occupied).any():
                break
        else:
            return False
        polys = _polygons(_paste(mask, h, w, y0, x0))
        if not polys:
            return False
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        # paint exactly what the annotation rasterizes to, so they agree per pixel
        drawn = mask_utils.decode(rle).astype(bool)
        self.img[drawn] = _paste(img, h, w, y0, x0)[drawn]
        self.occupied |= drawn
        self.anns.append(_annotation(category, polys, rle, 0))
        return True

    def add_crowd(self, category, drawer, count):
        """A tight overlapping group annotated as one iscrowd=1 RLE region."""
        rng, h, w = self.rng, self.h, self.w
        s = max(24, int(0.2 * min(h, w)))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, max(1, w - count * s // 2)))
        union = np.zeros((h, w), np.uint8)
        for k in range(count):
            img, mask = _pose(rng, *drawer(rng, s))
            y0, x0 = y + int(rng.integers(-s // 8, s // 8 + 1)), x + k * s // 2
            placed = _paste(mask, h, w, y0, x0).astype(bool)
            self.img[placed] = _paste(img, h, w, y0, x0)[placed]
            union |= placed
        if not union.any():
            return
        self.occupied |= union
        seg = {"counts": _rle_counts(union), "size": [h, w]}
        rle = mask_utils.frPyObjects(seg, h, w)
        self.anns.append(_annotation(category, seg, rle, 1))

    def pixels(self, grayscale):
        """The finished uint8 image: [h, w, 3] BGR, or [h, w] when grayscale."""
        img = cv2.GaussianBlur(self.img, (3, 3), 0.7)  # soften the drawn edges a little
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if grayscale else img


def _render(rng, index):
    """Draw image `index` of a split; returns (pixels, annotations without ids).

    Images 0-3 are showcases, so even a tiny split has them: several cats; a crowd
    of cats next to a crowd of people; a dog and no cat; grayscale.
    """
    h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    if index == 0:  # big, to hold several cats
        h, w = max(h, 600), max(w, 640)
    scene = _Scene(rng, h, w)
    if index == 1:
        scene.add_crowd(CAT, _draw_cat, 4)
        scene.add_crowd(PERSON, _draw_person, 5)
    num_cats = int(rng.choice([0, 1, 1, 1, 1, 2, 2, 3]))
    num_cats = {0: max(num_cats, 2), 1: max(num_cats, 1), 2: 0}.get(index, num_cats)
    placed = failed = 0
    while placed < num_cats and failed < 6:  # shrink cats that do not fit, to keep the count
        if scene.add(CAT, _draw_cat, rng.uniform(0.4, 0.85) * 0.8**failed):
            placed += 1
        else:
            failed += 1
    if index == 2:  # the hardest "no"
        scene.add(DOG, _draw_dog, rng.uniform(0.35, 0.8))
    for _ in range(int(rng.integers(0, 4))):
        category, drawer, _, size = DISTRACTORS[rng.choice(len(DISTRACTORS), p=DISTRACTOR_P)]
        scene.add(category, drawer, rng.uniform(*size))
    grayscale = index == 3 or (index > 3 and rng.random() < GRAYSCALE_P)
    return scene.pixels(grayscale), scene.anns


# ---------------------------------------------------------------- files


def _split(out_dir, split, seed, split_no, count):
    """Write one split's JPEGs, then its annotation file (last, so it marks completion)."""
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, anns = [], []
    for i in range(count):
        image_id = FIRST_IMAGE_ID[split] + i
        pixels, objects = _render(np.random.default_rng([seed, split_no, i]), i)
        name = f"{image_id:012d}.jpg"
        jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
        errors.write_atomic(os.path.join(out_dir, split, name), jpeg.tobytes())
        images.append({"license": 1, "file_name": name, "coco_url": "",
                       "height": pixels.shape[0], "width": pixels.shape[1],
                       "date_captured": "2017-01-01 00:00:00", "flickr_url": "",
                       "id": image_id})
        for ann in objects:
            ann.update(image_id=image_id, id=FIRST_ANN_ID[split] + len(anns))
            anns.append(ann)
    doc = {
        "info": {"description": "coco-unet demo: procedurally drawn cats (samples/drawn.py)",
                 "url": "", "version": "1.0", "year": 2017,
                 "contributor": "coco-unet", "date_created": "2017/01/01"},
        "licenses": [{"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1,
                      "name": "CC0 1.0 (generated images)"}],
        "images": images,
        "annotations": anns,
        "categories": [{"supercategory": sc, "id": i, "name": n} for i, n, sc in CATEGORIES],
    }
    path = os.path.join(out_dir, "annotations", f"instances_{split}.json")
    errors.write_atomic(path, json.dumps(doc, separators=(",", ":")).encode())
    return len(images), len(anns)


def generate(out_dir, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL):
    """Write the demo dataset under out_dir (see the module docstring); returns None."""
    if num_train < 1 or num_val < 1:
        raise cli.UsageError(f"need at least one image per split, got num_train={num_train} "
                             f"num_val={num_val}")
    try:
        os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
        for split_no, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
            _split(out_dir, split, seed, split_no, count)
    except OSError as e:
        raise cli.UserError(f"cannot write the demo dataset to {out_dir} ({e.strerror}): "
                            "choose a writable --out directory") from None


def main(argv=None):
    p = cli.ArgumentParser(
        prog="python -m samples.drawn", description="Generate the small COCO-format demo dataset.")
    p.add_argument("--out", default="demo_coco", help="output directory (default: demo_coco)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="random seed; the same seed gives the same bytes (default: 0)")
    p.add_argument("--num-train", type=cli.positive_int, default=NUM_TRAIN,
                   help=f"train2017 images (default: {NUM_TRAIN})")
    p.add_argument("--num-val", type=cli.positive_int, default=NUM_VAL,
                   help=f"val2017 images (default: {NUM_VAL})")
    args = p.parse_args(argv)
    generate(args.out, args.seed, args.num_train, args.num_val)
    print(f"wrote {args.num_train} train2017 and {args.num_val} val2017 images to {args.out}")


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
