"""Procedural scenes with compositional class names (the demo model's world).

A scene is a textured background (one kind, or sky above a ground kind) with 2-8 objects painted
over it in order (later objects occlude earlier ones). An object is a shape (circle, square,
triangle, star, ring) in a colour (red, green, blue, yellow, purple) with a pattern (plain,
striped, dotted); its class name is "[pattern ]colour shape", e.g. "red star", "striped blue ring".

Everything is drawn in coordinates relative to the scene's shorter side, so a scene rendered at
192 px (training) is the same scene as at 480 px, only sampled more coarsely.

Held-out compositions: the five (colour, shape) pairs of HELDOUT_PAIRS, in every pattern, never
appear in a `seen` scene, and their names are never shown to the training. Every colour, every
shape and every pattern still occurs in other compositions, so a held-out name is made of seen
words only.
"""
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS = ["sky", "grass", "brick wall", "water", "sand"]
GROUNDS = ["grass", "water", "sand"]  # what can lie below a sky
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 170, 55),
    "blue": (40, 75, 215),
    "yellow": (240, 215, 35),
    "purple": (140, 55, 185),
}
SHAPES = ["circle", "square", "triangle", "star", "ring"]
PATTERNS = ["", "striped", "dotted"]
HELDOUT_PAIRS = {("green", "triangle"), ("blue", "star"), ("red", "ring"), ("yellow", "circle"), ("purple", "square")}


def object_name(pattern: str, colour: str, shape: str) -> str:
    return f"{pattern} {colour} {shape}" if pattern else f"{colour} {shape}"


def _object_classes() -> List[Tuple[str, str, str]]:
    return [(p, c, s) for p in PATTERNS for c in COLOURS for s in SHAPES]


OBJECTS = _object_classes()
CLASSES: List[str] = BACKGROUNDS + [object_name(*o) for o in OBJECTS]
HELDOUT_CLASSES = [object_name(p, c, s) for p, c, s in OBJECTS if (c, s) in HELDOUT_PAIRS]
SEEN_CLASSES = [n for n in CLASSES if n not in set(HELDOUT_CLASSES)]
CLASS_INDEX = {n: i for i, n in enumerate(CLASSES)}
SPLITS = ("seen", "heldout")


def is_heldout(name: str) -> bool:
    return name in set(HELDOUT_CLASSES)


# ------------------------------------------------------------------------------------------
# Textures (float32 HxWx3 in 0..255)
# ------------------------------------------------------------------------------------------


def _noise(rng: np.random.Generator, h: int, w: int, s: int, cells: float) -> np.ndarray:
    """Smooth value noise with about `cells` cells across the shorter side, in [-1, 1]."""
    gh = max(2, int(np.ceil(cells * h / s)) + 1)
    gw = max(2, int(np.ceil(cells * w / s)) + 1)
    g = rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32)
    img = Image.fromarray(g, mode="F").resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _grid(h: int, w: int, s: int) -> Tuple[np.ndarray, np.ndarray]:
    y = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / s
    x = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / s
    return y, x


def texture(kind: str, rng: np.random.Generator, h: int, w: int, s: int) -> np.ndarray:
    y, x = _grid(h, w, s)
    out = np.zeros((h, w, 3), np.float32)
    if kind == "sky":
        top = np.array([70, 130, 225], np.float32) + rng.uniform(-15, 15, 3)
        bottom = np.array([190, 220, 250], np.float32) + rng.uniform(-10, 5, 3)
        t = np.clip(y / max(1e-6, h / s), 0, 1)[..., None]
        out[:] = top * (1 - t) + bottom * t
        cloud = np.clip(_noise(rng, h, w, s, 3.0) * 1.6 - 0.4, 0, 1)[..., None]
        out = out * (1 - 0.6 * cloud) + 250 * 0.6 * cloud
    elif kind == "grass":
        base = np.array([60, 140, 50], np.float32) + rng.uniform(-15, 15, 3)
        n = _noise(rng, h, w, s, 40.0) * 0.6 + _noise(rng, h, w, s, 6.0) * 0.4
        out[:] = base * (1 + 0.35 * n[..., None])
    elif kind == "brick wall":
        bh = rng.uniform(0.05, 0.09)
        bw = bh * rng.uniform(2.0, 2.6)
        row = np.floor(y / bh)
        xs = x + (row % 2) * bw / 2
        mortar = ((y % bh) < bh * 0.15) | ((xs % bw) < bh * 0.15)
        brick = np.array([165, 75, 50], np.float32) + rng.uniform(-15, 15, 3)
        tint = 1 + 0.15 * np.sin(row * 12.9898 + np.floor(xs / bw) * 78.233)
        out[:] = brick * tint[..., None]
        out[np.broadcast_to(mortar, (h, w))] = np.array([185, 180, 170], np.float32)
        out *= (1 + 0.08 * _noise(rng, h, w, s, 30.0))[..., None]
    elif kind == "water":
        base = np.array([30, 95, 150], np.float32) + rng.uniform(-10, 10, 3)
        f = rng.uniform(25, 45)
        ripple = np.sin(f * y + 2.0 * np.sin(7 * x + rng.uniform(0, 6)) + _noise(rng, h, w, s, 4.0) * 2)
        out[:] = base * (1 + 0.25 * ripple[..., None])
        out += 40 * np.clip(ripple - 0.8, 0, 1)[..., None]
    elif kind == "sand":
        base = np.array([215, 190, 140], np.float32) + rng.uniform(-10, 10, 3)
        n = _noise(rng, h, w, s, 60.0) * 0.5 + _noise(rng, h, w, s, 5.0) * 0.5
        out[:] = base * (1 + 0.12 * n[..., None])
    else:
        raise ValueError(f"unknown background {kind!r}")
    return out


