"""DICOM readers: one file (single-frame, multi-frame, enhanced CT/MR) or a folder with a series.

Everything is returned in medfm's frame (see medfm.io.image): array (C, Z, Y, X) for images
with a patient position, (C, Y, X) for projection images and photos without one; spacing and
origin in (z, y, x) order, mm; ``direction`` columns = LPS directions of the x, y, z axes
(x = along a row, y = down a column, z = slice normal = row x column). Pixel values: modality
LUT / RescaleSlope+Intercept applied (CT in HU, float32), MONOCHROME1 inverted so that high
values are bright, palette colour expanded to RGB. pydicom decodes every transfer syntax that
its plugins (pylibjpeg, python-gdcm) support.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError
from medfm.io.image import Image
from medfm.io.window import WINDOW_PRESETS

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder (no patient data)."""

    series_uid: str
    modality: str
    description: str
    n_files: int

    def line(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.series_uid} ({self.modality}{desc}, {self.n_files} files)"


@dataclass
class _Slice:
    """Geometry of one frame, taken from a single-frame file or one frame of a multi-frame file."""

    label: str  # file name, or "file frame N", for messages
    rows: int
    cols: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None


def _pydicom() -> Any:
    import pydicom

    return pydicom


def is_dicom_file(path: str | Path) -> bool:
    """True when the file has the DICOM Part 10 signature ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM Segmentation object (reads only the header's first tags)."""
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def _read_without_preamble(path: Path, header_only: bool) -> Any:
    """Old files without the 128-byte preamble: accept them only when they parse to a real object."""
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
            ok = "SOPClassUID" in ds and str(ds.SOPClassUID).startswith("1.2.840.10008.")
    except Exception:
        return None
    return ds if ok else None


def _dcmread(path: Path, header_only: bool = False, force: bool = False) -> Any:
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=header_only, force=force)
    except InvalidDicomError as exc:
        legacy = _read_without_preamble(path, header_only)
        if legacy is not None:
            return legacy
        raise InputError(f"{path}: not a DICOM file ({exc})") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder; use read_dicom_series for a series folder") from exc
    except Exception as exc:  # pydicom raises many types on damaged files (EOFError, ValueError, struct.error ...)
        raise InputError(f"{path}: cannot parse DICOM ({_one_line(exc)}); the file may be truncated or damaged") from exc


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (library messages may hold newlines)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _no_image_reason(ds: Any, path: Path) -> str:
    """Why a parsed file has no Rows/Columns: a truncated or damaged header when its SOP class
    is an image class (or missing, though every DICOM object declares one), else a non-image object."""
    sop = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = str(getattr(sop, "name", sop))
    if sop is None or "Image Storage" in name:
        size = path.stat().st_size if path.is_file() else 0
        what = f"a {name} file" if sop is not None else "its SOP class"
        return (
            f"DICOM header ends before the image attributes (no Rows/Columns, {what} at {size} bytes); "
            "the file is truncated or damaged"
        )
    return f"DICOM file holds no image (SOP class {name})"


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _orientation(value: Any) -> np.ndarray | None:
    """ImageOrientationPatient as two unit vectors (row, column direction); None when unusable."""
    iop = _floats(value, 6)
    if iop is None:
        return None
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6 or abs(row @ col) / (nr * nc) > 1e-2:
        return None  # zero or clearly non-orthogonal cosines: treat as missing
    return np.concatenate([row / nr, col / nc])


def _valid_spacing(value: Any) -> tuple[float, float] | None:
    sp = _floats(value, 2)
    if sp is None or np.any(sp <= 0):
        return None
    return float(sp[0]), float(sp[1])


def _fg_item(ds: Any, frame: int, sequence: str) -> Any:
    """Functional-group item ``sequence`` for ``frame`` (per-frame first, then shared), or None."""
    for groups, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > idx:
            inner = seq[idx].get(sequence)
            if inner is not None and len(inner) > 0:
                return inner[0]
    return None


