"""The bounded build's map step on Ray: shards counted by Ray tasks, on one machine or a cluster.

Each task runs :func:`ngram.sharded.count_shard` on one shard and writes its
sorted runs into the build's spill folder; the driver then merges them
(:func:`ngram.sharded.reduce_order`) as a local build does, so the table is
the same array for array. On a cluster the spill folder must be a path every
node reads and writes (a shared filesystem such as NFS or a mounted bucket),
and each shard must be readable where its task runs (a callable that opens a
file on the shared filesystem, for example). Needs ``pip install steer[ray]``.
"""

from __future__ import annotations

from collections.abc import Callable

from ngram.sharded import ShardCounts, count_shard


def _ray():
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the Ray engine needs Ray: pip install 'steer[ray]'") from err
    return ray


def count_on_ray(args: list[tuple], address: str | None = None, workers: int = 1,
                 progress: Callable[[int], None] | None = None) -> list[ShardCounts]:
    """Count every shard as a Ray task; results in shard order.

    Args:
        args: per shard, the arguments of :func:`ngram.sharded.count_shard`
            (shard, vocab_size, order, chunk_tokens, run file stem).
        address: a running cluster's address ("ray://host:10001" or "auto");
            None starts a local Ray with ``workers`` CPUs, stopped afterwards.
        progress: called with each finished shard's token count.
    """
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(count_shard)
        pending = {task.remote(*a): i for i, a in enumerate(args)}
        results: list[ShardCounts | None] = [None] * len(args)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                res = ray.get(ref)
                results[pending.pop(ref)] = res
                if progress is not None:
                    progress(res.n_tokens)
        return results
    except BaseException:
        for ref in list(pending) if "pending" in locals() else []:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
