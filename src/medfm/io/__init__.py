"""Medical image files in and out: DICOM (series, multi-frame, SEG), NIfTI, NRRD/MHA, rasters, MedMNIST.

Every reader returns :class:`medfm.io.image.Image` in one frame: array (C, Z, Y, X) or
(C, Y, X), spacing/origin in (z, y, x) order (mm), direction columns = LPS directions of the
x, y, z axes (the same matrix as SimpleITK's GetDirection).
"""

from __future__ import annotations

from medfm.io.dicom import SeriesInfo, is_dicom_file, is_dicom_seg, list_dicom_series, read_dicom, read_dicom_series
from medfm.io.dicom_seg import read_dicom_seg, write_dicom_seg
from medfm.io.geometry import describe, orientation_code
from medfm.io.image import Image
from medfm.io.itk import from_sitk, read_itk, to_sitk
from medfm.io.nifti import read_nifti, write_nifti
from medfm.io.npz import read_medmnist_npz
from medfm.io.raster import read_raster, write_png
from medfm.io.read import read_image
from medfm.io.window import WINDOW_PRESETS, apply_window

__all__ = [
    "WINDOW_PRESETS",
    "Image",
    "SeriesInfo",
    "apply_window",
    "describe",
    "from_sitk",
    "is_dicom_file",
    "is_dicom_seg",
    "list_dicom_series",
    "orientation_code",
    "read_dicom",
    "read_dicom_seg",
    "read_dicom_series",
    "read_image",
    "read_itk",
    "read_medmnist_npz",
    "read_nifti",
    "read_raster",
    "to_sitk",
    "write_dicom_seg",
    "write_nifti",
    "write_png",
]
