"""How fast can the main job's vision tower learn the scenes' shapes at all? A supervised upper bound.

Trains the same kind of ViT as `tiny-cpu.yaml` (or, for comparison, a small CNN) with cross-entropy on the scenes'
`label` (the shape of the largest object, 8 classes) instead of captions, and prints held-out accuracy as it goes.
Whatever the contrastive recipe does, it cannot learn shapes faster than this; docs/results.md uses it to show
which scene settings make the zero-shot targets reachable in the main job's budget.

    python benchmarks/shape_upper_bound.py --steps 800                                   # tiny-cpu's scenes
    python benchmarks/shape_upper_bound.py --steps 800 --raw-pixels                       # [0, 1] inputs
    python benchmarks/shape_upper_bound.py --steps 800 --scene background_contrast=1 background_palette_prob=0.35
    python benchmarks/shape_upper_bound.py --steps 800 --model cnn
    python benchmarks/shape_upper_bound.py --steps 800 --model torch-vit                  # torch's own encoder layers
    python benchmarks/shape_upper_bound.py --steps 800 --init-std 0.02                    # the width-768 default

One JSON line per evaluation: step, training loss, held-out accuracy (chance 0.125), seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import yaml
from torch import nn

from tips_hf import TipsVisionConfig, TipsVisionModel
from tips_hf.data import SpatialScenes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("vit", "torch-vit", "cnn"), default="vit",
                        help="vit: TipsVisionModel; torch-vit: the same shape built from torch.nn.TransformerEncoder")
    parser.add_argument("--image-size", type=int, default=84, help="input side (tiny-cpu: 84)")
    parser.add_argument("--patch-size", type=int, default=14)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-std", type=float, default=0.125,
                        help="initializer_range (tiny-cpu: 0.125 = 1/sqrt(width); TipsVisionConfig's default: 0.02)")
    parser.add_argument("--train-examples", type=int, default=8000)
    parser.add_argument("--eval-examples", type=int, default=500, help="scenes of the `test` split")
    parser.add_argument("--raw-pixels", action="store_true", help="[0, 1] inputs instead of (x - 0.5) / 0.25")
    parser.add_argument("--scene", nargs="*", default=[], metavar="KEY=VALUE",
                        help="SceneConfig fields over tiny-cpu's scene_options (values parsed as YAML)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def load(split: str, count: int, size: int, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = SpatialScenes(split, count, **options)
    rows = [scenes[i] for i in range(count)]
    pixels = np.stack([np.asarray(r["image"].resize((size, size), 2)) for r in rows])  # 2: bilinear
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.tensor([r["label"] - 1 for r in rows])


class ViTClassifier(nn.Module):
    def __init__(self, args: argparse.Namespace):
        super().__init__()
        config = TipsVisionConfig(hidden_size=args.width, num_hidden_layers=args.depth, num_attention_heads=4,
                                  intermediate_size=4 * args.width, image_size=args.image_size,
                                  patch_size=args.patch_size, initializer_range=args.init_std)
        self.tower = TipsVisionModel(config)
        self.head = nn.Linear(args.width, 8)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(pixel_values=pixels).pooler_output)  # the alt-text CLS token


class TorchViTClassifier(nn.Module):
    """A ViT of the same size written with torch's own layers: rules our implementation in or out as the cause."""

    def __init__(self, args: argparse.Namespace):
        super().__init__()
        tokens = (args.image_size // args.patch_size) ** 2 + 1
        self.patches = nn.Conv2d(3, args.width, args.patch_size, args.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, args.width))
        self.positions = nn.Parameter(torch.randn(1, tokens, args.width) * 0.02)
        layer = nn.TransformerEncoderLayer(args.width, 4, 4 * args.width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, args.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(args.width)
        self.head = nn.Linear(args.width, 8)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(pixels).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1) + self.positions
        return self.head(self.norm(self.encoder(tokens))[:, 0])


def cnn(args: argparse.Namespace) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 8))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = yaml.safe_load(open("training/configs/tiny-cpu.yaml"))["data"]
    options = dict(config["scene_options"], image_size=config["scene_image_size"])
    for item in args.scene:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    train_x, train_y = load("train", args.train_examples, args.image_size, options)
    test_x, test_y = load("test", args.eval_examples, args.image_size, options)

    def prepare(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.float() / 255.0
        return pixels if args.raw_pixels else (pixels - 0.5) / 0.25

    model = {"vit": ViTClassifier, "torch-vit": TorchViTClassifier, "cnn": cnn}[args.model](args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    print(json.dumps({"args": vars(args), "scene_options": options}))
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(train_x), (args.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(prepare(train_x[index])), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % max(args.steps // 4, 1) == 0:
            model.eval()
            with torch.no_grad():
                accuracy = (model(prepare(test_x)).argmax(-1) == test_y).float().mean().item()
            model.train()
            print(json.dumps({"step": step, "loss": round(loss.item(), 3), "test_accuracy": round(accuracy, 3),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
