"""Data layer: OpenCV decode + preprocess (torch-free), datasets, split, augmentation, sample data."""
