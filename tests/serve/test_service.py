"""The segmentation service: one embedding per image, masks equal to the model's own, clear errors."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.serve import SegmentationService
from tests.serve.conftest import decode_png, png_bytes


def _mask(result: dict) -> np.ndarray:
    return decode_png(base64.b64decode(result["mask_png"])) > 0


def test_masks_equal_the_models_own_and_each_image_is_embedded_once(tiny_sam) -> None:
    svc = SegmentationService(tiny_sam, max_images=4)
    a = svc.add_image(png_bytes(0), "a.png")
    b = svc.add_image(png_bytes(1), "b.png")
    assert (a["width"], a["height"], a["channels"], a["depth"], a["slice"], a["spacing_mm"]) == (64, 48, 1, 1, 0, None)
    assert a["id"] != b["id"] and tiny_sam.encoder_calls == 2
    assert svc.add_image(png_bytes(0), "again.png")["id"] == a["id"] and tiny_sam.encoder_calls == 2
    box = [14, 9, 46, 31]
    got_a = svc.segment(a["id"], box=box)  # switches back to a's embedding: no encoder run
    got_b = svc.segment(b["id"], points=[[30, 20], [5, 5]], labels=[1, 0])
    again_a = svc.segment(a["id"], box=box)
    assert tiny_sam.encoder_calls == 2
    assert "area_mm2" not in got_a  # a PNG holds no pixel size
    # the same prompts straight on the model
    tiny_sam.set_image(svc.session(a["id"]).slice_array(0))
    want_a = tiny_sam.predict(boxes=np.array([box], float))[0]
    tiny_sam.set_image(svc.session(b["id"]).slice_array(0))
    want_b = tiny_sam.predict(points=np.array([[[30, 20], [5, 5]]], float), point_labels=np.array([[1, 0]]))[0]
    np.testing.assert_array_equal(_mask(got_a), want_a)
    np.testing.assert_array_equal(_mask(again_a), want_a)
    np.testing.assert_array_equal(_mask(got_b), want_b)
    assert got_a["area_px"] == int(want_a.sum()) and 0 < got_a["area_px"] < 48 * 64
    assert isinstance(got_a["score"], float) and got_a["seconds"] >= 0


def test_least_recently_used_image_and_embedding_are_dropped(tiny_sam) -> None:
    svc = SegmentationService(tiny_sam, max_images=2, max_embeddings=1)
    a = svc.add_image(png_bytes(0), "a.png")["id"]
    b = svc.add_image(png_bytes(1), "b.png")["id"]
    calls = tiny_sam.encoder_calls
    svc.segment(a, box=[1, 1, 20, 20])  # a is now the most recent; its embedding was dropped for b's
    assert tiny_sam.encoder_calls == calls + 1
    c = svc.add_image(png_bytes(2), "c.png")["id"]
    assert [i["id"] for i in svc.images()] == [a, c]
    with pytest.raises(KeyError):
        svc.segment(b, box=[1, 1, 20, 20])
    svc.drop(a)
    with pytest.raises(KeyError):
        svc.session(a)


def test_dicom_keeps_spacing_and_window_and_volumes_are_prompted_slice_by_slice(tiny_sam, tmp_path: Path) -> None:
    import nibabel as nib
    from pydicom.data import get_testdata_file

    svc = SegmentationService(tiny_sam)
    ct = svc.add_image(Path(get_testdata_file("CT_small.dcm")).read_bytes(), "CT_small.dcm")
    assert (ct["width"], ct["height"]) == (128, 128) and ct["spacing_mm"] == pytest.approx([0.661468, 0.661468])
    r = svc.segment(ct["id"], box=[30, 30, 90, 90])
    assert r["area_mm2"] == pytest.approx(r["area_px"] * 0.661468**2)
    shown = decode_png(svc.display(ct["id"]))
    assert shown.dtype == np.uint8 and shown.shape == (128, 128) and shown.max() > shown.min()
    assert svc.session(ct["id"]).window == (40.0 - 200.0, 40.0 + 200.0)  # the file's soft-tissue window
    vol = np.zeros((40, 30, 7), np.float32)  # NIfTI x, y, z
    vol[10:30, 5:20, :] = 100.0
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 3.0, 1.0])), path)
    calls = tiny_sam.encoder_calls
    v = svc.add_image(path.read_bytes(), "vol.nii.gz")
    assert (v["slice"], v["depth"]) == (3, 7) and v["spacing_mm"] == pytest.approx([0.8, 0.8])
    assert tiny_sam.encoder_calls == calls + 1  # the middle slice, embedded on upload
    box = [8, 3, 32, 22]  # around the bright block (x 10..30, y 5..20)
    r3, r0 = svc.segment(v["id"], box=box), svc.segment(v["id"], box=box, z=0)
    assert (r3["slice"], r0["slice"]) == (3, 0) and tiny_sam.encoder_calls == calls + 2
    svc.segment(v["id"], box=box, z=3)  # back to a kept embedding
    assert tiny_sam.encoder_calls == calls + 2
    tiny_sam.set_image(svc.session(v["id"]).volume[:, 0])
    np.testing.assert_array_equal(_mask(r0), tiny_sam.predict(boxes=np.array([box], float))[0])
    assert decode_png(svc.display(v["id"], 6)).shape == (30, 40)  # (y, x) of the NIfTI's (x, y, z)
    with pytest.raises(InputError, match=r"vol.nii.gz: slice 7 is outside the volume \(0..6\)"):
        svc.segment(v["id"], box=box, z=7)
    with pytest.raises(InputError, match="a 2D image has no slice 1"):
        svc.display(ct["id"], 1)


def test_bad_uploads_and_prompts_are_one_clear_error(tiny_sam) -> None:
    svc = SegmentationService(tiny_sam, max_bytes=10_000)
    with pytest.raises(InputError, match="empty"):
        svc.add_image(b"", "a.png")
    with pytest.raises(InputError, match="x.png"):
        svc.add_image(b"not an image at all", "x.png")
    with pytest.raises(InputError, match="more than the service accepts"):
        svc.add_image(b"\0" * 10_001, "big.dcm")
    i = svc.add_image(png_bytes(0), "../../etc/a.png")["id"]  # only the name is used, never the path
    assert svc.session(i).name == "../../etc/a.png"
    with pytest.raises(InputError, match="outside the 64x48 image"):
        svc.segment(i, box=[10, 10, 80, 20])
    with pytest.raises(InputError, match="give a box"):
        svc.segment(i)
    with pytest.raises(InputError, match="2 points need 2 labels"):
        svc.segment(i, points=[[1, 1], [2, 2]], labels=[1])
    with pytest.raises(InputError, match="each 1 \\(inside\\) or 0"):
        svc.segment(i, points=[[1, 1]], labels=[2])
    with pytest.raises(InputError, match="outside the 64x48 image"):
        svc.segment(i, points=[[64, 1]])


def test_propagation_through_a_volume_equals_propagate_3d_and_reuses_embeddings(tiny_sam, tmp_path: Path) -> None:
    import nibabel as nib

    from medfm.tasks.segmentation.promptable import propagate_3d

    vol = np.zeros((40, 30, 9), np.float32)  # NIfTI x, y, z: a bright block through slices 2..6
    vol[10:30, 5:20, 2:7] = 100.0
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 3.0, 1.0])), path)
    svc = SegmentationService(tiny_sam)
    v = svc.add_image(path.read_bytes(), "vol.nii.gz")
    box = [8, 3, 32, 22]
    r = svc.propagate(v["id"], box=box)
    calls = tiny_sam.encoder_calls
    assert r["slice"] == 4 and r["masks"] and r["voxels"] > 0
    assert r["volume_ml"] == pytest.approx(r["voxels"] * 0.8 * 0.8 * 3.0 / 1000)
    again = svc.propagate(v["id"], box=box)  # every slice it visits is embedded already
    assert tiny_sam.encoder_calls == calls and again["masks"] == r["masks"]
    want = propagate_3d(tiny_sam, svc.session(v["id"]).volume, 4, box=box)
    got = np.zeros_like(want)
    for k, png in r["masks"].items():
        got[int(k)] = decode_png(base64.b64decode(png)) > 0
    np.testing.assert_array_equal(got, want)
    assert r["voxels"] == int(want.sum())
    # the model embedded other slices behind the service's back: it notices and selects slice 4 again
    np.testing.assert_array_equal(_mask(svc.segment(v["id"], box=box, z=4)), want[4])
    tiny_sam.set_image(svc.session(v["id"]).volume[:, 0])  # an empty slice
    np.testing.assert_array_equal(_mask(svc.segment(v["id"], box=box, z=4)), want[4])
    png = svc.add_image(png_bytes(0), "a.png")["id"]
    with pytest.raises(InputError, match="a 2D image has no slices to propagate"):
        svc.propagate(png, box=[1, 1, 9, 9])
    with pytest.raises(InputError, match="margin must be"):
        svc.propagate(v["id"], box=box, margin=-1)
    with pytest.raises(InputError, match="on the key slice"):
        svc.propagate(v["id"])


def test_a_zipped_dicom_series_is_one_volume(tiny_sam, shared_data: Path) -> None:
    import io
    import zipfile

    from medfm.io import read_image

    folder = shared_data / "dicom_ct3slice_seg" / "ct"
    if not folder.is_dir():
        pytest.skip("dicom_ct3slice_seg not in the shared data")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"study/ct/{f.name}")  # member paths are never used: each file gets its index
    svc = SegmentationService(tiny_sam)
    v = svc.add_image(buf.getvalue(), "series.zip")
    ref = read_image(folder)
    assert v["depth"] == ref.array.shape[1] == 3 and (v["height"], v["width"]) == ref.array.shape[-2:]
    np.testing.assert_array_equal(svc.session(v["id"]).volume, ref.array)
    assert svc.session(v["id"]).slice_mm == pytest.approx(ref.spacing[0])
    with pytest.raises(InputError, match="bad.zip: not a readable zip"):
        svc.add_image(b"PK\x03\x04 truncated", "bad.zip")


def test_an_image_the_model_refuses_is_not_kept(tiny_sam, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(image: np.ndarray, modality: str | None = None) -> None:
        raise InputError("set_image: 2 channel(s) given, the model takes 3")

    svc = SegmentationService(tiny_sam)
    monkeypatch.setattr(tiny_sam, "set_image", refuse)
    with pytest.raises(InputError, match="channel"):
        svc.add_image(png_bytes(0), "a.png")
    assert svc.images() == []
