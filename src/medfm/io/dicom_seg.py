"""DICOM-SEG read/write with highdicom, aligned voxel-for-voxel to the referenced series.

Reading builds the segmentation volume from the SEG's own plane positions and maps it onto
the reference grid (axis permutation, flips, padding of omitted empty frames; no
resampling), so it does not depend on the SEG listing every source instance. The result is a
label map (1, Z, Y, X), one integer per segment number, with the reference's geometry.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError, OutputError
from medfm.io.dicom import SEG_SOP_CLASS, read_dicom, read_dicom_series, read_series_datasets
from medfm.io.image import Image

# Tolerance (mm) when matching a SEG's grid to the reference grid: DICOM DS values are rounded.
_GRID_TOL = 1e-3


def _hd() -> Any:
    import highdicom

    return highdicom


def _reference_image(reference: Image | str | Path) -> Image:
    if isinstance(reference, Image):
        return reference
    ref = Path(reference)
    return read_dicom_series(ref) if ref.is_dir() else read_dicom(ref)


def _hd_affine(image: Image) -> np.ndarray:
    """highdicom's affine for an Image: array indices (slice, row, column) -> LPS mm."""
    sz, sy, sx = image.spacing
    aff = np.eye(4)
    aff[:3, 0] = image.direction[:, 2] * sz
    aff[:3, 1] = image.direction[:, 1] * sy
    aff[:3, 2] = image.direction[:, 0] * sx
    aff[:3, 3] = image.origin[::-1]
    return aff


def _own_grid(vol: Any) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """(spacing_zyx, origin_zyx, direction) of a highdicom Volume (axes: slice, row, column)."""
    aff = np.asarray(vol.affine, dtype=float)
    cols_xyz = aff[:3, [2, 1, 0]]
    spacing_xyz = np.linalg.norm(cols_xyz, axis=0)
    return tuple(spacing_xyz[::-1]), tuple(aff[:3, 3][::-1]), cols_xyz / spacing_xyz


def read_dicom_seg(seg_path: str | Path, reference: Image | str | Path | None = None) -> Image:
    """Read a DICOM-SEG as a label map on the grid of its referenced image.

    ``reference`` is the referenced series as an Image (from ``read_dicom_series``) or its
    folder/file. Returns Image (1, Z, Y, X), uint8 (uint16 beyond 255 segments), 0 =
    background, k = segment number k; ``meta['segment_names']`` maps number -> label and
    ``meta['segments']`` lists number, label, category and type. Overlapping segments cannot
    be one label map and raise InputError. Without ``reference`` the label map is returned
    on the SEG's own grid (its frames only; omitted empty frames are not restored).
    """
    seg_path = Path(seg_path)
    hd = _hd()
    try:
        seg = hd.seg.segread(seg_path)
    except FileNotFoundError as exc:
        raise InputError(f"{seg_path}: no such file") from exc
    except Exception as exc:
        if not seg_path.is_file():
            raise InputError(f"{seg_path}: no such file") from exc
        raise InputError(f"{seg_path}: not a readable DICOM-SEG ({type(exc).__name__}: {exc})") from exc
    if str(seg.SOPClassUID) != SEG_SOP_CLASS:
        raise InputError(f"{seg_path}: not a DICOM Segmentation (SOP class {seg.SOPClassUID})")
    if reference is None:
        return _on_own_grid(seg, seg_path)
    ref = _reference_image(reference)
    if ref.ndim != 3:
        raise InputError(f"{seg_path}: the reference image is 2D without patient geometry; cannot align a SEG to it")
    ref_for = ref.meta.get("frame_of_reference_uid")
    seg_for = str(seg.get("FrameOfReferenceUID", ""))
    if ref_for and seg_for and ref_for != seg_for:
        raise InputError(f"{seg_path}: FrameOfReferenceUID {seg_for} differs from the reference's {ref_for}")
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    try:
        vol = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
    except Exception as exc:
        raise InputError(f"{seg_path}: cannot build a label volume ({type(exc).__name__}: {exc})") from exc
    geometry = hd.VolumeGeometry(_hd_affine(ref), ref.spatial_shape, coordinate_system="PATIENT")
    try:
        matched = vol.match_geometry(geometry, tol=_GRID_TOL)
    except Exception as exc:
        raise InputError(
            f"{seg_path}: segmentation grid does not line up with the reference image {ref.meta.get('path', '')} "
            f"(needs resampling, not supported): {exc}"
        ) from exc
    meta = _seg_meta(seg, seg_path)
    meta["reference"] = ref.meta.get("path")
    labels = np.asarray(matched.array).astype(_label_dtype(numbers))
    return Image(labels[None], ref.spacing, ref.origin, ref.direction.copy(), "SEG", meta)


