"""clf.data.preprocess: every input kind decodes to RGB uint8; the one preprocess function is exact."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from clf.config import IMAGENET_MEAN, IMAGENET_STD, Preprocess
import clf.data.preprocess as preprocess_module
from clf.data.preprocess import (
    decode_rgb,
    header_size,
    load_resized,
    load_rgb,
    max_image_pixels,
    normalize,
    normalize_batch,
    preprocess,
    read_bytes,
    resize_rgb,
)
from clf.errors import DataError

NOT_READABLE = "not a readable image (corrupt, truncated or unsupported format)"



@contextlib.contextmanager
def peak_memory_below(megabytes: float):
    """numpy's allocations (OpenCV's outputs included) inside the block peak below `megabytes`."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert peak < megabytes, f"peak {peak:.1f} MB"


def encode(ext: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    assert ok
    return buf.tobytes()


def rgb_pattern(h: int = 6, w: int = 8) -> np.ndarray:
    """A small RGB image whose every pixel is different, so any mix-up shows."""
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 30, y * 40, (x + y) * 10 + 5], axis=-1).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def palette_png(indices: np.ndarray, palette: list[tuple[int, int, int]], alpha: bytes | None = None) -> bytes:
    """A colour-type-3 (palette) PNG built by hand: signature, IHDR, PLTE, [tRNS], IDAT, IEND."""
    h, w = indices.shape
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    raw = b"".join(b"\x00" + row.astype(np.uint8).tobytes() for row in indices)  # filter 0 per row
    chunks = [png_chunk(b"IHDR", ihdr), png_chunk(b"PLTE", bytes(v for rgb in palette for v in rgb))]
    if alpha is not None:
        chunks.append(png_chunk(b"tRNS", alpha))
    chunks += [png_chunk(b"IDAT", zlib.compress(raw)), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment (little-endian TIFF, one IFD0 entry: Orientation) after SOI."""
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count 1, value
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + app1 + jpeg[2:]


# --- decoding: every input kind -> RGB uint8 (H, W, 3) ---


def test_png_8bit_is_returned_as_rgb_exactly():
    rgb = rgb_pattern()
    out = decode_rgb(encode(".png", rgb[..., ::-1]))  # OpenCV encodes BGR
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out, rgb)


def test_png_16bit_colour_scales_to_8bit_with_rounding():
    bgr16 = np.zeros((2, 3, 3), np.uint16)
    bgr16[0, 0] = (0, 257 * 100, 65535)  # B, G, R
    bgr16[1, 2] = (129, 128, 65407)  # nearest 8-bit level: 129/257 = 0.502 -> 1, 128/257 -> 0, 65407/257 = 254.5 -> 255
    out = decode_rgb(encode(".png", bgr16))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [255, 100, 0]
    assert out[1, 2].tolist() == [255, 0, 1]


def test_png_16bit_grayscale_becomes_three_equal_channels():
    gray16 = np.array([[0, 257 * 7], [65535, 257 * 200]], np.uint16)
    out = decode_rgb(encode(".png", gray16))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 7], [255, 200]])
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_png_8bit_grayscale_becomes_three_equal_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = decode_rgb(encode(".png", gray))
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_png_rgba_drops_alpha_and_keeps_colour():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., :3] = (30, 20, 10)
    bgra[0, 0, 3], bgra[0, 1, 3], bgra[1, :, 3] = 0, 128, 255  # fully transparent to opaque
    out = decode_rgb(encode(".png", bgra))
    assert out.shape == (2, 2, 3)
    assert (out == np.array([10, 20, 30], np.uint8)).all()


def test_palette_png_with_transparency_maps_indices_to_colours():
    indices = np.array([[0, 1, 2], [2, 1, 0]])
    palette = [(255, 0, 0), (0, 128, 0), (10, 20, 250)]
    out = decode_rgb(palette_png(indices, palette, alpha=b"\x00\xff\x80"))
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    expected = np.array(palette, np.uint8)[indices]
    np.testing.assert_array_equal(out, expected)


def test_jpeg_exif_orientation_6_is_applied():
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red, right half black
    jpeg = with_exif_orientation(encode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]), 6)
    plain = decode_rgb(encode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]))
    out = decode_rgb(jpeg)
    assert plain.shape == (20, 40, 3)
    assert out.shape == (40, 20, 3)  # orientation 6: rotate 90 degrees clockwise to display
    assert out[5, 10, 0] > 200 and out[5, 10, 1:].max() < 50  # the red left half is now on top
    assert out[35, 10].max() < 50


def test_jpeg_decodes_close_to_source():
    rgb = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    out = decode_rgb(encode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]))
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - rgb).max() <= 3


@pytest.mark.parametrize("ext", [".bmp", ".tiff", ".webp"])
def test_other_formats_decode(ext: str):
    rgb = rgb_pattern()
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []  # 101: lossless
    np.testing.assert_array_equal(decode_rgb(encode(ext, rgb[..., ::-1], params)), rgb)


def test_non_ascii_path(tmp_path: Path):
    path = tmp_path / "dossier é" / "ñandú_图像.png"
    path.parent.mkdir()
    path.write_bytes(encode(".png", rgb_pattern()[..., ::-1]))
    np.testing.assert_array_equal(load_rgb(path), rgb_pattern())
    np.testing.assert_array_equal(load_rgb(str(path)), rgb_pattern())


# --- errors: one line naming the file ---


def test_corrupt_bytes(tmp_path: Path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as err:
        load_rgb(path)
    assert str(err.value) == f"{path}: {NOT_READABLE}"


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file(tmp_path: Path, ext: str):
    data = encode(ext, np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    path = tmp_path / f"half{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        preprocess(path, Preprocess(size=(8, 8)))
    assert str(err.value) == f"{path}: {NOT_READABLE}"


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_rgb(path)
    assert str(err.value) == f"{path}: empty file, not an image"


def test_text_file_named_like_an_image(tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError) as err:
        load_rgb(path)
    assert str(err.value) == f"{path}: {NOT_READABLE}"


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(DataError) as err:
        read_bytes(tmp_path / "nope.png")
    assert str(err.value) == f"{tmp_path / 'nope.png'}: file not found"
    with pytest.raises(DataError) as err:
        load_rgb(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a folder, not an image"


def test_bad_bytes_are_named_as_bytes():
    with pytest.raises(DataError) as err:
        load_rgb(b"GIF89a\x01\x00\x01\x00 nonsense")  # a 1x1 GIF header, then garbage
    assert str(err.value) == f"<bytes>: {NOT_READABLE}"
    with pytest.raises(DataError) as err:
        load_rgb(b"")
    assert str(err.value) == "<bytes>: empty file, not an image"


def test_in_memory_arrays():
    rgb = rgb_pattern()
    assert load_rgb(rgb) is rgb  # already RGB: no copy
    gray = rgb[..., 0].copy()
    out = load_rgb(gray)
    assert out.shape == (6, 8, 3) and (out == gray[..., None]).all()
    with pytest.raises(DataError) as err:
        load_rgb(rgb.astype(np.float32))
    assert str(err.value) == "in-memory image: expected uint8 RGB array, got dtype float32"
    with pytest.raises(DataError) as err:
        load_rgb(np.zeros((4, 4, 4), np.uint8))
    assert str(err.value) == "in-memory image: expected shape (H, W, 3) or (H, W), got (4, 4, 4)"


# --- resize, normalize, preprocess ---


def test_every_source_kind_gives_the_same_input(tmp_path: Path):
    rgb = rgb_pattern(10, 14)
    data = encode(".png", rgb[..., ::-1])
    path = tmp_path / "a.png"
    path.write_bytes(data)
    pre = Preprocess(size=(8, 8))
    expected = preprocess(rgb, pre)
    for source in (path, str(path), data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(preprocess(source, pre), expected)


def test_preprocess_shape_dtype_range():
    pre = Preprocess(size=(12, 20))
    full_range = np.arange(256, dtype=np.uint8).reshape(16, 16)  # gray 0..255
    out = preprocess(full_range, pre)
    assert out.shape == (3, 12, 20) and out.dtype == np.float32 and out.flags.c_contiguous
    lo = (0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    hi = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    for c in range(3):
        assert lo[c] - 1e-5 <= out[c].min() and out[c].max() <= hi[c] + 1e-5


def test_normalize_hand_computed_pixel():
    image = np.zeros((2, 3, 3), np.uint8)
    image[1, 2] = (255, 0, 128)
    out = normalize(image, Preprocess(size=(2, 3)))
    # (v / 255 - mean) / std with ImageNet statistics, computed by hand:
    assert out[0, 1, 2] == pytest.approx((1.0 - 0.485) / 0.229, abs=1e-5)  # 2.2489083
    assert out[1, 1, 2] == pytest.approx((0.0 - 0.456) / 0.224, abs=1e-5)  # -2.0357143
    assert out[2, 1, 2] == pytest.approx((128 / 255 - 0.406) / 0.225, abs=1e-5)  # 0.4264052
    assert out[0, 0, 0] == pytest.approx(-0.485 / 0.229, abs=1e-5)


def test_normalize_custom_scale_mean_std():
    pre = Preprocess(size=(1, 1), scale=1.0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    out = normalize(np.array([[[12, 28, 80]]], np.uint8), pre)
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 2.0, 10.0], rtol=0, atol=1e-6)


def test_normalize_batch_matches_per_image():
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    pre = Preprocess(size=(5, 7))
    out = normalize_batch(batch, pre)
    assert out.shape == (4, 3, 5, 7) and out.dtype == np.float32 and out.flags.c_contiguous
    for i in range(4):
        np.testing.assert_array_equal(out[i], normalize(batch[i], pre))


def test_resize_stretch():
    image = rgb_pattern(6, 8)
    assert resize_rgb(image, Preprocess(size=(6, 8))) is image  # already the size: untouched
    out = resize_rgb(image, Preprocess(size=(3, 16), interpolation="nearest"))
    assert out.shape == (3, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, ::2], image[::2])  # nearest: every other row, each column twice


def test_resize_shorter_crop_takes_the_centre():
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, :10], image[:, 10:20], image[:, 20:] = 50, 150, 250
    out = resize_rgb(image, Preprocess(size=(10, 10), resize="shorter_crop"))
    assert out.shape == (10, 10, 3) and (out == 150).all()
    portrait_pre = Preprocess(size=(5, 5), resize="shorter_crop", interpolation="area")
    portrait = resize_rgb(image.transpose(1, 0, 2), portrait_pre)
    assert portrait.shape == (5, 5, 3) and (portrait == 150).all()
    wide_target = resize_rgb(image, Preprocess(size=(4, 12), resize="shorter_crop"))
    assert wide_target.shape == (4, 12, 3)


@pytest.mark.parametrize("interpolation", ["nearest", "linear", "area", "cubic", "lanczos"])
def test_load_resized_every_interpolation(interpolation: str):
    out = load_resized(rgb_pattern(20, 30), Preprocess(size=(7, 9), interpolation=interpolation))
    assert out.shape == (7, 9, 3) and out.dtype == np.uint8


def test_data_modules_never_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import clf.data.preprocess, clf.data.files, clf.data.datasets, clf.data.split, "
        "clf.data.augment, clf.data.sample\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("resize", ["stretch", "shorter_crop"])
@pytest.mark.parametrize("interpolation", ["linear", "area", "cubic"])
def test_swapping_channels_after_resizing_gives_identical_pixels(tmp_path, resize, interpolation):
    """load_resized swaps B and R on the small image; the result must equal decode-to-RGB then resize."""
    from clf.data.preprocess import load_rgb, resize_rgb

    rng = np.random.default_rng(3)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (301, 417, 3), dtype=np.uint8), (5, 5), 0)
    path = tmp_path / "photo.jpg"
    path.write_bytes(cv2.imencode(".jpg", photo)[1].tobytes())
    pre = Preprocess(size=(48, 64), resize=resize, interpolation=interpolation)
    expected = resize_rgb(load_rgb(path), pre)
    assert np.array_equal(load_resized(path, pre), expected)
    assert np.array_equal(load_resized(path.read_bytes(), pre), expected)


# --- hostile files: only regular files are opened ---


def test_fifo_is_refused_without_opening_it(tmp_path: Path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)  # no writer: opening it for a plain read would block forever
    with pytest.raises(DataError) as err:
        load_rgb(fifo)
    assert str(err.value) == f"{fifo}: not a regular file (FIFO)"


def test_fifo_swapped_in_after_the_check_cannot_hang(tmp_path: Path, monkeypatch):
    """The race: stat says regular, then a FIFO is opened; O_NONBLOCK returns at once and fstat catches it."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    regular_mode = os.stat(__file__)
    monkeypatch.setattr(preprocess_module.os, "stat", lambda path: regular_mode)
    with pytest.raises(DataError) as err:
        read_bytes(fifo)
    assert str(err.value) == f"{fifo}: not a regular file (FIFO)"


def test_link_to_a_device_is_refused_and_a_link_to_an_image_works(tmp_path: Path):
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(DataError) as err:
        load_rgb(tmp_path / "zero.jpg")
    assert str(err.value) == f"{tmp_path / 'zero.jpg'}: not a regular file (character device)"
    real = tmp_path / "real.png"
    real.write_bytes(encode(".png", rgb_pattern()[..., ::-1]))
    (tmp_path / "link.png").symlink_to(real)
    np.testing.assert_array_equal(load_rgb(tmp_path / "link.png"), rgb_pattern())


def test_socket_is_refused(tmp_path: Path):
    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(DataError) as err:
            read_bytes(path)
    assert str(err.value) == f"{path}: not a regular file (socket)"


def test_dangling_link_and_link_loop(tmp_path: Path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError) as err:
        read_bytes(tmp_path / "gone.png")
    assert str(err.value) == f"{tmp_path / 'gone.png'}: file not found"
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    with pytest.raises(DataError) as err:
        read_bytes(tmp_path / "loop.png")
    assert str(err.value) == f"{tmp_path / 'loop.png'}: cannot read (Too many levels of symbolic links)"


# --- the pixel budget: refused from the header, before decoding ---


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with a token IDAT: what a decompression bomb looks like up front."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("ext", "params"),
    [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []), (".webp", []),
     (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tif", []), (".gif", [])],
)
def test_header_size_of_every_format(ext: str, params: list[int]):
    assert header_size(encode(ext, np.zeros((37, 53, 3), np.uint8), params)) == (53, 37)


def test_header_size_of_exif_jpeg_and_vp8x_webp():
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 10) + b"Exif\0\0" + b"\0" * 4  # an APP1 segment before the frame
    jpeg = encode(".jpg", np.zeros((9, 11, 3), np.uint8))
    assert header_size(jpeg[:2] + exif + jpeg[2:]) == (11, 9)
    vp8x = (b"RIFF\0\0\0\0WEBPVP8X" + b"\x0a\0\0\0" + b"\x10\0\0\0"
            + (3999).to_bytes(3, "little") + (2).to_bytes(3, "little"))
    assert header_size(vp8x) == (4000, 3)


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\0\xff\xff\xff\xff", b"RIFF"])
def test_header_size_of_truncated_headers_is_unknown(data: bytes):
    assert header_size(data) is None


