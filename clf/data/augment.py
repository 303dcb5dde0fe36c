"""Geometric training augmentation on the resized uint8 image (deterministic: the caller draws)."""

from __future__ import annotations

import cv2
import numpy as np


def augment(image: np.ndarray, flip: bool, angle_deg: float) -> np.ndarray:
    """Horizontally flip, then rotate about the centre, keeping the shape.

    Rotation is counter-clockwise for positive angles (OpenCV's convention); the corners it
    uncovers are filled by mirroring (BORDER_REFLECT_101) rather than with black, so the network
    does not learn "black corners mean augmented".

    Args:
        image: uint8 (H, W, 3) or (H, W).
        flip: mirror left-right.
        angle_deg: rotation in degrees; 0 skips it.

    Returns:
        uint8 array of the same shape; ``image`` itself when there is nothing to do.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"augment expects a uint8 (H, W, C) image, got {image.dtype} {image.shape}")
    shape = image.shape
    if flip:
        image = cv2.flip(image, 1)
    if angle_deg:
        height, width = image.shape[:2]
        # (w-1)/2, (h-1)/2 is the exact pixel-grid centre: 180 degrees maps pixels onto pixels.
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle_deg), 1.0)
        image = cv2.warpAffine(
            image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
    return image if image.shape == shape else image.reshape(shape)  # OpenCV drops a size-1 channel axis
