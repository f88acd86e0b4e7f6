"""A small synthetic data set in the exact EPIC-KITCHENS-100 layout, for tests and the CPU demo.

Every clip shows one object whose *shape* is the noun and whose *motion* is the verb, over a textured background
with a static distractor (a thick diagonal line). Verbs and nouns are real EK100 classes (ids, keys, names):

    verb   motion of the object                  noun     shape
    take   moves up                              plate    disc
    put    moves down                            pan      ring
    open   grows                                 lid      triangle
    close  shrinks                               bowl     half-disc
    move   slides left or right                  bottle   upright bar
    shake  oscillates sideways (tail verb)       box      square
                                                 package  cross
                                                 jar      diamond
                                                 can      star (tail noun)

take/put and open/close are time reversals of each other, with random start and end positions and sizes, so no
single frame tells the verb; colours, sizes, speeds, backgrounds and distractors are random, so colour tells
nothing about the noun. About 15% of clips are shorter than 8 frames. Validation and test come from other videos
than train, and each has an unseen participant (P32 for validation, P33 for test, as in the official unseen lists).

Output (``root``)::

    annotations/   EPIC_100_train.csv, EPIC_100_validation.csv (15 columns), EPIC_100_test_timestamps.csv
                   (8 columns), EPIC_100_video_info.csv, and copies of the official class, action, tail-class and
                   unseen-participant CSVs (CC BY-NC 4.0, see LICENSE.md)
    rgb_frames/PXX/PXX_YY/frame_%010d.jpg     60 fps for PXX_YY, 50 fps for PXX_1YY
    videos/PXX/PXX_YY.MP4                     H.264, the same frames at the same rate
    features/      index.json + safetensors shards (8 tokens per clip: 8x8 RGB thumbnails of 8 frames)
    synthetic.json the generation settings (a folder made with the same settings is reused)

Frame ``k`` (0-based, presentation time ``k / fps``) is JPEG ``frame_{k+1:010d}.jpg`` and the ``k``-th frame of the
MP4. CSV frame numbers follow the official files: ``start_frame = int(start_sec * fps)``.
"""

from __future__ import annotations

import colorsys
import csv
import json
import math
import shutil
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .annotations import LABELLED_COLUMNS, SPLIT_FILES, TEST_COLUMNS, frames_fps
from .vocabulary import EK100Vocabulary

__all__ = ["SYNTHETIC_NOUNS", "SYNTHETIC_VERBS", "SyntheticEK100", "make_synthetic_ek100", "write_synthetic_clip"]

# verb key -> motion; noun key -> shape. The last of each is the (real EK100) tail class, kept rare.
SYNTHETIC_VERBS = {
    "take": "up",
    "put": "down",
    "open": "grow",
    "close": "shrink",
    "move": "slide",
    "shake": "oscillate",
}
SYNTHETIC_NOUNS = {
    "plate": "disc",
    "pan": "ring",
    "lid": "triangle",
    "bowl": "half-disc",
    "bottle": "upright-bar",
    "box": "square",
    "package": "cross",
    "jar": "diamond",
    "can": "star",
}
_TAIL_VERB, _TAIL_NOUN = "shake", "can"
_TAIL_FRACTION = 0.05
_VERSION = 1
_COPIED = (
    "EPIC_100_verb_classes.csv",
    "EPIC_100_noun_classes.csv",
    "EPIC_100_actions_3806.csv",
    "EPIC_100_tail_verbs.csv",
    "EPIC_100_tail_nouns.csv",
    "EPIC_100_unseen_participant_ids_validation.csv",
    "EPIC_100_unseen_participant_ids_test.csv",
    "LICENSE.md",
)
_SEEN = ("P01", "P02", "P03", "P04")
_UNSEEN = {"validation": "P32", "test": "P33"}
_FEATURE_FRAMES, _FEATURE_GRID = 8, 8


@dataclass(frozen=True)
class SyntheticEK100:
    """Where a synthetic data set lives. Pass ``annotations_dir`` and ``media_root`` (or ``features_dir``) to
    `load_ek100`."""

    root: Path
    annotations_dir: Path
    media_root: Path
    features_dir: Path | None
    num_rows: dict[str, int]