def _is_enhanced(ds: Any) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _n_frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _frame_geometry(ds: Any, label: str) -> list[_Slice]:
    """Geometry of every frame in ``ds`` (one entry for a single-frame file)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = _n_frames(ds)
    if _is_enhanced(ds):
        out = []
        for i in range(n):
            pos = _fg_item(ds, i, "PlanePositionSequence")
            ori = _fg_item(ds, i, "PlaneOrientationSequence")
            meas = _fg_item(ds, i, "PixelMeasuresSequence")
            out.append(
                _Slice(
                    f"{label} frame {i + 1}",
                    rows,
                    cols,
                    _floats(pos.get("ImagePositionPatient") if pos is not None else None, 3),
                    _orientation(ori.get("ImageOrientationPatient") if ori is not None else None),
                    _valid_spacing(meas.get("PixelSpacing") if meas is not None else None),
                )
            )
        return out
    position = _floats(ds.get("ImagePositionPatient"), 3)
    orientation = _orientation(ds.get("ImageOrientationPatient"))
    spacing = _valid_spacing(ds.get("PixelSpacing"))
    offsets = _floats(ds.get("GridFrameOffsetVector"), n) if n > 1 else None
    if n > 1 and offsets is not None and position is not None and orientation is not None:
        normal = np.cross(orientation[:3], orientation[3:])
        if offsets[0] != 0:
            # PS3.3 C.8.8.3.2: a non-zero first offset means the values are z coordinates (axial only).
            offsets = offsets - float(position @ normal)
        return [_Slice(f"{label} frame {i + 1}", rows, cols, position + o * normal, orientation, spacing) for i, o in enumerate(offsets)]
    if n > 1:
        # Frames without their own positions (cine, NM, stripped enhanced files): keep stored order.
        return [_Slice(f"{label} frame {i + 1}", rows, cols, None, orientation, spacing) for i in range(n)]
    return [_Slice(label, rows, cols, position, orientation, spacing)]


def _stack_geometry(
    slices: Sequence[_Slice], where: str, allow_gaps: bool = False
) -> tuple[np.ndarray, float | None, np.ndarray, np.ndarray]:
    """Order slices along their normal and check that they form one regular volume.

    Returns (order, spacing between slices or None for one slice, origin_xyz, direction).
    Raises InputError for mixed sizes or orientations, duplicate positions, missing slices
    (a gap that is a multiple of the usual step), irregular steps and sheared stacks;
    ``allow_gaps`` turns missing slices and irregular steps into a warning (spacing = the median step).
    """
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.cols) != (first.rows, first.cols):
            raise InputError(
                f"{where}: mixed image sizes in one series: {first.label} is {first.rows}x{first.cols}, {s.label} is {s.rows}x{s.cols}"
            )
    for s in slices:
        if s.orientation is None or s.position is None:
            raise InputError(f"{where}: {s.label} has no ImagePositionPatient/ImageOrientationPatient; cannot order the slices")
    for s in slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):  # type: ignore[arg-type]
            raise InputError(
                f"{where}: mixed orientations in one series: {first.label} has {np.round(first.orientation, 4).tolist()}, "  # type: ignore[arg-type]
                f"{s.label} has {np.round(s.orientation, 4).tolist()}"  # type: ignore[arg-type]
            )
    row, col = first.orientation[:3], first.orientation[3:]  # type: ignore[index]
    normal = np.cross(row, col)
    direction = np.column_stack([row, col, normal])
    positions = np.stack([s.position for s in slices])  # type: ignore[misc]
    proj = positions @ normal
    order = np.argsort(proj, kind="stable")
    if len(slices) == 1:
        return order, None, positions[0], direction
    steps = np.diff(proj[order])
    labels = [slices[i].label for i in order]
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = int(dup[0])
        raise InputError(
            f"{where}: {labels[i]} and {labels[i + 1]} are at the same position; the series holds several volumes "
            "(echoes, phases or stacks), which is not supported"
        )
    step = float(np.median(steps))
    gaps = _irregular_steps(steps, step, labels, where)
    if gaps and not allow_gaps:
        raise InputError(gaps[0])
    if gaps:
        warnings.warn(f"{'; '.join(gaps)}; read anyway (gaps allowed): z spacing is the usual step", stacklevel=3)
    inplane = positions[order] - positions[order[0]] - np.outer(proj[order] - proj[order[0]], normal)
    if np.max(np.abs(inplane)) > max(0.05 * step, 0.05):
        raise InputError(
            f"{where}: slices are not stacked along their normal (gantry tilt or sheared acquisition); resample the series first"
        )
    return order, step if gaps else float(np.mean(steps)), positions[order[0]], direction


def _irregular_steps(steps: np.ndarray, step: float, labels: Sequence[str], where: str) -> list[str]:
    """One message per step between neighbouring slices that differs from the usual ``step``:
    a missing slice (a gap that is a multiple of the step) or irregular spacing."""
    tol = max(0.02 * step, 0.01)
    out = []
    for i in np.flatnonzero(np.abs(steps - step) > tol):
        gap = float(steps[i])
        ratio = gap / step
        if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
            out.append(
                f"{where}: missing slice: {labels[i]} and {labels[i + 1]} are {gap:.3f} mm apart while the other slices are "
                f"{step:.3f} mm apart (about {round(ratio) - 1} slice(s) missing)"
            )
        else:
            out.append(
                f"{where}: irregular slice spacing: {labels[i]} to {labels[i + 1]} is {gap:.3f} mm, the usual step is {step:.3f} mm"
            )
    return out


def _stored_range(ds: Any) -> np.ndarray:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    return np.array([0, 2**bits - 1], dtype=np.int64)


def _rescale_params(ds: Any, frame: int) -> tuple[float, float] | None:
    """(slope, intercept) of the frame's modality rescale, or None when the file has none."""
    if _is_enhanced(ds):
        item = _fg_item(ds, frame, "PixelValueTransformationSequence")
        src = item if item is not None else ds
    else:
        src = ds
    if "RescaleSlope" not in src and "RescaleIntercept" not in src:
        if str(ds.get("Modality", "")) == "RTDOSE" and ds.get("DoseGridScaling") is not None:
            return float(ds.DoseGridScaling), 0.0  # dose in DoseUnits (usually Gy)
        return None
    return float(src.get("RescaleSlope", 1) or 1), float(src.get("RescaleIntercept", 0) or 0)


