#!/usr/bin/env python3
"""PyTorch reference for pneumo's throughput benchmark (see docs/benchmark.md).

The same network as pneumo's default `NetConfig` (PneumoNet: a stride-2 3x3 stem and four
3x3 stages of widths 16-32-64-96-128, each convolution without bias followed by batch norm and
ReLU, 2x2 max pooling after the middle stages, global average pooling, dropout 0.3, one linear
logit), the same batch (32 images of 1x128x128, float32), the same loss (class-weighted binary
cross-entropy on the logit with label smoothing 0.05, written as pneumo writes it), the same
optimiser (AdamW with burn's defaults and pneumo's settings: betas 0.9/0.999, epsilon 1e-5,
weight decay 1e-4, learning rate 2e-3) and the same preprocessing for `predict` (grayscale in
[0, 1], squashed to 128x128 by a triangle filter that widens when shrinking, per-image
standardisation).

Sub-commands; all but `predict` print one JSON object:

    train-bench [--steps 12] [--warmup 3]   full optimisation steps, peak memory of the process
    infer-bench [--iterations 12]           batched forward passes in inference mode
    gemm [--size 4096] [--repeats 5]        torch.mm peak for the thread count
    save-weights [PATH]                     random-init weights for `predict`
    preprocess FILE                         the model input made of an image file
    predict FILE [--weights PATH]           one image, end to end, as a user runs it

Threads: `--threads N` (default 2) calls torch.set_num_threads(N).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

WIDTHS = (16, 32, 64, 96, 128)
DROPOUT = 0.3
INPUT_SIZE = 128
BATCH = 32
LEARNING_RATE = 2e-3
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 1e-4
ADAM_EPSILON = 1e-5
LABEL_SMOOTHING = 0.05
MAX_SIDE = 16_384  # pneumo's preprocess::MAX_SIDE
DEFAULT_WEIGHTS = os.path.join("target", "bench", "reference-weights.pt")


class PneumoNet(nn.Module):
    """pneumo's default network, layer for layer."""

    def __init__(self, widths=WIDTHS, dropout=DROPOUT):
        """Builds the stages for `widths` (output channels, stem first)."""
        super().__init__()
        layers = []
        channels_in = 1
        for i, channels_out in enumerate(widths):
            stride = 2 if i == 0 else 1
            layers += [
                nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(channels_out),
                nn.ReLU(),
            ]
            if 0 < i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels_in = channels_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels_in, 1)

    def forward(self, images):
        """The pneumonia logit of each image of a [batch, 1, size, size] tensor, [batch]."""
        pooled = self.pool(self.features(images)).flatten(1)
        return self.head(self.dropout(pooled)).flatten()


def forward_flops(size, widths=WIDTHS):
    """Multiply-adds times two of one forward pass, counted as pneumo's NetConfig counts them."""
    flops = 0
    channels_in = 1
    side = size
    for i, channels_out in enumerate(widths):
        if i == 0:
            side = (side + 1) // 2
        flops += 2 * side * side * channels_in * channels_out * 9
        if 0 < i < len(widths) - 1:
            side //= 2
        channels_in = channels_out
    return flops + 2 * channels_in


def weighted_bce(logits, targets, weights):
    """-[t log s(z) + (1 - t) log(1 - s(z))] = (1 - t) z - log s(z), weighted, averaged."""
    per_image = (1.0 - targets) * logits - nn.functional.logsigmoid(logits)
    return (per_image * weights).mean()


