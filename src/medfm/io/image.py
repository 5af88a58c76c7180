"""The one image type inside medfm.

Canonical frame: arrays are (C, Z, Y, X) for 3D and (C, Y, X) for 2D, channel first.
``spacing`` / ``origin`` are in millimetres and follow the spatial axes of the array in the
same order (z, y, x). ``direction`` is the 3x3 matrix whose *columns* are the directions, in
patient LPS coordinates (DICOM convention), of the array's x, y and z axes, so that a voxel
at index (z, y, x) lies at ``origin_xyz + direction @ (x*sx, y*sy, z*sz)``. Readers convert to
this frame; writers restore the source's.

``meta`` keys set by the medfm.io readers (all optional):
  path, format ("dicom", "dicom-series", "dicom-seg", "nifti", "nrrd", "png", ...);
  frame: "patient" when spacing/origin/direction place the voxels in patient space, "image"
  for photos and projection images (then origin/direction are defaults); spacing_known:
  False when spacing is 1 pixel, not mm; window: default (center, width) or None; windows:
  {name: (center, width)}; DICOM: sop_instance_uids / files (along z), series_instance_uid,
  frame_of_reference_uid; NIfTI: nifti (source affine and header codes, for write_nifti);
  DICOM-SEG: segment_names {number: label}.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Image:
    """Pixel or voxel data with geometry.

    array: (C, Y, X) or (C, Z, Y, X); float32 after rescale, or the source dtype.
    spacing: mm per spatial axis, same order as the array's spatial axes ((y, x) or (z, y, x)).
    origin: mm, position of voxel index 0 in the same axis order.
    direction: 3x3, columns = LPS directions of the x, y, z array axes.
    modality: DICOM-style code ("CT", "MR", "US", "CR", "DX", "OT", ...).
    meta: free metadata (source path, window presets, source orientation); never PHI in logs.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = "OT"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Image array must be (C, Y, X) or (C, Z, Y, X), got shape {self.array.shape}")
        nd = self.array.ndim - 1
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != nd:
            raise ValueError(f"spacing has {len(self.spacing)} values for {nd} spatial axes")
        self.origin = tuple(float(o) for o in self.origin) if self.origin else (0.0,) * nd
        self.direction = np.asarray(self.direction, dtype=float)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.array.ndim - 1

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    def with_array(self, array: np.ndarray, **changes: Any) -> Image:
        """Same geometry, new data (e.g. a mask or a processed copy)."""
        return replace(self, array=array, **changes)
