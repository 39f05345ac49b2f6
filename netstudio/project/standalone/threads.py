"""CPU threads of the exported training program (copied into train.py by the script export)."""

import os

import torch

# CPU threads. When another program keeps a core busy, torch's default of one thread per core makes every
# op wait for a thread the system has paused (NetStudio measured 20-30x slower training on 2 cores);
# computing with only the cores other programs leave free avoids that. --threads N (or THREADS) fixes it.
THREADS = 0  # CPU threads per process; 0 = automatic


def set_threads(requested=THREADS):
    """Set torch's CPU threads for this process and print the count (rank 0); 0 = automatic.

    Automatic: the cores other programs leave free (1-minute load average), shared by this
    machine's processes, never more than torch's own default (torchrun sets one per process).
    """
    n = requested
    if n <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        free = cores - int(busy + 0.3)  # a core counts as busy from a load of 0.7
        n = min(torch.get_num_threads(), max(1, free // max(1, per_machine)))
    torch.set_num_threads(n)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"CPU threads: {n} per process ({'automatic' if requested <= 0 else 'fixed'})", flush=True)
    return n
