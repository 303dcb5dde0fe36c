"""Data layer: OpenCV decode + preprocess (torch-free), datasets, split, augmentation, sample data."""

import os

# clf reports every unreadable image itself, in one line; keep libpng's and OpenCV's own stderr chatter off the
# user's screen. Set here, before any module of the package imports cv2 (a user's own setting wins).
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
