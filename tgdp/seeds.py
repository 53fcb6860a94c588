"""Every seed the project derives from a configured seed, one named function per purpose.

A configured ``seed`` (a stage's, the sampler's, the data's) feeds several independent random streams.
Each stream gets its own derivation so that two streams never share a generator state by accident (e.g.
the sampler noise of the test draw must not replay the validation draw's). The constants are historical
and must not change: every committed result was produced with them (tests/test_pinned_values.py pins them).
As in DiT's ``global_seed * world_size + rank``, a per-rank stream is derived once, here.
"""

from __future__ import annotations

import torch

from tgdp import distributed as D


def minibatch(seed: int) -> int:
    """The per-rank stream of a stage's minibatch indices, diffusion times and noise: ranks draw distinct
    batches, and the stride 1009 (a prime) keeps seed s of rank r apart from seed s + 1 of rank r - 1."""
    return seed * 1009 + D.rank()


def minibatch_generator(seed: int) -> torch.Generator:
    """A CPU generator on the ``minibatch(seed)`` stream (its state is checkpointed with the stage)."""
    return torch.Generator().manual_seed(minibatch(seed))


def guidance_epoch(seed: int, epoch: int) -> int:
    """The guidance stage's permutation of the source samples in ``epoch``: the same on every rank (each
    rank takes its shard), and a pure function of the epoch, so a resumed run reshuffles identically."""
    return seed * 7919 + epoch


def ddpm_chunk(seed: int, start: int) -> int:
    """The ancestral sampler's per-step noise for the chunk of samples starting at row ``start``: the same
    rows get the same noise whatever the batch size or the number of ranks (the initial noise is ``seed``)."""
    return seed * 31 + start


def label_draw(seed: int) -> int:
    """The labels drawn for conditional sampling: separate from the initial noise, which uses ``seed``."""
    return seed + 17


def noise_of_test_split(seed: int) -> int:
    """The sampler seed of the *test* draw: fresh noise, so test numbers never reuse the validation samples
    (which are drawn with ``seed`` itself and selected on)."""
    return seed + 1


def noise_floor_reference(seed: int) -> int:
    """The second true-target draw of the GMM noise floor ('true_target'): independent of the reference
    draw it is scored against, which uses ``seed``."""
    return seed + 500
