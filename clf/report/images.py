"""Pictures as inline data: thumbnails (resized, JPEG), Grad-CAM overlays, and data URIs for the HTML."""

from __future__ import annotations

import base64

import cv2
import numpy as np

THUMB_SIDE = 112  # px, the longest side of a gallery thumbnail: small files, still legible at 2x zoom
JPEG_QUALITY = 82
CAM_WEIGHT = 0.45  # share of the heatmap in the overlay: the image stays recognisable beneath it


def data_uri(data: bytes, mime: str) -> str:
    """`data:<mime>;base64,...`: an image the HTML carries itself (no file beside it, no network)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_uri(png: bytes) -> str:
    return data_uri(png, "image/png")


def jpeg_uri(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """An RGB uint8 HWC image as a JPEG data URI."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 3-channel array
        raise ValueError("OpenCV could not encode a thumbnail as JPEG")
    return data_uri(encoded.tobytes(), "image/jpeg")


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """`rgb` shrunk so that its longest side is at most `side` (never enlarged: the browser scales up for free)."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def overlay_heatmap(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap (any size) coloured with JET and blended over the RGB image."""
    height, width = rgb.shape[:2]
    cam = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - CAM_WEIGHT, heat, CAM_WEIGHT, 0)