def memory_figure(field):
    """A memory figure of this process from /proc/self/status, in bytes: "VmHWM:" is the peak
    resident set so far (getrusage's ru_maxrss), "VmRSS:" the current one. None where the
    system does not report it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# Resident memory once Python, torch, numpy and PIL are loaded, before any benchmark work.
START_RSS = memory_figure("VmRSS:")


def versions():
    """Versions of everything on the reference side."""
    import PIL

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def random_images(count, size, generator):
    """Smooth random images with a little noise, standardised per image."""
    y = torch.arange(size, dtype=torch.float32).view(size, 1)
    x = torch.arange(size, dtype=torch.float32).view(1, size)
    images = []
    for _ in range(count):
        draws = torch.rand(3, generator=generator) * torch.tensor([0.08, 0.08, 6.0])
        fx, fy, phase = draws.tolist()
        wave = 0.5 + 0.4 * torch.sin((fx + 0.02) * x + phase) * torch.cos((fy + 0.02) * y)
        wave = wave + (torch.rand(size, size, generator=generator) - 0.5) * 0.1
        wave = (wave - wave.mean()) / wave.std(unbiased=False).clamp_min(1e-3)
        images.append(wave)
    return torch.stack(images).unsqueeze(1)


def train_bench(args):
    """Times full optimisation steps on two batches' worth of synthetic images, used in turn."""
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(2018)
    model = PneumoNet()
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=LEARNING_RATE,
        betas=BETAS,
        eps=ADAM_EPSILON,
        weight_decay=WEIGHT_DECAY,
    )
    pool = random_images(2 * BATCH, INPUT_SIZE, generator)
    # One normal image in four, weighted by inverse class frequency (averaging 1), as pneumo's
    # benchmark does.
    labels = torch.tensor([0.0 if i % 4 == 0 else 1.0 for i in range(2 * BATCH)])
    normal = int((labels < 0.5).sum())
    total = labels.numel()
    class_weights = (total / (2.0 * normal), total / (2.0 * (total - normal)))
    targets_all = labels * (1.0 - LABEL_SMOOTHING) + LABEL_SMOOTHING / 2.0
    weights_all = torch.where(labels > 0.5, class_weights[1], class_weights[0])

    step_seconds = []
    losses = []
    for step in range(args.warmup + args.steps):
        first = (step * BATCH) % pool.shape[0]
        images = pool[first : first + BATCH]
        targets = targets_all[first : first + BATCH]
        weights = weights_all[first : first + BATCH]

        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = weighted_bce(model(images), targets, weights)
        loss_value = loss.item()
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - started

        if not np.isfinite(loss_value):
            raise SystemExit(f"the loss became {loss_value} at step {step}")
        if step >= args.warmup:
            step_seconds.append(elapsed)
            losses.append(loss_value)

    median = statistics.median(step_seconds)
    # Forward, plus about twice that backward (gradients of inputs and of weights).
    flops = 3 * forward_flops(INPUT_SIZE) * BATCH
    return {
        "mode": "train",
        "engine": "pytorch",
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        "input_size": INPUT_SIZE,
        "learning_rate": LEARNING_RATE,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "step_seconds": step_seconds,
        "median_step_seconds": median,
        "images_per_second": BATCH / median,
        "training_flops_per_step": flops,
        "gflops_per_second": flops / median / 1e9,
        "final_loss": losses[-1],
        "start_rss_bytes": START_RSS,
        "peak_rss_bytes": memory_figure("VmHWM:"),
        "versions": versions(),
    }


def infer_bench(args):
    """Times batched forward passes in inference mode; reports the network's shape too."""
    generator = torch.Generator().manual_seed(11)
    torch.manual_seed(2018)
    model = PneumoNet().eval()
    images = random_images(BATCH, INPUT_SIZE, generator)
    seconds = []
    with torch.inference_mode():
        for iteration in range(args.iterations + 2):
            started = time.perf_counter()
            logits = model(images).tolist()
            elapsed = time.perf_counter() - started
            if len(logits) != BATCH:
                raise SystemExit(f"{len(logits)} logits for {BATCH} images")
            if iteration >= 2:
                seconds.append(elapsed)
        features = model.features(torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE))
    median = statistics.median(seconds)
    return {
        "mode": "infer",
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        "input_size": INPUT_SIZE,
        "batch_seconds": seconds,
        "median_batch_seconds": median,
        "images_per_second": BATCH / median,
        "network": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "forward_flops": forward_flops(INPUT_SIZE),
            "feature_shape": list(features.shape[1:]),
        },
        "peak_rss_bytes": memory_figure("VmHWM:"),
        "versions": versions(),
    }