def _label_dtype(numbers: Sequence[int]) -> type:
    return np.uint8 if max(numbers, default=0) <= 255 else np.uint16


def _seg_meta(seg: Any, seg_path: Path) -> dict[str, Any]:
    segments = [
        {
            "number": int(d.SegmentNumber),
            "label": str(d.SegmentLabel),
            "category": str(d.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning),
            "type": str(d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning),
        }
        for d in seg.SegmentSequence
    ]
    return {
        "path": str(seg_path),
        "format": "dicom-seg",
        "frame": "patient",
        "segment_names": {s["number"]: s["label"] for s in segments},
        "segments": segments,
        "series_instance_uid": str(seg.SeriesInstanceUID),
        "frame_of_reference_uid": str(seg.get("FrameOfReferenceUID", "")),
    }


def _on_own_grid(seg: Any, seg_path: Path) -> Image:
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    try:
        vol = seg.get_volume(combine_segments=True, relabel=False, dtype=np.uint16)
    except Exception as exc:
        raise InputError(f"{seg_path}: its frames do not form one regular volume ({type(exc).__name__}: {exc}); give the reference series") from exc
    spacing, origin, direction = _own_grid(vol)
    labels = np.asarray(vol.array).astype(_label_dtype(numbers))
    if np.linalg.det(direction) < 0:
        # Stack along row x column as the DICOM readers do (highdicom may stack the other way).
        last = np.asarray(origin[::-1]) + direction[:, 2] * spacing[0] * (labels.shape[0] - 1)
        labels = np.ascontiguousarray(labels[::-1])
        direction = direction.copy()
        direction[:, 2] = -direction[:, 2]
        origin = tuple(last[::-1])
    return Image(labels[None], spacing, origin, direction, "SEG", _seg_meta(seg, seg_path))


def write_dicom_seg(
    mask: Image,
    reference_folder: str | Path,
    out_path: str | Path,
    segment_names: Sequence[str],
    overwrite: bool = False,
) -> Path:
    """Write a label map as a binary DICOM-SEG that references the series in ``reference_folder``.

    ``mask``: (1, Z, Y, X) integers (or bool) on the reference grid, as returned by the
    readers (0 = background, k = ``segment_names[k - 1]``). Segments are coded as SNOMED
    "Tissue" with the name as their label, algorithm "medfm" (automatic). Written through a
    temporary file; an existing ``out_path`` is refused unless ``overwrite``.
    """
    from pydicom.sr.codedict import codes

    from medfm import __version__
    from medfm._paths import atomic_path

    hd = _hd()
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputError(f"{out_path}: exists; pass overwrite=True (--force) to replace it")
    if mask.ndim != 3 or mask.channels != 1:
        raise InputError(f"mask must be (1, Z, Y, X), got shape {mask.array.shape}")
    labels = np.asarray(mask.array[0])
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise InputError(f"mask must hold integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError("mask holds negative labels")
    n_max = int(labels.max()) if labels.size else 0
    if n_max > len(segment_names):
        raise InputError(f"mask holds label {n_max} but only {len(segment_names)} segment names were given")
    if not segment_names:
        raise InputError("segment_names is empty")

    ref_geo = read_dicom_series(reference_folder)
    datasets = read_series_datasets(reference_folder)
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{reference_folder}: multi-frame reference series are not supported for writing SEG")
    if mask.spatial_shape != ref_geo.spatial_shape:
        raise InputError(f"mask shape {mask.spatial_shape} differs from the reference series {ref_geo.spatial_shape} ({reference_folder})")
    if not (
        np.allclose(mask.spacing, ref_geo.spacing, atol=_GRID_TOL)
        and np.allclose(mask.origin, ref_geo.origin, atol=_GRID_TOL)
        and np.allclose(mask.direction, ref_geo.direction, atol=1e-4)
    ):
        raise InputError(f"mask geometry (spacing/origin/direction) differs from the reference series in {reference_folder}")

    algorithm = hd.AlgorithmIdentificationSequence(
        name="medfm", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, name in enumerate(segment_names)
    ]
    with warnings.catch_warnings():
        # Source headers often carry single-component person names; highdicom warns, harmlessly.
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        seg = _build_seg(hd, datasets, labels, n_max, descriptions)
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return out_path


def _build_seg(hd: Any, datasets: list[Any], labels: np.ndarray, n_max: int, descriptions: list[Any]) -> Any:
    from pydicom.uid import generate_uid

    from medfm import __version__

    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=labels.astype(np.uint8 if n_max <= 255 else np.uint16),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medfm",
        manufacturer_model_name="medfm",
        software_versions=__version__,
        device_serial_number="0",
        series_description="medfm segmentation",
        # An empty SpecificCharacterSet (seen in real files) means the default repertoire.
        specific_character_set=datasets[0].get("SpecificCharacterSet") or None,
    )