# ------------------------------------------------------------------------------------------
# Objects
# ------------------------------------------------------------------------------------------


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    if shape == "square":
        k, radii = 4, [r * 0.95]
    elif shape == "triangle":
        k, radii = 3, [r * 1.05]
    elif shape == "star":
        k, radii = 10, [r * 1.1, r * 0.45]
    else:
        raise ValueError(shape)
    pts = []
    for i in range(k):
        a = angle + 2 * np.pi * i / k
        rr = radii[i % len(radii)]
        pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
    return pts


def shape_mask(shape: str, h: int, w: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Binary mask [h,w] of the shape, in pixels."""
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    if shape in ("circle", "ring"):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == "ring":
            ri = r * 0.55
            d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        d.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    return np.asarray(im) > 127


def paint_object(
    img: np.ndarray, mask: np.ndarray, colour: str, pattern: str, rng: np.random.Generator, s: int, r: float
) -> None:
    h, w = mask.shape
    base = np.array(COLOURS[colour], np.float32) + rng.uniform(-12, 12, 3)
    y, x = _grid(h, w, s)
    shade = 1 + 0.12 * ((x - x.mean()) * rng.uniform(-1, 1) + (y - y.mean()) * rng.uniform(-1, 1))
    col = np.broadcast_to(base, (h, w, 3)) * shade[..., None]
    if pattern:
        rs = r / s  # radius relative to the shorter side
        if pattern == "striped":
            a = rng.uniform(0, np.pi)
            period = rs * rng.uniform(0.45, 0.6)
            t = (x * np.cos(a) + y * np.sin(a)) / period
            stripe = (t % 1.0) < 0.45
        else:  # dotted
            period = rs * rng.uniform(0.4, 0.5)
            ox, oy = rng.uniform(0, period, 2)
            dx = (x + ox) % period - period / 2
            dy = (y + oy) % period - period / 2
            stripe = dx * dx + dy * dy < (period * 0.28) ** 2
        light = np.array([245, 245, 240], np.float32)
        col = np.where(stripe[..., None], light, col)
    img[mask] = col[mask]


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def render_scene(
    rng: np.random.Generator, h: int, w: int, split: str = "seen", min_objects: int = 2, max_objects: int = 8
) -> Tuple[np.ndarray, np.ndarray]:
    """(image uint8 [h,w,3], label uint8 [h,w] with indices into CLASSES)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    s = min(h, w)
    label = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        ground = GROUNDS[rng.integers(len(GROUNDS))]
        img = texture(ground, rng, h, w, s)
        label[:] = CLASS_INDEX[ground]
        sky = texture("sky", rng, h, w, s)
        y, x = _grid(h, w, s)
        horizon = rng.uniform(0.3, 0.6) * h / s + 0.03 * np.sin(x * rng.uniform(3, 9) + rng.uniform(0, 6))
        above = np.broadcast_to(y < horizon, (h, w))
        img[above] = sky[above]
        label[above] = CLASS_INDEX["sky"]
    else:
        kind = ["grass", "brick wall", "water", "sand"][rng.integers(4)]
        img = texture(kind, rng, h, w, s)
        label[:] = CLASS_INDEX[kind]

    n = int(rng.integers(min_objects, max_objects + 1))
    if split == "seen":
        pool = [o for o in OBJECTS if (o[1], o[2]) not in HELDOUT_PAIRS]
        chosen = [pool[rng.integers(len(pool))] for _ in range(n)]
    else:
        held = [o for o in OBJECTS if (o[1], o[2]) in HELDOUT_PAIRS]
        chosen = [OBJECTS[rng.integers(len(OBJECTS))] for _ in range(n)]
        # at least one held-out object, painted last so that nothing occludes it entirely
        chosen[-1] = held[rng.integers(len(held))]
    for pattern, colour, shape in chosen:
        r = rng.uniform(0.07, 0.17) * s
        cx = rng.uniform(0.05 * w, 0.95 * w)
        cy = rng.uniform(0.05 * h, 0.95 * h)
        m = shape_mask(shape, h, w, cx, cy, r, rng.uniform(0, 2 * np.pi))
        if not m.any():
            continue
        paint_object(img, m, colour, pattern, rng, s, r)
        label[m] = CLASS_INDEX[object_name(pattern, colour, shape)]
    img += rng.normal(0, 3.0, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), label


def scene_size(rng: np.random.Generator, lo: int = 320, hi: int = 640) -> Tuple[int, int]:
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
