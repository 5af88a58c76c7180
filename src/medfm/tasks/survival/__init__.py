"""Prognosis: survival models (Cox, penalised Cox, RSF, boosting, DeepSurv, ensemble), early and
late fusion of tabular, omics and image-embedding blocks, and the CV protocol writing Records."""
