"""Image synthesis: a small class-conditional diffusion model and its evaluation
(Frechet distance and k-NN precision/recall in a zoo encoder's feature space, TSTR AUROC)."""

from medfm.tasks.synthesis.diffusion import ClassConditionalDiffusion, DiffusionConfig
from medfm.tasks.synthesis.protocol import SynthConfig, evaluate_synthetic, run_synthesis

__all__ = ["ClassConditionalDiffusion", "DiffusionConfig", "SynthConfig", "evaluate_synthetic", "run_synthesis"]
