"""PNG / JPEG / TIFF reading (Pillow, tifffile) checked against SimpleITK; write_png round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image as PILImage

from medfm.errors import InputError, OutputError
from medfm.io import read_raster, write_png


@pytest.fixture(scope="module")
def hc18(shared_data: Path) -> Path:
    root = shared_data / "hc18_fetal_head" / "training_set"
    if not root.is_dir():
        pytest.skip("hc18_fetal_head not in the shared data")
    return root


def test_hc18_ultrasound_png_matches_simpleitk(hc18: Path) -> None:
    path = hc18 / "000_HC.png"
    img = read_raster(path)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert img.array.shape == (1, *ref.shape) == (1, 540, 800)
    assert img.array.dtype == np.uint8
    np.testing.assert_array_equal(img.array[0], ref)
    assert img.meta["spacing_known"] is False and img.spacing == (1.0, 1.0)


def test_hc18_annotation_png_is_rgb(hc18: Path) -> None:
    path = hc18 / "000_HC_Annotation.png"
    img = read_raster(path)
    with PILImage.open(path) as im:
        ref = np.asarray(im.convert("RGB"))
    assert img.channels == 3
    np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1), ref)


def test_rgba_drops_alpha_and_la_is_grey(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    PILImage.fromarray(rgba).save(tmp_path / "a.png")
    img = read_raster(tmp_path / "a.png")
    np.testing.assert_array_equal(img.array, np.moveaxis(rgba[..., :3], -1, 0))
    la = PILImage.fromarray(rgba[..., 0]).convert("LA")
    la.save(tmp_path / "la.png")
    assert read_raster(tmp_path / "la.png").array.shape == (1, 20, 30)


def test_palette_png_becomes_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:4] = (255, 0, 0)
    PILImage.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    img = read_raster(tmp_path / "p.png")
    np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1), rgb)


def test_jpeg_matches_pillow(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    PILImage.fromarray(arr).save(tmp_path / "x.jpg", quality=90)
    img = read_raster(tmp_path / "x.jpg")
    assert img.meta["format"] == "jpeg"
    with PILImage.open(tmp_path / "x.jpg") as im:
        np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1), np.asarray(im))


def test_16bit_tiff_and_page_stack(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 65536, (32, 48), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    img = read_raster(tmp_path / "g.tif")
    assert img.array.dtype == np.uint16
    np.testing.assert_array_equal(img.array[0], grey)
    np.testing.assert_array_equal(img.array[0], sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "g.tif"))))
    stack = rng.integers(0, 65536, (5, 32, 48), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tiff", stack)
    vol = read_raster(tmp_path / "s.tiff")
    assert vol.array.shape == (1, 5, 32, 48)
    np.testing.assert_array_equal(vol.array[0], stack)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_raster(tmp_path / "c.tif").array, np.moveaxis(rgb, -1, 0))


def test_write_png_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (1, 10, 12), dtype=np.uint16)
    rgb = rng.integers(0, 256, (3, 10, 12), dtype=np.uint8)
    labels = rng.integers(0, 3, (10, 12), dtype=np.int64)
    for name, arr in (("g16.png", grey16), ("rgb.png", rgb)):
        write_png(arr, tmp_path / name)
        np.testing.assert_array_equal(read_raster(tmp_path / name).array, arr)
    write_png(labels, tmp_path / "labels.png")
    np.testing.assert_array_equal(read_raster(tmp_path / "labels.png").array[0], labels)
    write_png(np.array([[0.0, 0.5, 1.0]]), tmp_path / "f.png")
    np.testing.assert_array_equal(read_raster(tmp_path / "f.png").array[0], [[0, 128, 255]])
    write_png(read_raster(tmp_path / "rgb.png"), tmp_path / "from_image.png")
    np.testing.assert_array_equal(read_raster(tmp_path / "from_image.png").array, rgb)


def test_write_png_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="window them first"):
        write_png(np.array([[-1000.0, 40.0]]), tmp_path / "hu.png")
    with pytest.raises(InputError, match="shape"):
        write_png(np.zeros((2, 4, 4), dtype=np.uint8), tmp_path / "two.png")
    write_png(np.zeros((4, 4), dtype=np.uint8), tmp_path / "z.png")
    with pytest.raises(OutputError, match="exists"):
        write_png(np.ones((4, 4), dtype=np.uint8), tmp_path / "z.png")
    write_png(np.ones((4, 4), dtype=np.uint8), tmp_path / "z.png", overwrite=True)
    assert read_raster(tmp_path / "z.png").array.max() == 1


def test_unreadable_raster_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputError, match="broken.png"):
        read_raster(bad)