def _has_modality_transform(ds: Any) -> bool:
    if not _is_enhanced(ds) and "ModalityLUTSequence" in ds:
        return True
    return any(_rescale_params(ds, f) is not None for f in range(_n_frames(ds)))


def _modality_transform(arr: np.ndarray, ds: Any, frame: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Apply the modality LUT or rescale (float32); returns (values, (lo, hi) = output range of all stored values)."""
    from pydicom.pixels import apply_modality_lut

    rng = _stored_range(ds)
    if not _is_enhanced(ds) and "ModalityLUTSequence" in ds:
        out = apply_modality_lut(arr, ds)
        r = apply_modality_lut(rng, ds)
        return out, (float(r.min()), float(r.max()))
    params = _rescale_params(ds, frame)
    if params is None:
        return arr, (float(rng[0]), float(rng[1]))
    slope, intercept = params
    out = arr.astype(np.float32)
    out *= np.float32(slope)
    out += np.float32(intercept)
    ends = rng * slope + intercept
    return out, (float(ends.min()), float(ends.max()))


def _as_list(value: Any) -> list[Any]:
    from pydicom.multival import MultiValue

    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _windows(ds: Any, frame: int, invert_sum: float | None) -> dict[str, tuple[float, float]]:
    """The file's own VOI windows, named by their explanation (or 'file', 'file2', ...)."""
    src = ds
    if _is_enhanced(ds):
        item = _fg_item(ds, frame, "FrameVOILUTSequence")
        if item is None:
            return {}
        src = item
    centers, widths = src.get("WindowCenter"), src.get("WindowWidth")
    if centers is None or widths is None:
        return {}
    centers, widths = _as_list(centers), _as_list(widths)
    expl = src.get("WindowCenterWidthExplanation")
    names = _as_list(expl) if expl is not None else []
    out: dict[str, tuple[float, float]] = {}
    for i, (c, w) in enumerate(zip(centers, widths)):
        try:
            c, w = float(c), float(w)
        except (TypeError, ValueError):
            continue
        if w < 1:
            continue
        if invert_sum is not None:
            c = invert_sum - c
        name = str(names[i]).strip() if i < len(names) and str(names[i]).strip() else ("file" if i == 0 else f"file{i + 1}")
        out.setdefault(name, (c, w))
    return out


def _pixels(ds: Any, path: Path) -> np.ndarray:
    """Decoded pixels as (frames, rows, cols, samples); colour converted to RGB, palettes expanded."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID"))
        raise InputError(f"{path}: DICOM file has no pixel data (SOP class {sop})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(tsyntax, "name", tsyntax)
        raise InputError(
            f"{path}: cannot decode pixel data ({_one_line(exc)}); transfer syntax {ts_name}; "
            "the file may be truncated, or a codec is missing (pip install 'medfm[codecs]')"
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    n = _n_frames(ds)
    spp = 3 if photometric in ("PALETTE COLOR",) else int(ds.get("SamplesPerPixel", 1))
    if n == 1:
        arr = arr[None]
    if spp == 1:
        arr = arr[..., None]
    expected = (n, int(ds.Rows), int(ds.Columns), spp)
    if arr.shape != expected:
        raise InputError(f"{path}: decoded pixel data has shape {arr.shape}, expected {expected}")
    return arr


def _sop_uid(ds: Any) -> str:
    return str(ds.get("SOPInstanceUID", ""))


def _volume_geometry(
    slices: Sequence[_Slice], multi: bool, where: Path, allow_gaps: bool
) -> tuple[np.ndarray, float | None, np.ndarray, np.ndarray]:
    """(z order, slice step or None, origin_xyz, direction): from the stack of positioned slices,
    else (one slice, or multi-frame without positions) the stored order and the first frame."""
    positioned = all(s.position is not None and s.orientation is not None for s in slices)
    if len(slices) > 1 and (positioned or not multi):
        return _stack_geometry(slices, str(where), allow_gaps)
    first = slices[0]
    origin_xyz = first.position if first.position is not None else np.zeros(3)
    direction = np.eye(3)
    if first.orientation is not None:
        r, c = first.orientation[:3], first.orientation[3:]
        direction = np.column_stack([r, c, np.cross(r, c)])
    return np.arange(len(slices)), None, origin_xyz, direction


def _pixel_spacing(slices: Sequence[_Slice], ds0: Any, where: Path) -> tuple[float, float] | None:
    """In-plane (row, column) spacing in mm shared by every slice; None when the files give none."""
    spacing = slices[0].pixel_spacing or _valid_spacing(ds0.get("PixelSpacing")) or _valid_spacing(ds0.get("ImagerPixelSpacing"))
    for s in slices[1:]:
        if s.pixel_spacing is not None and spacing is not None and not np.allclose(s.pixel_spacing, spacing, rtol=1e-4):
            raise InputError(f"{where}: mixed pixel spacings in one series: {slices[0].label} {spacing}, {s.label} {s.pixel_spacing}")
    return spacing


def _decode_volume(
    datasets: Sequence[Any], paths: Sequence[Path], order: np.ndarray, monochrome: bool
) -> tuple[np.ndarray, list[tuple[float, float]], bool]:
    """(volume (Z, Y, X, C) in z order, output value range of each frame, rescaled?): decoded
    file by file (storage order) straight into the z slot of each frame."""
    z_of = np.empty(len(order), dtype=np.int64)
    z_of[order] = np.arange(len(order))
    depths = {(int(ds.get("BitsAllocated", 0)), int(ds.get("PixelRepresentation", 0))) for ds in datasets}
    transformed = monochrome and (any(_has_modality_transform(ds) for ds in datasets) or len(depths) > 1)
    vol: np.ndarray | None = None
    ranges: list[tuple[float, float]] = []
    flat = 0
    for ds, p in zip(datasets, paths):
        px = _pixels(ds, p)  # (F, Y, X, C)
        for f in range(px.shape[0]):
            frame = px[f]
            if monochrome:
                values, rng = _modality_transform(frame[..., 0], ds, f)
                ranges.append(rng)
                frame = values[..., None]
            if vol is None:
                vol = np.empty((len(order), *frame.shape), dtype=np.float32 if transformed else frame.dtype)
            vol[z_of[flat]] = frame
            flat += 1
        del px
    assert vol is not None  # at least one frame was decoded
    return vol, ranges, bool(transformed)


def _file_slice_step(ds0: Any) -> float:
    """Slice step of a single slice or unpositioned frames: SpacingBetweenSlices, else
    SliceThickness (enhanced files: from their pixel measures), else 1 mm."""
    thickness = ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness")
    if _is_enhanced(ds0):
        meas = _fg_item(ds0, 0, "PixelMeasuresSequence")
        if meas is not None:
            thickness = meas.get("SpacingBetweenSlices") or meas.get("SliceThickness") or thickness
    try:
        return float(thickness) if thickness and float(thickness) > 0 else 1.0
    except (TypeError, ValueError):
        return 1.0


def _windows_and_default(ds0: Any, frame: int, invert_sum: float | None) -> tuple[dict[str, tuple[float, float]], Any]:
    """The file's own windows plus, for CT, the named presets; the default is the file's own
    window, else for CT the soft-tissue preset."""
    modality = str(ds0.get("Modality", "OT") or "OT")
    windows = _windows(ds0, frame, invert_sum)
    default_window = next(iter(windows.values()), WINDOW_PRESETS["soft_tissue"] if modality == "CT" else None)
    if modality == "CT":
        for name, cw in WINDOW_PRESETS.items():
            windows.setdefault(name, cw)
    return windows, default_window


def _uids_meta(datasets: Sequence[Any], paths: Sequence[Path], order: np.ndarray, multi: bool) -> dict[str, Any]:
    """Series/study/SOP identifiers; ``sop_instance_uids`` / ``files`` / ``frame_numbers`` follow z."""
    ds0 = datasets[0]
    meta: dict[str, Any] = {
        "series_instance_uid": str(ds0.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(ds0.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds0.get("FrameOfReferenceUID", "")),
        "sop_class_uid": str(ds0.get("SOPClassUID", "")),
        "transfer_syntax": str(getattr(getattr(ds0, "file_meta", None), "TransferSyntaxUID", "")),
    }
    if multi:
        meta["sop_instance_uids"] = [_sop_uid(ds0)]
        meta["frame_numbers"] = [int(i) + 1 for i in order]  # 1-based frame number of each z index
    else:
        meta["sop_instance_uids"] = [_sop_uid(datasets[i]) for i in order]
        meta["files"] = [str(paths[i]) for i in order]
    return meta


def _to_image(
    datasets: Sequence[Any],
    paths: Sequence[Path],
    where: Path,
    fmt: str,
    allow_gaps: bool = False,
) -> Image:
    """Build one Image from single-frame datasets (a series) or from one multi-frame dataset."""
    multi = len(datasets) == 1 and _n_frames(datasets[0]) > 1
    slices = [s for ds, p in zip(datasets, paths) for s in _frame_geometry(ds, p.name)]
    ds0 = datasets[0]
    photometric = str(ds0.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    patient = all(s.position is not None and s.orientation is not None for s in slices)
    order, step, origin_xyz, direction = _volume_geometry(slices, multi, where, allow_gaps)
    pixel_spacing = _pixel_spacing(slices, ds0, where)
    vol, ranges, rescaled = _decode_volume(datasets, paths, order, photometric.startswith("MONOCHROME"))
    invert_sum = None
    if photometric == "MONOCHROME1":
        invert_sum = min(r[0] for r in ranges) + max(r[1] for r in ranges)
        dtype = vol.dtype
        vol = (invert_sum - vol.astype(np.float64 if dtype.kind == "f" else np.int64)).astype(dtype)
    windows, default_window = _windows_and_default(ds0, int(order[0]) if multi else 0, invert_sum)
    modality = str(ds0.get("Modality", "OT") or "OT")
    meta: dict[str, Any] = {
        "path": str(where),
        "format": fmt,
        "frame": "patient" if patient else "image",
        "spacing_known": pixel_spacing is not None,
        "photometric": photometric,
        "rescaled": rescaled,
        "window": default_window,
        "windows": windows,
        **_uids_meta(datasets, paths, order, multi),
    }
    sy, sx = pixel_spacing if pixel_spacing is not None else (1.0, 1.0)
    array = np.ascontiguousarray(np.moveaxis(vol, -1, 0))  # (C, Z, Y, X); no copy for one channel
    if not patient and array.shape[1] == 1:
        # A projection image or photo: 2D, geometry in pixel/detector units.
        return Image(array[:, 0], (sy, sx), (0.0, 0.0), np.eye(3), modality, meta)
    step = _file_slice_step(ds0) if step is None else step
    origin = tuple(float(v) for v in np.asarray(origin_xyz)[::-1])
    return Image(array, (step, sy, sx), origin, direction, modality, meta)


def read_dicom(path: str | Path) -> Image:
    """Read one DICOM file: a slice, a multi-frame or an enhanced CT/MR object.

    A file with a patient position gives (C, Z, Y, X) (Z = 1 for one slice; enhanced frames
    ordered along the slice normal); a projection image (CR/DX/US/photo) gives (C, Y, X).
    ``meta['window']`` is the file's first VOI window (MONOCHROME1: mirrored with the values),
    else for CT the soft-tissue preset; ``meta['windows']`` holds all, plus the CT presets.

    >>> img = read_dicom(pydicom.data.get_testdata_file("CT_small.dcm"))  # doctest: +SKIP
    >>> img.array.shape, img.array.dtype                                    # doctest: +SKIP
    ((1, 1, 128, 128), dtype('float32'))
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; use read_dicom_series for a series folder")
    ds = _dcmread(path)
    if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
        raise InputError(f"{path}: is a DICOM-SEG; read it with read_dicom_seg(path, reference_series) (or read_image for its own grid)")
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"{path}: {_no_image_reason(ds, path)}")
    return _to_image([ds], [path], path, "dicom")