def test_huge_image_is_refused_before_decoding(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 20000))
    with peak_memory_below(20), pytest.raises(DataError) as err:  # decoding it would take 1.2 GB
        load_resized(path, Preprocess(size=(8, 8)))
    assert str(err.value) == (
        f"{path}: image is 20000x20000 (400 megapixels), above the budget of 100 megapixels; "
        "if it is genuine, raise it with CLF_MAX_IMAGE_PIXELS=<pixels> (0 = no limit)"
    )


def test_pixel_budget_from_the_environment_and_the_module(monkeypatch):
    data = encode(".png", np.zeros((10, 20, 3), np.uint8))
    monkeypatch.setenv("CLF_MAX_IMAGE_PIXELS", "199")
    assert max_image_pixels() == 199
    with pytest.raises(DataError, match=r"^<bytes>: image is 20x10 \(0.0002 megapixels\), above the budget of "):
        decode_rgb(data)
    monkeypatch.setenv("CLF_MAX_IMAGE_PIXELS", "200")
    assert decode_rgb(data).shape == (10, 20, 3)  # the budget is inclusive
    monkeypatch.setenv("CLF_MAX_IMAGE_PIXELS", "0")  # no limit
    assert decode_rgb(data).shape == (10, 20, 3)
    monkeypatch.setattr(preprocess_module, "MAX_IMAGE_PIXELS", 100)  # a program's own setting wins
    assert max_image_pixels() == 100
    with pytest.raises(DataError, match="above the budget of 0.0001 megapixels"):
        decode_rgb(data)


