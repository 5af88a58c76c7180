"""Tasks: one protocol per module, taking data (and a model) plus a config dataclass.

``medfm.tasks.classification``: knn, linear_probe, prototype, zero_shot, finetune, scratch.
"""