# Files that often sit beside a series without being DICOM (notes, exports, a CD's viewer):
# ignored and listed in meta['skipped_files']. Any other file that is not DICOM is refused.
SIDECAR_SUFFIXES = (
    ".txt", ".md", ".json", ".xml", ".csv", ".tsv", ".html", ".htm", ".pdf", ".png", ".jpg", ".jpeg", ".gif",
    ".bmp", ".tif", ".tiff", ".svg", ".ico", ".nrrd", ".nii", ".gz", ".zip", ".yaml", ".yml", ".log", ".ini",
    ".db", ".py", ".sh", ".exe", ".dll", ".inf", ".bat", ".cfg", ".js", ".css", ".xsl", ".jar", ".rtf",
    ".doc", ".docx", ".xls", ".xlsx",
)
SIDECAR_NAMES = ("readme", "license", "licence", "copying", "notes")


@dataclass
class _Scan:
    """A folder's image headers by SeriesInstanceUID; ``ignored``: sidecar files and non-image
    DICOM objects ('name (why)'); ``unreadable``: files that should hold DICOM but cannot be read."""

    groups: dict[str, list[tuple[Path, Any]]]
    ignored: list[str]
    unreadable: list[tuple[Path, str]]


def _is_sidecar(p: Path) -> bool:
    return p.suffix.lower() in SIDECAR_SUFFIXES or p.stem.lower() in SIDECAR_NAMES