@dataclass
class _Clip:
    narration_id: str
    participant_id: str
    video_id: str
    verb: int
    noun: int
    first: int  # first frame index (0-based) of the annotated segment
    length: int  # frames in the annotated segment


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted, low-contrast texture (stripes, checks, smooth noise or a gradient), (size, size, 3) uint8."""
    hue = rng.random()
    base = np.array(_hsv(hue, rng.uniform(0.1, 0.45), rng.uniform(0.22, 0.42)), dtype=np.float32)
    other = np.array(_hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.45), rng.uniform(0.3, 0.52)), dtype=np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:  # stripes at a random angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 22) * size / 112
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    elif kind == 1:  # checks
        cell = max(2, int(rng.integers(6, 20) * size / 112))
        t = (((x // cell) + (y // cell)) % 2).astype(np.float32)
    elif kind == 2:  # smooth noise
        grid = rng.random((6, 6)).astype(np.float32)
        t = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32) / 255
    else:  # gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = (x * math.cos(angle) + y * math.sin(angle)) / size
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    image = base + t[..., None] * (other - base)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    if shape == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([cx - 0.5 * r, cy - 0.5 * r, cx + 0.5 * r, cy + 0.5 * r], fill=0)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)], fill=255)
    elif shape == "half-disc":  # dome down, flat side up
        d.pieslice([cx - r, cy - 1.5 * r, cx + r, cy + 0.5 * r], 0, 180, fill=255)
    elif shape == "upright-bar":
        d.rectangle([cx - 0.32 * r, cy - r, cx + 0.32 * r, cy + r], fill=255)
    elif shape == "square":
        d.rectangle([cx - 0.82 * r, cy - 0.82 * r, cx + 0.82 * r, cy + 0.82 * r], fill=255)
    elif shape == "cross":
        d.rectangle([cx - r, cy - 0.3 * r, cx + r, cy + 0.3 * r], fill=255)
        d.rectangle([cx - 0.3 * r, cy - r, cx + 0.3 * r, cy + r], fill=255)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + 0.68 * r, cy), (cx, cy + r), (cx - 0.68 * r, cy)], fill=255)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else 0.42 * r
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        d.polygon(points, fill=255)
    else:  # pragma: no cover - the tables above are closed
        raise ValueError(shape)
    return mask


class _ClipRenderer:
    """Random appearance and motion of one clip; ``frame(u)`` draws it at normalised time u in [0, 1]."""

    def __init__(self, rng: np.random.Generator, verb: str, noun: str, size: int, length: int) -> None:
        s = size / 112.0
        self.size, self.shape, self.motion = size, SYNTHETIC_NOUNS[noun], SYNTHETIC_VERBS[verb]
        self.background = Image.fromarray(_background(rng, size))
        self.colour = _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.8, 1.0))
        # The distractor: a static thick diagonal line (never axis-aligned, so it is no bar or cross).
        angle = math.radians(rng.choice([rng.uniform(30, 60), rng.uniform(120, 150)]))
        half, (dx, dy) = rng.uniform(14, 26) * s, (rng.uniform(0.15, 0.85) * size, rng.uniform(0.15, 0.85) * size)
        ends = [(dx - half * math.cos(angle), dy - half * math.sin(angle)), (dx + half * math.cos(angle), dy + half * math.sin(angle))]
        distractor = Image.new("L", (size, size), 0)
        ImageDraw.Draw(distractor).line(ends, fill=255, width=max(2, round(rng.uniform(3, 6) * s)))
        self.scene = self.background.copy()
        self.scene.paste(_hsv(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.65, 1.0)), mask=distractor)
        # Motion: a random sub-interval of the clip (the speed varies), linear inside it.
        self.m0, self.m1 = (0.0, 1.0) if length < 8 else (rng.uniform(0, 0.2), rng.uniform(0.8, 1.0))
        lo, hi = 2 * s, size - 2 * s
        if self.motion in ("grow", "shrink"):
            small, self.gain = rng.uniform(11, 14) * s, rng.uniform(1.7, 2.1)
            self.r0 = small if self.motion == "grow" else small * self.gain
            big = small * self.gain
            self.x0, self.y0 = rng.uniform(lo + big, hi - big), rng.uniform(lo + big, hi - big)
        else:
            self.r0 = rng.uniform(15, 21) * s
            r = self.r0
            self.drift = rng.uniform(-4, 4) * s
            if self.motion == "oscillate":
                self.amplitude, self.cycles, self.phase = rng.uniform(0.1, 0.14) * size, rng.uniform(1.5, 2.5), rng.uniform(0, 2 * math.pi)
                self.x0 = rng.uniform(lo + r + self.amplitude, hi - r - self.amplitude)
                self.y0 = rng.uniform(lo + r, hi - r)
            else:
                self.distance = rng.uniform(0.28, 0.42) * size
                d = self.distance
                if self.motion == "up":
                    self.x0, self.y0 = rng.uniform(lo + r + 4 * s, hi - r - 4 * s), rng.uniform(lo + r + d, hi - r)
                elif self.motion == "down":
                    self.x0, self.y0 = rng.uniform(lo + r + 4 * s, hi - r - 4 * s), rng.uniform(lo + r, hi - r - d)
                else:  # slide, left or right
                    self.direction = rng.choice([-1.0, 1.0])
                    start_lo = lo + r + (d if self.direction < 0 else 0)
                    start_hi = hi - r - (d if self.direction > 0 else 0)
                    self.x0, self.y0 = rng.uniform(start_lo, start_hi), rng.uniform(lo + r + 4 * s, hi - r - 4 * s)

    def state(self, u: float) -> tuple[float, float, float]:
        """Object centre and half-size at normalised clip time u."""
        v = min(max((u - self.m0) / (self.m1 - self.m0), 0.0), 1.0)
        x, y, r = self.x0, self.y0, self.r0
        if self.motion == "up":
            return x + self.drift * v, y - self.distance * v, r
        if self.motion == "down":
            return x + self.drift * v, y + self.distance * v, r
        if self.motion == "slide":
            return x + self.direction * self.distance * v, y + self.drift * v, r
        if self.motion == "grow":
            return x, y, r * self.gain**v
        if self.motion == "shrink":
            return x, y, r / self.gain**v
        u = min(max(u, 0.0), 1.0)
        return x + self.amplitude * math.sin(2 * math.pi * self.cycles * u + self.phase), y, r

    def frame(self, u: float | None) -> Image.Image:
        """The frame at normalised time u; ``None``: the background alone (between clips)."""
        if u is None:
            return self.background
        image = self.scene.copy()
        image.paste(self.colour, mask=_shape_mask(self.shape, self.size, *self.state(u)))
        return image


class _VideoWriter:
    """Writes the frames of one video as EK100 JPEG frames and/or an H.264 MP4 at the same rate."""

    def __init__(self, media_root: Path, video_id: str, fps: int, size: int, frames: bool, video: bool) -> None:
        participant = video_id.split("_")[0]
        self.folder = media_root / "rgb_frames" / participant / video_id if frames else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.container = self.stream = None
        if video:
            import av

            path = media_root / "videos" / participant / f"{video_id}.MP4"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(path), mode="w", format="mp4")
            self.stream = self.container.add_stream("libx264", rate=Fraction(fps))
            self.stream.width = self.stream.height = size
            self.stream.pix_fmt = "yuv420p"
            # One thread and no B-frame reordering: deterministic, and quality close to the JPEGs.
            self.stream.options = {"crf": "10", "preset": "ultrafast", "bf": "0", "threads": "1"}
            self.stream.codec_context.time_base = Fraction(1, fps)
        self.count = 0

    def write(self, image: Image.Image) -> None:
        if self.folder is not None:
            image.save(self.folder / f"frame_{self.count + 1:010d}.jpg", quality=92)
        if self.stream is not None:
            import av

            frame = av.VideoFrame.from_image(image)
            frame.pts = self.count
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()


def _timestamp(seconds: float, decimals: int) -> str:
    whole = round(seconds, decimals)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:0{3 + decimals}.{decimals}f}"


def _labels(rng: np.random.Generator, count: int, keys: list[str], tail: str) -> list[str]:
    """``count`` labels, balanced over ``keys`` except ``tail`` (about 5%, at least 2), shuffled."""
    n_tail = max(2, round(_TAIL_FRACTION * count))
    common = [k for k in keys if k != tail]
    labels = [tail] * n_tail + [common[i % len(common)] for i in range(count - n_tail)]
    rng.shuffle(labels)
    return labels


def _video_names(split: str, count: int, counters: dict[str, int]) -> list[tuple[str, str]]:
    """(participant, video_id) pairs; every third video of a participant is a 50 fps ``PXX_1YY`` one."""
    names = []
    for i in range(count):
        participant = _SEEN[i % len(_SEEN)]
        if split in _UNSEEN and i == count - 1:
            participant = _UNSEEN[split]
        counters[participant] = counters.get(participant, 0) + 1
        j = counters[participant]
        names.append((participant, f"{participant}_{100 + j}" if j % 3 == 0 else f"{participant}_{j:02d}"))
    return names


def write_synthetic_clip(path: str | Path, *, verb: str = "take", noun: str = "plate", size: int = 112,
                         seconds: float = 2.0, fps: int = 30, seed: int = 0) -> Path:
    """One clip of the synthetic EK100-format data as an H.264 MP4 (``verb``'s motion of ``noun``'s shape on a
    textured background): an example clip that can ship with a checkpoint, such as the demo's, where real EK100 footage
    cannot. Deterministic in its arguments. Returns ``path``."""
    import av

    if verb not in SYNTHETIC_VERBS or noun not in SYNTHETIC_NOUNS:
        raise ValueError(f"verb={verb!r}, noun={noun!r}: the synthetic classes are verbs {list(SYNTHETIC_VERBS)} and "
                         f"nouns {list(SYNTHETIC_NOUNS)}")
    if size < 32 or size % 2:
        raise ValueError(f"size={size}: expected an even number of pixels >= 32 (H.264 needs even sizes)")
    length = max(2, round(seconds * fps))
    renderer = _ClipRenderer(np.random.default_rng(seed), verb, noun, size, length)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast", "bf": "0", "threads": "1"}
        for k in range(length):
            frame = av.VideoFrame.from_image(renderer.frame(k / (length - 1)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_synthetic_ek100(
    root: str | Path,
    *,
    num_train: int = 400,
    num_validation: int = 128,
    num_test: int = 48,
    clips_per_video: int = 16,
    size: int = 112,
    short_fraction: float = 0.15,
    seed: int = 0,
    frames: bool = True,
    video: bool = True,
    features: bool = True,
    overwrite: bool = False,
) -> SyntheticEK100:
    """Generate (or reuse) the synthetic EK100-format data set in ``root``; see the module docstring.

    Args:
        num_train, num_validation, num_test: clips per split (each split's last video belongs to its unseen
            participant, so validation / test have more than ``clips_per_video`` clips when they have an unseen one).
        clips_per_video: clips per video. size: frame height and width in pixels (even, >= 32).
        short_fraction: fraction of clips with 4 or 7 frames (fewer than the 8 of the ``tiny`` preset).
        seed: everything is a deterministic function of the arguments.
        frames, video, features: which media layouts to write.
        overwrite: regenerate even when ``root`` holds a data set made with the same settings; without it, a
            ``root`` holding anything else raises ``FileExistsError``.
    """
    root = Path(root)
    if size < 32 or size % 2:
        raise ValueError(f"size={size}: expected an even number of pixels >= 32 (H.264 needs even sizes)")
    for name, value in (("num_train", num_train), ("num_validation", num_validation), ("num_test", num_test)):
        if value < 2 * len(SYNTHETIC_VERBS):
            raise ValueError(f"{name}={value}: expected at least {2 * len(SYNTHETIC_VERBS)} clips")
    if clips_per_video < 1 or not 0.0 <= short_fraction <= 1.0:
        raise ValueError("clips_per_video must be >= 1 and short_fraction in [0, 1]")
    settings = {"version": _VERSION, "num_train": num_train, "num_validation": num_validation, "num_test": num_test,
                "clips_per_video": clips_per_video, "size": size, "short_fraction": short_fraction, "seed": seed,
                "frames": frames, "video": video, "features": features}
    marker = root / "synthetic.json"
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    result = SyntheticEK100(
        root=root,
        annotations_dir=root / "annotations",
        media_root=root,
        features_dir=root / "features" if features else None,
        num_rows=counts,
    )
    if root.exists() and any(root.iterdir()) and not overwrite:
        if marker.is_file() and json.loads(marker.read_text()).get("settings") == settings:
            return result
        raise FileExistsError(
            f"{root} is not empty and was not made by make_synthetic_ek100 with these settings; "
            "pass overwrite=True or another folder"
        )
    for sub in ("annotations", "rgb_frames", "videos", "features", "synthetic.json"):
        target = root / sub
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (root / "annotations").mkdir(parents=True, exist_ok=True)

    vocab = EK100Vocabulary.default()
    package_data = resources.files(__package__) / "data"
    for name in _COPIED:
        (root / "annotations" / name).write_bytes((package_data / name).read_bytes())

    feature_writer = None
    if features:
        from .features import EK100FeatureWriter

        feature_writer = EK100FeatureWriter(
            root / "features",
            backbone=f"synthetic-thumbnails-{_FEATURE_GRID}x{_FEATURE_GRID}",
            has_cls=False,
            token_order="frame-major",
            task="recognition",
            sampling={"sampling": "segment", "num_frames": _FEATURE_FRAMES, "training": False},
            processor={"resize": [_FEATURE_GRID, _FEATURE_GRID], "resample": "box", "rescale_factor": 1 / 255},
            overwrite=True,
        )

    counters: dict[str, int] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    video_info: list[tuple[str, float, int]] = []
    verbs, nouns = list(SYNTHETIC_VERBS), list(SYNTHETIC_NOUNS)
    for split_index, split in enumerate(("train", "validation", "test")):
        count = counts[split]
        rng = np.random.default_rng([seed, split_index])
        verb_labels = _labels(rng, count, verbs, _TAIL_VERB)
        noun_labels = _labels(rng, count, nouns, _TAIL_NOUN)
        short = np.zeros(count, dtype=bool)
        short[: round(short_fraction * count)] = True
        rng.shuffle(short)
        n_videos = math.ceil(count / clips_per_video)
        videos = _video_names(split, n_videos, counters)
        rows[split] = []
        for v, (participant, video_id) in enumerate(videos):
            lo, hi = v * clips_per_video, min(count, (v + 1) * clips_per_video)
            if lo >= hi:
                break
            video_rng = np.random.default_rng([seed, split_index, 1000 + v])
            fps = frames_fps(video_id)
            writer = _VideoWriter(root, video_id, fps, size, frames, video)
            # Clip boundaries sit on multiples of 3 frames (0.05 s at 60 fps, 0.06 s at 50 fps), so the
            # two-decimal CSV timestamps are exact; one extra frame of the clip on each side of the annotated
            # segment absorbs any rounding of seconds to frames by a sampler.
            for i, clip_index in enumerate(range(lo, hi)):
                length = int(video_rng.choice([4, 7])) if short[clip_index] else 3 * int(video_rng.integers(5, 14)) + 1
                verb, noun = verb_labels[clip_index], noun_labels[clip_index]
                renderer = _ClipRenderer(video_rng, verb, noun, size, length)
                first = 3 * math.ceil((writer.count + int(video_rng.integers(5, 11))) / 3)
                while writer.count < first - 1:
                    writer.write(renderer.frame(None))
                thumbs = []
                for k in range(-1, length + 1):
                    image = renderer.frame(k / (length - 1))
                    writer.write(image)
                    if 0 <= k < length:
                        thumbs.append(image)
                clip = _Clip(f"{video_id}_{i}", participant, video_id, vocab.verb_id(verb), vocab.noun_id(noun), first, length)
                rows[split].append(_row(clip, fps, verb, noun, vocab))
                if feature_writer is not None:
                    feature_writer.add(clip.narration_id, _thumbnail_features(thumbs))
            for _ in range(6):
                writer.write(renderer.frame(None))
            writer.close()
            video_info.append((video_id, writer.count / fps, fps))

    for split, split_rows in rows.items():
        columns = TEST_COLUMNS if split == "test" else LABELLED_COLUMNS
        _write_csv(root / "annotations" / SPLIT_FILES[split], columns, sorted(split_rows, key=lambda r: r["narration_id"]))
    _write_csv(
        root / "annotations" / "EPIC_100_video_info.csv",
        ("video_id", "duration", "fps", "resolution"),
        [{"video_id": v, "duration": d, "fps": float(f), "resolution": f"{size}x{size}"} for v, d, f in sorted(video_info)],
    )
    if feature_writer is not None:
        feature_writer.close()
    marker.write_text(json.dumps({"generator": "modeling_mambavl.ek100.make_synthetic_ek100", "settings": settings}, indent=1))
    return result


def _row(clip: _Clip, fps: int, verb: str, noun: str, vocab: EK100Vocabulary) -> dict[str, Any]:
    start = clip.first / fps
    stop = (clip.first + clip.length - 1) / fps
    start_frame = max(1, int(round(start, 2) * fps + 1e-6))
    stop_frame = int(round(stop, 2) * fps + 1e-6)
    return {
        "narration_id": clip.narration_id,
        "participant_id": clip.participant_id,
        "video_id": clip.video_id,
        "narration_timestamp": _timestamp(start + 0.1, 3),
        "start_timestamp": _timestamp(start, 2),
        "stop_timestamp": _timestamp(stop, 2),
        "start_frame": start_frame,
        "stop_frame": stop_frame,
        "narration": f"{verb} {vocab.noun_name(clip.noun)}",
        "verb": verb,
        "verb_class": clip.verb,
        "noun": noun,
        "noun_class": clip.noun,
        "all_nouns": repr([noun]),
        "all_noun_classes": repr([clip.noun]),
    }


def _thumbnail_features(images: list[Image.Image]) -> np.ndarray:
    """(8, 192) features: 8 segment-sampled frames (eval rule), each an 8x8 RGB thumbnail in [0, 1]."""
    n = len(images)
    bounds = np.linspace(0, n, _FEATURE_FRAMES + 1)
    picks = np.floor((bounds[:-1] + bounds[1:]) / 2).astype(int).clip(0, n - 1)
    thumbs = [
        np.asarray(images[i].resize((_FEATURE_GRID, _FEATURE_GRID), Image.BOX), dtype=np.float32).reshape(-1) / 255.0
        for i in picks
    ]
    return np.stack(thumbs)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
