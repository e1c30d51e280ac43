#!/usr/bin/env python3
"""Hold N MiB of GPU memory until the parent process exits.

Used by the stand-in engine (--test-gpu-mb) in scripts/gpu-check.sh: the
engine starts this helper in its own process group, so NVML's per-process
figure for it counts as the engine's. Prints "holding N MiB" once the memory
is allocated, then waits. Needs PyTorch with CUDA.
"""
import os
import sys
import time

import torch


def main() -> int:
    mib = int(sys.argv[1])
    parent = os.getppid()
    block = torch.empty(mib * 1024 * 1024, dtype=torch.uint8, device="cuda")
    block.fill_(1)
    torch.cuda.synchronize()
    print(f"holding {mib} MiB", flush=True)
    while os.getppid() == parent:
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
