"""Trust: calibration and abstention (``calibrate``), drift monitoring (``monitor``),
explanations with sanity checks (``explain``) and federated training (``federated``).

Heavy libraries (torch, captum, pytorch_grad_cam, flwr, opacus) are imported inside functions.
"""
