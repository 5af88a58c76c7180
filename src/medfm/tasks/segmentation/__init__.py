"""Segmentation: promptable foundation models, trained MONAI networks, evaluation in millimetres.

- ``promptable``: box / point prompts through the zoo's segmenters, 3D propagation from a key
  slice, prompts simulated from ground truth (jittered boxes, sampled points) for evaluation.
- ``train`` + ``model`` (+ ``frozen``): ``train_segmentation`` (UNet 2D/3D, SwinUNETR, or a frozen
  zoo encoder with a light decoder), saved as a folder that ``TrainedSegmenter.load`` reads back.
- ``evaluate``: per-case / per-label Dice, IoU, HD95, ASSD, NSD (mm) and volumes, bootstrap CIs.
- ``hc18``: head circumference (mm) from an ellipse fitted to a mask, with the annotation offset
  estimated on training masks.
- ``pipeline``: what ``medfm segment`` / ``train-seg`` run (files in, files out).

Submodules import torch/MONAI; import them directly (this package file stays light).
"""
