"""Does torch.compile (or CUDA graphs through its reduce-overhead mode) pay off for convlens models?

    python bench/gpu_compile.py              # the CUDA recipe's models, batch 512, bf16
    python bench/gpu_compile.py --budget 120 # stop starting new compilations after 120 s

For each model, one training step (forward under bf16 autocast, cross-entropy, backward, SGD
with Nesterov momentum) on random Fashion-MNIST-sized batches, eager and compiled. Prints the
images per second after warm-up and what the compilation cost up front, so the two can be
weighed against a 10-epoch Fashion-MNIST run (540,000 images). Without CUDA it says so and
exits 0.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from convlens.models import create_model

MODELS = (
    ("convnet", {"blocks": 3, "batchnorm": True}),
    ("convnet", {"blocks": 3, "batchnorm": True, "width": 64}),
    ("resnet8", {"width": 32}),
)
MODES = ("eager", "default", "reduce-overhead")


def step_rate(model, batch: int, steps: int = 100) -> tuple[float, float]:
    """(seconds to the first step done, including compilation; images per second afterwards)."""
    device = torch.device("cuda")
    images = torch.rand(batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(10):  # compile, autotune, record graphs
        step()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return first, steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--budget", type=float, default=240, help="seconds; no new compilation after this")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_compile: no CUDA device on this machine; nothing to measure")
        return
    torch.backends.cudnn.benchmark = True
    began = time.perf_counter()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, bf16 autocast")
    print(f"{'model':<40} {'mode':<16} {'warm-up s':>9} {'img/s':>10} {'vs eager':>8}")
    for name, options in MODELS:
        eager = None
        for mode in MODES:
            if mode != "eager" and time.perf_counter() - began > args.budget:
                print(f"{name} {options}: budget spent, {mode} skipped")
                continue
            torch.manual_seed(0)
            model = create_model(name, (1, 28, 28), 10, mean=[0.29], std=[0.35], **options)
            model = model.cuda().to(memory_format=torch.channels_last).train()
            runnable = model if mode == "eager" else torch.compile(model, mode=mode)
            try:
                first, rate = step_rate(runnable, args.batch)
            except Exception as error:  # a compiler failure is a result here, not a crash
                print(
                    f"{name + ' ' + str(options):<40} {mode:<16} failed: {type(error).__name__}: {error}"[
                        :200
                    ]
                )
                continue
            eager = eager or rate
            print(
                f"{name + ' ' + str(options):<40} {mode:<16} {first:>9.1f} {rate:>10,.0f} {rate / eager:>7.2f}x"
            )
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