@pytest.mark.parametrize("value", ["lots", "-5", "1e6"])
def test_bad_pixel_budget_setting_is_one_line(monkeypatch, value: str):
    monkeypatch.setenv("CLF_MAX_IMAGE_PIXELS", value)
    with pytest.raises(DataError) as err:
        decode_rgb(encode(".png", np.zeros((2, 2, 3), np.uint8)))
    assert str(err.value) == (
        f"CLF_MAX_IMAGE_PIXELS={value}: not a whole number of pixels; set e.g. 200000000 (0 = no limit) or unset it"
    )


# --- shorter_crop: the crop moves ahead of the resize only for extreme shapes ---


def old_shorter_crop(image: np.ndarray, pre: Preprocess) -> np.ndarray:
    """The path before the crop-first change: scale the whole image, then take the centre."""
    height, width = pre.size
    src_h, src_w = image.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    if (new_h, new_w) != (src_h, src_w):
        image = cv2.resize(image, (new_w, new_h), interpolation=preprocess_module._INTERPOLATION[pre.interpolation])
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[top : top + height, left : left + width]


def takes_the_window_path(shape: tuple[int, int], size: tuple[int, int]) -> bool:
    (src_h, src_w), (height, width) = shape, size
    scale = max(height / src_h, width / src_w)
    scaled = max(height, round(src_h * scale)) * max(width, round(src_w * scale))
    return scaled > preprocess_module._MAX_INTERMEDIATE_RATIO * max(src_h * src_w, height * width)