def _scan_header(p: Path) -> tuple[Any, str | None]:
    """(header, None), or (None, why the file is not DICOM) for a file pydicom refuses."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Large values (pixel data) stay on disk until used: one parse per file.
            return pydicom.dcmread(p, defer_size=4096), None
    except InvalidDicomError:
        legacy = _read_without_preamble(p, header_only=False)  # old files without the preamble
        return (legacy, None) if legacy is not None else (None, "not a DICOM file")
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        return None, f"cannot parse DICOM ({_one_line(exc)}); the file may be truncated or damaged"


def _scan(folder: Path) -> _Scan:
    """Headers of the image files under ``folder`` (recursive; hidden files left out)."""
    scan = _Scan({}, [], [])
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in files:
        if _is_sidecar(p) and not is_dicom_file(p):  # not parsed: notes, images, archives ...
            scan.ignored.append(f"{p.relative_to(folder)} (not DICOM)")
            continue
        ds, why = _scan_header(p)
        if ds is None:
            scan.unreadable.append((p, why or "unreadable"))
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in (SEG_SOP_CLASS, _DICOMDIR_SOP_CLASS):
            scan.ignored.append(f"{p.relative_to(folder)} (segmentation or DICOMDIR)")
        elif "Rows" not in ds:
            why = _no_image_reason(ds, p)  # structured reports, RT structures ... or a cut header
            if why.startswith("DICOM header ends"):
                scan.unreadable.append((p, why))
            else:
                scan.ignored.append(f"{p.relative_to(folder)} ({why})")
        else:
            scan.groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    return scan


def _check_unreadable(folder: Path, scan: _Scan, allow: bool) -> list[str]:
    """Refuse a folder with files that cannot be read (each could be a missing slice), or, with
    ``allow``, warn naming them; returns every skipped file as 'name (why)'."""
    if not scan.unreadable:
        return list(scan.ignored)
    named = [f"{p.relative_to(folder)} ({why})" for p, why in scan.unreadable]
    shown = "; ".join(named[:5]) + (f"; and {len(named) - 5} more" if len(named) > 5 else "")
    if not allow:
        raise InputError(
            f"{folder}: {len(named)} file(s) cannot be read as DICOM: {shown}. A missing slice changes the volume; "
            "remove or fix the file(s), or pass --allow-unreadable (allow_unreadable=True) to read the series without them"
        )
    warnings.warn(f"{folder}: skipped {len(named)} unreadable file(s): {shown}", stacklevel=3)
    return list(scan.ignored) + named


def list_dicom_series(folder: str | Path) -> list[SeriesInfo]:
    """The image series under ``folder`` (searched recursively), largest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    groups = _scan(folder).groups
    infos = [
        SeriesInfo(uid, str(items[0][1].get("Modality", "OT")), str(items[0][1].get("SeriesDescription", "")), len(items))
        for uid, items in groups.items()
    ]
    return sorted(infos, key=lambda s: (-s.n_files, s.series_uid))


