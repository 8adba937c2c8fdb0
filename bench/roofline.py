"""What bounds the Fashion-MNIST lab's step on this CPU: its arithmetic against the machine's measured matrix rate.

    python bench/roofline.py                    # lab 4's network (cnn-dropout), batch 128, fp32, this process's threads

Counts the floating-point operations of one training step (forward, backward, Adam; PyTorch's FlopCounterMode),
measures the machine's fp32 matrix-product rate (a large square product, and the step's own products at their
own shapes), times cnnlab's step (the fast engine, as `fit` runs it), and prints what share of the rate each
reaches. A framework cannot run the step faster than its products at the machine's best rate: when cnnlab's step
already sits near its own products' time, what is left to win is in the products' shapes, not in the framework.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import load_average, machine  # noqa: E402

from cnnlab import create_model, get_recipe  # noqa: E402
from cnnlab.engines import forward_fn, memory_format  # noqa: E402
from cnnlab.loop import make_optimizer  # noqa: E402

BATCH, STEPS, REPEATS = 128, 60, 5
EPOCH_STEPS = 375  # lab 4: 48,000 training images / 128


def seconds(fn, repeats: int = REPEATS) -> list[float]:
    """Wall seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def matrix_rate(n: int = 2048) -> float:
    """GFLOP/s of an fp32 n×n product: the best this machine's BLAS does on this process's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / statistics.median(seconds(lambda: a @ b)) / 1e9


def main() -> None:
    recipe = get_recipe("fashion-cnn").resolved()
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(recipe.model, (1, 28, 28), 10)
    layout = memory_format(model, device, "fast", recipe.channels_last)
    model = model.to(memory_format=layout)
    optimizer = make_optimizer(recipe, model)
    forward = forward_fn(model, device, "fast")
    images = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(images), labels).backward()
        optimizer.step()

    model.train()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}

    # The step's own products at their own shapes (plain model, so FlopCounterMode saw them as PyTorch ops):
    # the dense layer's forward and its two backward products, and the convolution as the 3×3 patches × kernel.
    dense_in, dense_out = model.get_submodule("dense").in_features, model.get_submodule("dense").out_features
    x, w, g = torch.randn(BATCH, dense_in), torch.randn(dense_out, dense_in), torch.randn(BATCH, dense_out)
    patches, kernel = torch.randn(BATCH * 28 * 28, 9), torch.randn(9, 32)
    own = [(x, w.T), (g, w), (g.T, x), (patches, kernel)]
    own_flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in own)
    own_time = statistics.median(seconds(lambda: [a @ b for a, b in own]))

    step_times = [t / STEPS for t in seconds(lambda: [step() for _ in range(STEPS)], 3)]
    step_time = statistics.median(step_times)
    peak = matrix_rate()

    print(f"{machine('cpu')}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load_average()}\n")
    print(f"one training step of lab 4 (batch {BATCH}, fp32): {flops / 1e9:.3f} GFLOP "
          f"({', '.join(f'{op} {n / 1e9:.3f}' for op, n in sorted(by_op.items(), key=lambda kv: -kv[1]))})\n")
    print("| measure | per step | s / epoch (375 steps) | share of the machine's rate |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| fp32 matrix rate, 2048×2048 product | {peak:.1f} GFLOP/s | {flops / (peak * 1e9) * EPOCH_STEPS:.2f} "
          "(the step's FLOPs at this rate: the floor) | 100 % |")
    print(f"| the step's own products at their shapes | {own_time * 1e3:.2f} ms for {own_flops / 1e9:.3f} GFLOP "
          f"({own_flops / own_time / 1e9:.1f} GFLOP/s) | {own_time * EPOCH_STEPS:.2f} | "
          f"{own_flops / own_time / 1e9 / peak:.0%} |")
    print(f"| cnnlab's whole step (fast engine) | {step_time * 1e3:.2f} ms "
          f"(min {min(step_times) * 1e3:.2f}, max {max(step_times) * 1e3:.2f}) | {step_time * EPOCH_STEPS:.2f} | "
          f"{flops / step_time / 1e9 / peak:.0%} |")


if __name__ == "__main__":
    main()