def smooth_noise(shape: tuple[int, int]) -> np.ndarray:
    noise = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


@pytest.mark.parametrize("interpolation", ["linear", "area", "cubic", "lanczos", "nearest"])
@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (33, 200), (200, 33), (15, 15), (300, 40), (1000, 999)])
@pytest.mark.parametrize("size", [(16, 16), (12, 20), (64, 48)])
def test_ordinary_shapes_give_the_same_pixels_as_before(interpolation: str, shape, size):
    pre = Preprocess(size=size, resize="shorter_crop", interpolation=interpolation)
    assert not takes_the_window_path(shape, size)
    image = smooth_noise(shape)
    np.testing.assert_array_equal(resize_rgb(image, pre), old_shorter_crop(image, pre))


@pytest.mark.parametrize("interpolation", ["linear", "area", "cubic", "lanczos", "nearest"])
@pytest.mark.parametrize(("shape", "size"), [((2, 1000), (16, 16)), ((1, 777), (12, 20)), ((2, 5000), (12, 20)),
                                             ((1000, 1), (16, 16)), ((4, 3000), (32, 32)), ((300, 7), (64, 48))])
def test_extreme_shapes_resize_only_the_window_with_the_same_pixels(interpolation: str, shape, size):
    """Where the window can be aligned on the scale's period (here: every case) the pixels are those of the full
    resize, up to OpenCV's fixed-point rounding (+-1)."""
    pre = Preprocess(size=size, resize="shorter_crop", interpolation=interpolation)
    assert takes_the_window_path(shape, size)
    image = smooth_noise(shape)
    new, old = resize_rgb(image, pre), old_shorter_crop(image, pre)
    assert new.shape == (*size, 3)
    assert np.abs(new.astype(int) - old.astype(int)).max() <= 1


def test_extreme_shapes_without_an_aligned_window_shift_less_than_a_pixel():
    """3x3001 at 16 px scales by 16007/3001 (no common period): the window's scaled length is rounded, a sub-pixel
    shift; on smooth content the pixels stay close to the full resize."""
    pre = Preprocess(size=(16, 16), resize="shorter_crop")
    assert takes_the_window_path((3, 3001), (16, 16))
    image = cv2.GaussianBlur(smooth_noise((3, 3001)), (0, 0), 4)
    diff = np.abs(resize_rgb(image, pre).astype(int) - old_shorter_crop(image, pre).astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 4


def test_a_1x100000_strip_is_fast(tmp_path: Path):
    strip = np.zeros((1, 100_000, 3), np.uint8)
    strip[:, ::3] = 255
    path = tmp_path / "strip.png"
    path.write_bytes(encode(".png", strip))  # ~30 KB on disk; scaled whole to 224 px it was 6.7 GB
    pre = Preprocess(size=(224, 224), resize="shorter_crop")
    with peak_memory_below(20):  # resized whole it was 6.7 GB: memory, unlike seconds, does not vary with load
        out = load_resized(path, pre)
    assert out.shape == (224, 224, 3)
