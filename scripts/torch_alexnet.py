#!/usr/bin/env python3
"""The paper's AlexNet in PyTorch, timed like `cargo xtask bench train`: the peer that
scripts/gpu-check.sh measures our OpenCL backend against, on the same GPU in the same sitting.

The net (Krizhevsky, Sutskever and Hinton 2012, input 3 x 227 x 227, 1000 classes):
conv1 96 11x11 stride 4, ReLU, LRN, max-pool 3/2; conv2 256 5x5 pad 2 in two groups, ReLU, LRN,
pool; conv3 384 3x3 pad 1; conv4 384 3x3 pad 1 in two groups; conv5 256 3x3 pad 1 in two groups,
pool (ReLU after every convolution); fc 9216 -> 4096 -> 4096 -> 1000 with ReLU and dropout 0.5
before the first two. LRN as the paper writes it: b = a / (k + alpha * sum of a^2 over n
channels)^beta with k = 2, n = 5, alpha = 1e-4, beta = 0.75; PyTorch's LocalResponseNorm divides
alpha by n, so it is given n * alpha. A training step is forward, cross-entropy, backward and SGD
(momentum 0.9, weight decay 5e-4), with the loss read back each step as our trainer does.

Usage: torch_alexnet.py [--device cuda] [--batch 128] [--infer-batch 32] [--steps 20]
                        [--infer-steps 50] [--tf32 off|default]
Prints one line per measurement: `pytorch <mode> training, batch B: X images/s` and likewise
for inference. Exits 2 when PyTorch or the device is missing.
"""

import argparse
import sys
import time

try:
    import torch
    from torch import nn
except ImportError:
    print("pytorch: not installed", file=sys.stderr)
    sys.exit(2)

LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def paper_lrn():
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_SIZE * LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


def paper_alexnet(classes=1000):
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), paper_lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), paper_lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, classes),
    )


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, steps, device):
    step()  # warm-up: cuDNN algorithm choice, allocations
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--infer-steps", type=int, default=50)
    parser.add_argument("--tf32", choices=["off", "default"], default="off",
                        help="off: strict float32 matmuls and convolutions; default: PyTorch's own settings")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("pytorch: CUDA is not available", file=sys.stderr)
        sys.exit(2)
    if args.tf32 == "off":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mode = f"float32, TF32 {args.tf32}"
    print(f"pytorch {torch.__version__} on {name} ({mode}; matmul tf32={torch.backends.cuda.matmul.allow_tf32}, "
          f"cudnn tf32={torch.backends.cudnn.allow_tf32})")

    torch.manual_seed(1)
    model = paper_alexnet().to(device)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()

    x = torch.randn(args.batch, 3, 227, 227, device=device)
    labels = torch.arange(args.batch, device=device) % 1000

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        optimizer.step()
        loss.item()  # the one read-back our trainer makes too

    model.train()
    seconds = time_steps(train_step, args.steps, device)
    print(f"pytorch ({mode}) training, batch {args.batch}: {args.batch / seconds:.1f} images/s "
          f"({seconds:.4f} s/step over {args.steps} steps; {params} parameters)")

    xi = torch.randn(args.infer_batch, 3, 227, 227, device=device)

    def infer_step():
        with torch.no_grad():
            model(xi).cpu()

    model.eval()
    seconds = time_steps(infer_step, args.infer_steps, device)
    print(f"pytorch ({mode}) inference, batch {args.infer_batch}: {args.infer_batch / seconds:.1f} images/s "
          f"({seconds:.4f} s/batch over {args.infer_steps} batches)")


if __name__ == "__main__":
    main()
