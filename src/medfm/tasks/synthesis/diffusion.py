"""A small class-conditional diffusion model (diffusers ``UNet2DModel`` + DDPM training, DDIM sampling).

Images are (N, C, H, W) uint8 at MedMNIST sizes, scaled to [-1, 1]; the UNet predicts the
noise (epsilon) given the noisy image, the timestep and the class label (a learned class
embedding added to the time embedding, ``num_class_embeds``). Training runs on the CPU in
minutes at 28 px with the default tiny UNet; sampling uses DDIM with ``sample_steps`` steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm._optional import optional_import
from medfm.errors import ConfigError, InputError


@dataclass(frozen=True)
class DiffusionConfig:
    """UNet size and schedule. ``channels``: feature widths per resolution (each halves H, W)."""

    channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    train_steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    num_train_timesteps: int = 1000
    sample_steps: int = 25
    seed: int = 0
    augment_flip: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train_steps < 1 or self.batch_size < 1 or self.sample_steps < 1:
            raise ConfigError("train_steps, batch_size and sample_steps must be >= 1")


def _unet(cfg: DiffusionConfig, size: int, channels: int, n_classes: int) -> Any:
    diffusers = optional_import("diffusers")
    n = len(cfg.channels)
    if size % (2 ** (n - 1)):
        raise ConfigError(f"image size {size} must be divisible by {2 ** (n - 1)} for {n} UNet levels")
    return diffusers.UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.channels), down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
        num_class_embeds=n_classes, norm_num_groups=min(8, min(cfg.channels)),
    )


class ClassConditionalDiffusion:
    """Train with :meth:`fit` on uint8 images and integer labels; draw with :meth:`sample`."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.model: Any = None
        self.n_classes = 0
        self.shape: tuple[int, int, int] = (1, 28, 28)
        self.losses: list[float] = []
        self.seconds = 0.0

    def fit(self, images: np.ndarray, labels: np.ndarray, progress: Any = None) -> ClassConditionalDiffusion:
        import torch

        diffusers = optional_import("diffusers")
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise InputError(f"diffusion training wants square (N, C, H, W) images, got {images.shape}")
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        cfg = self.cfg
        self.n_classes = int(labels.max()) + 1
        self.shape = tuple(images.shape[1:])  # type: ignore[assignment]
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.model = _unet(cfg, images.shape[-1], images.shape[1], self.n_classes)
        sched = diffusers.DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)
        x_all = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
        y_all = torch.from_numpy(labels)
        self.model.train()
        t0 = time.perf_counter()
        steps = range(cfg.train_steps)
        for step in progress(steps, total=cfg.train_steps, desc="diffusion train") if progress else steps:
            idx = torch.from_numpy(rng.integers(0, len(x_all), size=min(cfg.batch_size, len(x_all))))
            x0, y = x_all[idx], y_all[idx]
            if cfg.augment_flip:
                flip = torch.from_numpy(rng.random(len(x0)) < 0.5)
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            noise = torch.randn_like(x0)
            t = torch.randint(0, cfg.num_train_timesteps, (len(x0),))
            pred = self.model(sched.add_noise(x0, noise, t), t, class_labels=y).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for g in opt.param_groups:  # cosine decay to 0 over the run
                g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * (step + 1) / cfg.train_steps))
            self.losses.append(loss.item())
        self.seconds = time.perf_counter() - t0
        self.model.eval()
        return self

    def sample(self, labels: np.ndarray, seed: int = 0, batch_size: int = 256, progress: Any = None) -> np.ndarray:
        """Generate one image per entry of ``labels`` -> (N, C, H, W) uint8 (DDIM, eta 0)."""
        import torch

        diffusers = optional_import("diffusers")
        if self.model is None:
            raise ConfigError("sample() before fit()")
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise InputError(f"labels must be in [0, {self.n_classes}), got {labels.min()}..{labels.max()}")
        sched = diffusers.DDIMScheduler(num_train_timesteps=self.cfg.num_train_timesteps)
        sched.set_timesteps(self.cfg.sample_steps)
        gen = torch.Generator().manual_seed(seed)
        out = []
        starts = range(0, len(labels), batch_size)
        with torch.inference_mode():
            for i in progress(starts, total=len(starts), desc="diffusion sample (batches)") if progress else starts:
                y = torch.from_numpy(labels[i : i + batch_size])
                x = torch.randn((len(y), *self.shape), generator=gen)
                for t in sched.timesteps:
                    eps = self.model(x, t, class_labels=y).sample
                    x = sched.step(eps, t, x).prev_sample
                out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())
        return np.concatenate(out) if out else np.zeros((0, *self.shape), np.uint8)
