"""DICOM Structured Report (TID 1500 measurement report, Comprehensive 3D SR) for medfm's segmentations.

One volumetric ROI group per segment of a DICOM-SEG: its volume (mm3) and voxel count, referencing the
segment and, through the SEG, the source series; so a PACS viewer lists the measurements beside the images.
Written with highdicom.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from medfm.errors import InputError, OutputError
from medfm.io.image import Image


def write_segment_volume_sr(seg_path: str | Path, reference_folder: str | Path, out_path: str | Path,
                            overwrite: bool = False) -> Path:
    """Write a TID 1500 SR with each segment's volume (mm3, on the reference grid) for the SEG at ``seg_path``."""
    import highdicom as hd
    import pydicom
    from highdicom.sr import (
        Comprehensive3DSR,
        DeviceObserverIdentifyingAttributes,
        Measurement,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
        ReferencedSegment,
        SourceImageForSegmentation,
        TrackingIdentifier,
        VolumetricROIMeasurementsAndQualitativeEvaluations,
    )
    from pydicom.sr.codedict import codes

    from medfm import __version__
    from medfm._paths import atomic_path
    from medfm.io.dicom import read_dicom_series
    from medfm.io.dicom_seg import read_dicom_seg

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputError(f"{out_path}: exists; pass overwrite=True (--force) to replace it")
    seg_ds = pydicom.dcmread(seg_path)
    ref: Image = read_dicom_series(reference_folder)
    labels = read_dicom_seg(seg_path, ref)
    voxel_mm3 = float(np.prod(labels.spacing))
    # the SEG's source instances from its ReferencedSeriesSequence (per-frame references may sit in the shared
    # functional groups, where highdicom's ReferencedSegment.from_segmentation does not look)
    try:
        source_images = [SourceImageForSegmentation(s.ReferencedSOPClassUID, s.ReferencedSOPInstanceUID)
                         for rs in seg_ds.ReferencedSeriesSequence for s in rs.ReferencedInstanceSequence]
    except AttributeError:
        source_images = []
    if not source_images:
        raise InputError(f"{seg_path}: the SEG names no source instances (ReferencedSeriesSequence); cannot reference them")
    groups = []
    for item in seg_ds.SegmentSequence:
        num = int(item.SegmentNumber)
        n = int(np.count_nonzero(labels.array == num))
        groups.append(VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"segment {num}: {item.SegmentLabel}"),
            referenced_segment=ReferencedSegment(seg_ds.SOPClassUID, seg_ds.SOPInstanceUID, num, source_images=source_images),
            finding_type=hd.sr.CodedConcept.from_dataset(item.SegmentedPropertyTypeCodeSequence[0]),
            measurements=[
                Measurement(name=codes.SCT.Volume, value=n * voxel_mm3, unit=codes.UCUM.CubicMillimeter),
                Measurement(name=hd.sr.CodedConcept("voxel-count", "99MEDFM", "Voxel count"), value=n,
                            unit=hd.sr.CodedConcept("{voxels}", "UCUM", "voxels")),
            ],
        ))
    if not groups:
        raise InputError(f"{seg_path}: the SEG has no segments to report")
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="medfm", manufacturer_name="medfm", model_name=f"medfm {__version__}"),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion if ref.meta.get("modality", "CT") == "CT" else codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in ref.meta.get("files", [])] or []
    with warnings.catch_warnings():  # single-component patient names in the source are copied as they are
        warnings.simplefilter("ignore", UserWarning)
        sr = Comprehensive3DSR(
            evidence=[seg_ds, *sources], content=report[0], series_instance_uid=hd.UID(),
            series_number=int(seg_ds.SeriesNumber) + 1,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medfm", is_complete=True,
            series_description="medfm segment volumes",
        )
    with atomic_path(out_path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return out_path


def read_segment_volumes(sr_path: str | Path) -> dict[str, float]:
    """Segment label -> volume in mm3 from an SR written by :func:`write_segment_volume_sr`."""
    from highdicom.sr import srread

    try:
        sr = srread(sr_path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"{sr_path}: not a readable DICOM SR ({type(exc).__name__}: {exc})") from None
    out: dict[str, float] = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        for m in group.get_measurements():
            if m.name.meaning == "Volume":
                out[str(group.tracking_identifier)] = float(m.value)
    return out


# ---------------------------------------------------------------------------------------------
# Class probabilities (``medfm classify --store-to``): TID 1500 with one TID 1501 measurement group
# ---------------------------------------------------------------------------------------------
PROB_SCHEME = "99MEDFM"


def write_classification_sr(source_files: list[str | Path], probabilities: dict[str, float], out_path: str | Path,
                            algorithm: str = "medfm classifier", overwrite: bool = False) -> Path:
    """Write a TID 1500 SR holding one probability per class for the source series (its instances as evidence
    and as the group's source images), so the PACS files the result beside the images it is about."""
    import highdicom as hd
    import pydicom
    from highdicom.sr import (
        AlgorithmIdentification,
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    from medfm import __version__
    from medfm._paths import atomic_path

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputError(f"{out_path}: exists; pass overwrite=True (--force) to replace it")
    if not probabilities:
        raise InputError(f"{out_path}: no class probabilities to report")
    sources = []
    for p in source_files:
        try:
            sources.append(pydicom.dcmread(p, stop_before_pixels=True))
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise InputError(f"{p}: not a readable DICOM file ({type(exc).__name__})") from None
    if not sources:
        raise InputError(f"{out_path}: no DICOM source instances to reference (the input was not a DICOM series)")
    algo = AlgorithmIdentification(name=algorithm[:64], version=__version__)
    measurements = [
        Measurement(name=hd.sr.CodedConcept(f"prob-{i}", PROB_SCHEME, f"Probability of {name}"[:64]), value=float(p),
                    unit=hd.sr.CodedConcept("1", "UCUM", "no units"), algorithm_id=algo)
        for i, (name, p) in enumerate(probabilities.items())
    ]
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier="medfm class probabilities"),
        algorithm_id=algo, measurements=measurements,
        source_images=[SourceImageForMeasurementGroup(s.SOPClassUID, s.SOPInstanceUID) for s in sources],
    )
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="medfm", manufacturer_name="medfm", model_name=f"medfm {__version__}"),
    )
    report = MeasurementReport(observation_context=ObservationContext(observer_device_context=device),
                               procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=[group])
    with warnings.catch_warnings():  # single-component patient names in the source are copied as they are
        warnings.simplefilter("ignore", UserWarning)
        sr = ComprehensiveSR(
            evidence=sources, content=report[0], series_instance_uid=hd.UID(), series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medfm", is_complete=True,
            series_description="medfm class probabilities",
        )
    with atomic_path(out_path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return out_path


def read_classification_sr(sr_path: str | Path) -> dict[str, object]:
    """{"probabilities": {class: p}, "source_series": [UIDs], "source_instances": [UIDs]} of an SR written above."""
    import pydicom

    try:
        ds = pydicom.dcmread(sr_path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"{sr_path}: not a readable DICOM SR ({type(exc).__name__}: {exc})") from None
    probs: dict[str, float] = {}
    instances: list[str] = []

    def walk(items) -> None:
        for it in items:
            name = it.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in it else None
            if (it.get("ValueType") == "NUM" and name is not None and name.CodingSchemeDesignator == PROB_SCHEME
                    and str(name.CodeMeaning).startswith("Probability of ")):
                probs[str(name.CodeMeaning)[len("Probability of "):]] = float(it.MeasuredValueSequence[0].NumericValue)
            if it.get("ValueType") == "IMAGE":
                instances.extend(str(r.ReferencedSOPInstanceUID) for r in it.ReferencedSOPSequence)
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.get("ContentSequence", []))
    series = [str(s.SeriesInstanceUID) for st in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
              for s in st.ReferencedSeriesSequence]
    if not probs:
        raise InputError(f"{sr_path}: holds no medfm class probabilities")
    return {"probabilities": probs, "source_series": series, "source_instances": instances}
