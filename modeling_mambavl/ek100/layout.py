"""Where EK100 media live: video ids, the frame rate of the released JPEG frames, frame-folder and video-file paths.

Kept apart from the annotation reader and the media readers, which both need it (the reader to validate video ids,
the media readers to build paths), so that neither imports the other.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["VIDEO_ID_PATTERN", "frame_folder", "frames_fps", "video_file"]

# Video ids become paths (rgb_frames/PXX/<video_id>, videos/PXX/<video_id>.MP4): only the EK100 form is accepted,
# never separators or "..".
VIDEO_ID_PATTERN = re.compile(r"^P\d+_\d+$")


def frames_fps(video_id: str) -> int:
    """Frame rate of the released JPEG frames of a video: 60 for ``PXX_YY``, 50 for ``PXX_1YY`` (EK100 extension)."""
    suffix = video_id.rsplit("_", 1)[-1]
    return 50 if len(suffix) == 3 else 60


def _inside(media_root: str | Path, video_id: str, path: Path) -> Path:
    """``path`` if ``video_id`` is an EK100 id and ``path`` resolves inside ``media_root``; else ``ValueError``.

    A video id comes from an annotation file; one holding separators or ``..`` must never read media elsewhere
    (a symbolic link inside the root pointing out of it is refused as well)."""
    if not isinstance(video_id, str) or not VIDEO_ID_PATTERN.match(video_id):
        raise ValueError(f"video_id {video_id!r}: not an EK100 video id like 'P01_01' or 'P01_101'; media paths are "
                         f"built from it under {media_root}")
    root = Path(media_root).resolve()
    if not path.resolve().is_relative_to(root):
        raise ValueError(f"video_id {video_id!r}: its media path {path} resolves to {path.resolve()}, outside the "
                         f"media root {root}")
    return path


def frame_folder(media_root: str | Path, video_id: str) -> Path:
    """``<media_root>/rgb_frames/PXX/PXX_YY`` (the EK100 frame layout); ``ValueError`` for a video id that is not
    ``PXX_YY`` or a path outside ``media_root``."""
    path = Path(media_root) / "rgb_frames" / str(video_id).split("_")[0] / str(video_id)
    return _inside(media_root, video_id, path)


def video_file(media_root: str | Path, video_id: str) -> Path:
    """``<media_root>/videos/PXX/PXX_YY.MP4`` (a lower-case ``.mp4`` is accepted too); ``ValueError`` for a video id
    that is not ``PXX_YY`` or a path outside ``media_root``."""
    folder = Path(media_root) / "videos" / str(video_id).split("_")[0]
    path = folder / f"{video_id}.MP4"
    if not path.exists() and (folder / f"{video_id}.mp4").exists():
        path = folder / f"{video_id}.mp4"
    return _inside(media_root, video_id, path)