def _series_files(
    folder: Path, series_uid: str | None, allow_unreadable: bool = False
) -> tuple[list[tuple[Path, Any]], list[str]]:
    """The (path, header) pairs of one series, and the skipped files ('name (why)')."""
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    scan = _scan(folder)
    groups = scan.groups
    if not groups:
        bad = "; ".join(f"{p.name} ({why})" for p, why in scan.unreadable[:3])
        raise InputError(f"{folder}: no DICOM image files found (a folder is read as one DICOM series)" + (f"; unreadable: {bad}" if bad else ""))
    skipped = _check_unreadable(folder, scan, allow_unreadable)
    if series_uid is None:
        if len(groups) > 1:
            lines = "; ".join(s.line() for s in list_dicom_series(folder))
            raise InputError(f"{folder}: holds {len(groups)} series; choose one with series_uid (--series-uid): {lines}")
        return next(iter(groups.values())), skipped
    if series_uid not in groups:
        lines = "; ".join(s.line() for s in list_dicom_series(folder))
        raise InputError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found: {lines}")
    return groups[series_uid], skipped


def read_dicom_series(
    folder: str | Path, series_uid: str | None = None, allow_unreadable: bool = False, allow_gaps: bool = False
) -> Image:
    """Read the DICOM series in ``folder`` as one volume (C, Z, Y, X).

    Slices are ordered by ImagePositionPatient projected on the slice normal (never by file
    name or InstanceNumber); the z spacing is the mean step between positions. Raises
    InputError naming the folder and files for mixed sizes/orientations, missing or
    duplicated slices, irregular spacing, files that cannot be read as DICOM (any of them
    could be a slice), or several series when ``series_uid`` is not given.
    ``allow_unreadable`` reads without unreadable files and ``allow_gaps`` accepts missing
    slices / irregular spacing, each with a warning naming the files. Sidecar files (README,
    .txt, .json, ...) and non-image DICOM objects are ignored. ``meta['skipped_files']`` lists
    every file left out as 'name (why)'; ``meta['sop_instance_uids']`` / ``meta['files']``
    follow the z axis.
    """
    folder = Path(folder)
    items, skipped = _series_files(folder, series_uid, allow_unreadable)
    if len(items) == 1:
        img = read_dicom(items[0][0])
        img.meta.update(path=str(folder), format="dicom-series", skipped_files=skipped)
        return img
    multi = [p.name for p, ds in items if _n_frames(ds) > 1]
    if multi:
        raise InputError(f"{folder}: series mixes several files with multi-frame files ({', '.join(multi[:3])}); not supported")
    paths = [p for p, _ in items]
    img = _to_image([ds for _, ds in items], paths, folder, "dicom-series", allow_gaps)
    img.meta["skipped_files"] = skipped
    return img


def read_series_datasets(folder: str | Path, series_uid: str | None = None) -> list[Any]:
    """The pydicom datasets of a series (pixel data read on access), in the z order of ``read_dicom_series``."""
    folder = Path(folder)
    items, _ = _series_files(folder, series_uid)
    slices = [s for p, ds in items for s in _frame_geometry(ds, p.name)]
    if len(items) > 1:
        order, *_ = _stack_geometry(slices, str(folder))
    else:
        order = np.arange(1)
    return [items[i][1] for i in order]