def gemm_bench(args):
    """Times size x size single-precision products with torch.mm on torch's threads."""
    generator = torch.Generator().manual_seed(3)
    lhs = torch.rand(args.size, args.size, generator=generator) * 2 - 1
    rhs = torch.rand(args.size, args.size, generator=generator) * 2 - 1
    gflops = []
    for repeat in range(args.repeats + 1):
        started = time.perf_counter()
        torch.mm(lhs, rhs)
        elapsed = time.perf_counter() - started
        if repeat > 0:
            gflops.append(2 * args.size**3 / elapsed / 1e9)
    return {
        "mode": "gemm",
        "library": "torch.mm",
        "threads": torch.get_num_threads(),
        "size": args.size,
        "gflops_per_second": gflops,
        "median_gflops_per_second": statistics.median(gflops),
        "best_gflops_per_second": max(gflops),
        "versions": versions(),
    }


def load_gray(path):
    """Decodes an image file to one float32 channel in [0, 1], as pneumo's decode_gray does:
    8- and 16-bit gray kept, colour turned into Rec. 709 luma, alpha dropped."""
    # The sides are checked from the header, before decoding, as pneumo does; PIL's own
    # pixel-count guard would refuse some images pneumo accepts.
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as image:
        width, height = image.size
        if max(width, height) > MAX_SIDE or min(width, height) == 0:
            raise ValueError(f"{path}: {width}x{height} pixels is outside 1..{MAX_SIDE} a side")
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image, dtype=np.float32) / 65535.0
        elif image.mode == "L":
            pixels = np.asarray(image, dtype=np.float32) / 255.0
        else:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            pixels = rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    return pixels


def preprocess(path, size=INPUT_SIZE):
    """File to model input: gray [0, 1], squashed to size x size with a triangle filter that
    widens with the shrink factor (PIL's BILINEAR on float images, as the image crate's
    Triangle), then per-image standardisation."""
    gray = load_gray(path)
    if gray.shape != (size, size):
        gray = np.asarray(
            Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
    pixels = gray.astype(np.float64)
    std = max(pixels.std(), 1e-3)
    return ((pixels - pixels.mean()) / std).astype(np.float32)


def preprocess_command(args):
    """The model input made of one image file, for checking against pneumo's."""
    return {
        "mode": "preprocess",
        "file": args.file,
        "input_size": INPUT_SIZE,
        "pixels": preprocess(args.file).ravel().tolist(),
    }


def save_weights(args):
    """Saves freshly initialised weights for `predict`."""
    torch.manual_seed(1)
    os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
    partial = args.path + ".partial"
    torch.save(PneumoNet().state_dict(), partial)
    os.replace(partial, args.path)
    return {"mode": "save-weights", "path": args.path}


def predict(args):
    """Classifies one image file and prints the answer, as `pneumo predict` does. The weights
    are random, so the answer means nothing: this is for timing."""
    model = PneumoNet()
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval()
    pixels = preprocess(args.file)
    with torch.inference_mode():
        logit = model(torch.from_numpy(pixels).view(1, 1, INPUT_SIZE, INPUT_SIZE)).item()
    probability = 1.0 / (1.0 + np.exp(-logit))
    threshold = 0.5
    label = "PNEUMONIA" if probability >= threshold else "NORMAL"
    print(f"{'image':<{len(args.file)}}  {'label':<10} {'probability':>11} {'threshold':>9}")
    print(f"{args.file}  {label:<10} {probability:>11.4f} {threshold:>9.4f}")
    return None


def positive(text):
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def main():
    """Parses the command line, runs one sub-command and prints its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positive, default=2)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train-bench")
    train.add_argument("--steps", type=positive, default=12)
    train.add_argument("--warmup", type=int, default=3)
    infer = commands.add_parser("infer-bench")
    infer.add_argument("--iterations", type=positive, default=12)
    gemm = commands.add_parser("gemm")
    gemm.add_argument("--size", type=positive, default=4096)
    gemm.add_argument("--repeats", type=positive, default=5)
    save = commands.add_parser("save-weights")
    save.add_argument("path", nargs="?", default=DEFAULT_WEIGHTS)
    pixels = commands.add_parser("preprocess")
    pixels.add_argument("file")
    single = commands.add_parser("predict")
    single.add_argument("file")
    single.add_argument("--weights", default=DEFAULT_WEIGHTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = {
        "train-bench": train_bench,
        "infer-bench": infer_bench,
        "gemm": gemm_bench,
        "save-weights": save_weights,
        "preprocess": preprocess_command,
        "predict": predict,
    }[args.command]
    try:
        report = run(args)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    if report is not None:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
