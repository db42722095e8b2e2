"""Data parallelism over threads: every training batch cut into parts, one thread per part.

    model = BatchParallel(network, threads=2)
    loss, grads, logits = model.loss_and_grads(x, labels, label_smoothing, rng)
    model.close()

NumPy releases the GIL inside its array loops and BLAS calls, so Python threads that each run
the layers on their own part of the batch keep that many cores busy. Numpy never spreads its
elementwise work (pooling, im2col copies, the input-gradient sums) over cores by itself, and
OpenBLAS's own threads spin while they wait, which makes them collapse when other work shares
the cores; so each part should run with a single-threaded BLAS (OPENBLAS_NUM_THREADS=1).

Each thread has its own copy of the layers (own buffers), bound to the network's parameters and
to its own gradient vector. Part p of B examples starts its backward pass from its rows of the
whole batch's dLoss/dlogits, i.e. its own mean-loss gradient times n_p / B, so the parts'
parameter gradients simply add up to the whole batch's:

    dL/dtheta = (1/B) sum_i grad l_i = sum_p (n_p / B) * (mean gradient over part p)

The sum (and everything else) is done in a fixed order, so a run is reproducible for a given
number of threads; a different number rounds differently in the last bits.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from netcore.network import (
    Network,
    backward_layers,
    bind_layers,
    build,
    forward_layers,
    named_views,
    param_shapes,
)


class BatchParallel:
    """`network.loss_and_grads`, with each batch split across `threads` threads."""

    def __init__(self, network: Network, threads: int):
        if threads < 2:
            raise ValueError(f"BatchParallel needs >= 2 threads, got {threads}")
        self.network = network
        shapes = param_shapes(network.config)
        # Part 0 runs in the caller's thread, on the network's own layers and gradients.
        self.stacks = [network.layers]
        self.flat_grads = [network.flat_grads]
        for _ in range(threads - 1):
            layers = build(network.config, network.dtype)
            flat = np.zeros_like(network.flat_grads)
            bind_layers(layers, network.params, named_views(flat, shapes))
            self.stacks.append(layers)
            self.flat_grads.append(flat)
        self.pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="netcore-part")

    def loss_and_grads(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        label_smoothing: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
        """As Network.loss_and_grads: (mean loss, gradients in network.grads, logits)."""
        threads = len(self.stacks)
        bounds = np.linspace(0, len(x), threads + 1).round().astype(int)
        rngs = rng.spawn(threads) if rng is not None else [None] * threads
        jobs = [
            (p, x[bounds[p] : bounds[p + 1]], labels[bounds[p] : bounds[p + 1]], rngs[p])
            for p in range(threads)
        ]
        others = [self.pool.submit(self._part, *job, len(x), label_smoothing) for job in jobs[1:]]
        results = [self._part(*jobs[0], len(x), label_smoothing)]
        results += [future.result() for future in others]
        for flat in self.flat_grads[1:]:
            self.network.flat_grads += flat
        loss = sum(part_loss for part_loss, _ in results)
        return loss, self.network.grads, np.concatenate([logits for _, logits in results])

    def _part(
        self,
        p: int,
        x: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator | None,
        batch: int,
        label_smoothing: float,
    ) -> tuple[float, np.ndarray]:
        """Forward and backward of part p; returns (its share of the batch's mean loss, logits)."""
        share = len(x) / batch
        images = x.reshape(len(x), *self.network.example_shape)
        # numpy's error state is per thread: like the trainer's, overflow on the way to a
        # divergence is left to its loss check, not printed as warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            logits, caches = forward_layers(self.stacks[p], images, rng)
            loss, grad_logits = self.network.loss(logits, labels, label_smoothing)
            grad_logits *= grad_logits.dtype.type(share)
            backward_layers(self.stacks[p], caches, grad_logits)
        return loss * share, logits

    def close(self) -> None:
        """Stop the threads."""
        self.pool.shutdown()
