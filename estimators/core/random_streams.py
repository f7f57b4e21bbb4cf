"""One independent random stream per chunk of an estimate, so chunks may run on several threads at once and
still give the same numbers whatever the thread count or the order they finish in.

Why: on CPU, torch fills a tensor with normals on one thread while holding the generator's lock, so while a
large call draws its noise the other cores idle. Chunks that each draw from their own ``torch.Generator`` can
overlap one chunk's drawing with another's arithmetic. Chunk k's generator is seeded from one number drawn
from torch's global generator and k (numpy's ``SeedSequence`` spawning, the standard way to derive
independent parallel streams), so ``torch.manual_seed`` still fixes every number.

The estimators themselves draw through ``torch.distributions`` (which takes no generator argument), so a
``TorchFunctionMode`` routes every torch random op called in a chunk's thread to that chunk's generator. A
random op this module does not know would still draw from the global generator; ``run_chunks`` detects that
(the global state moved) and reports it, so the caller can rerun serially instead of keeping numbers that
depend on thread timing.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

T = TypeVar("T")

# Every torch random op that torch.distributions and the estimators use (each takes a ``generator`` keyword).
RANDOM_OPS = frozenset({
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.exponential_, torch.Tensor.bernoulli_,
    torch.Tensor.cauchy_, torch.Tensor.log_normal_, torch.Tensor.geometric_, torch.Tensor.random_,
    torch.Tensor.bernoulli, torch.Tensor.multinomial,
    torch.normal, torch.randn, torch.rand, torch.randint, torch.randperm, torch.randn_like, torch.rand_like,
    torch.randint_like, torch.bernoulli, torch.poisson, torch.multinomial, torch.binomial,
    torch._standard_gamma, torch._sample_dirichlet,
})  # fmt: skip


class DrawFrom(TorchFunctionMode):
    """Within this context (this thread only: torch function modes are thread-local), every torch random op
    that names no generator draws from ``generator``."""

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in RANDOM_OPS and kwargs.get("generator") is None:
            kwargs = {**kwargs, "generator": self.generator}
        return func(*args, **kwargs)


class GlobalGeneratorUsed(RuntimeError):
    """A chunk drew from torch's global generator, so its numbers would depend on thread timing."""


def chunk_generators(count: int) -> list[torch.Generator]:
    """``count`` CPU generators with independent streams, seeded from one draw of torch's global generator."""
    base = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    seeds = [np.random.SeedSequence(base, spawn_key=(k,)).generate_state(1, np.uint64)[0] for k in range(count)]
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


_intra_op = threading.Lock()
_intra_op_users = 0
_intra_op_saved = 1


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """torch.set_num_threads(1) while any caller is inside, then the previous count. Counted, because two
    estimates may run at once in one process (a Dask worker with several threads) and a plain save/restore
    pair would then leave the process on one thread."""
    global _intra_op_users, _intra_op_saved
    with _intra_op:
        if _intra_op_users == 0:
            _intra_op_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _intra_op_users += 1
    try:
        yield
    finally:
        with _intra_op:
            _intra_op_users -= 1
            if _intra_op_users == 0:
                torch.set_num_threads(_intra_op_saved)


def run_chunks(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Run ``tasks`` (CPU work), each drawing from its own stream, on up to ``workers`` threads with one intra-op
    thread each; results in task order. Consumes one draw of the global generator whatever ``workers`` is.

    One intra-op thread each, so that each task's arithmetic, and so every bit of the result, is the same
    whatever the thread count. It also avoids oversubscribing the cores with one team of intra-op threads per
    worker.

    Raises GlobalGeneratorUsed, with the global generator restored to its state before the call, when a task
    drew from the global generator anyway (a random op missing from RANDOM_OPS).
    """
    before = torch.get_rng_state()
    generators = chunk_generators(len(tasks))
    after_seed = torch.get_rng_state()

    def run(index: int) -> T:
        with DrawFrom(generators[index]):
            return tasks[index]()

    with one_intra_op_thread():
        if workers <= 1:
            results = [run(k) for k in range(len(tasks))]
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(tasks)), thread_name_prefix="varbench-chunk") as pool:
                results = list(pool.map(run, range(len(tasks))))
    if not torch.equal(torch.get_rng_state(), after_seed):
        torch.set_rng_state(before)
        raise GlobalGeneratorUsed("a chunk drew from torch's global generator (a random op not in RANDOM_OPS)")
    return results
