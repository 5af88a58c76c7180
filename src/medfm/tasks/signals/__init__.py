"""Signal tasks: beat detection scored with EC57 (``detect``), self-supervised pretraining of 1D
encoders (``pretrain``) and the beat-level classification benchmark (``bench``)."""
