"""Visual question answering: generative (any generator) and discriminative baselines, scored
by closed / open accuracy, token F1 and BLEU-1 with bootstrap CIs (see ``run``)."""

from medfm.tasks.vqa.run import VQAConfig, run_vqa, split_train_test

__all__ = ["VQAConfig", "run_vqa", "split_train_test"]
