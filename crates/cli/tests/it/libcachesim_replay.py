#!/usr/bin/env python3
"""Replays cache requests through libCacheSim (PyPI `libcachesim`, the simulator behind the S3-FIFO
and SIEVE papers) and prints its hits per policy and capacity as JSON, in the field names of
`ferry trace simulate --json`.

The requests are what `ferry trace simulate --export-requests FILE` writes (a `key,size` header,
then one line a request), or the JSON lines a `--plugin` reads (their `key` and `size`), from a
file or standard input (`-`). Capacities in objects give every object size 1; in bytes, its size.

    libcachesim_replay.py REQUESTS --policy lru,lfu,arc,s3-fifo --objects 100,1000 [--bytes 1000000]
                          [--warmup 0.2] [--c-loop]

By default each request goes through `cache.get` from Python, counting hits exactly. `--c-loop`
(for benchmarks) lets libCacheSim read the `key,size` file itself and replay it in its C loop;
the hits then come back as a miss ratio, and are rounded. Each result carries the seconds its
replay took (with --c-loop, libCacheSim's parsing of the file included).
"""

import argparse
import json
import sys
import time

import libcachesim

POLICIES = {
    "lru": libcachesim.LRU,
    "lfu": libcachesim.LFU,
    "arc": libcachesim.ARC,
    "s3-fifo": libcachesim.S3FIFO,
}


def read_requests(path):
    """(keys, sizes) of the requests in `path`; a size is None when the trace had none."""
    keys, sizes = [], []
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for line in stream:
            line = line.strip()
            if not line or line == "key,size":
                continue
            if line.startswith("{"):
                r = json.loads(line)
                key, size = r["key"], r.get("size")
            else:
                key, _, size = line.partition(",")
                size = int(size) if size else None
            keys.append(int(key))
            sizes.append(size)
    return keys, sizes


def hashpower(objects):
    """A hash table about the size of the distinct objects (libCacheSim's default, 2^24 slots, is
    128 MiB a cache)."""
    return max(10, min(24, objects.bit_length() + 1))


def replay(cache, keys, weights, sizes, from_request):
    """Hits and bytes hit of `cache` over the requests, counted from `from_request` on; the cache
    sees each request as `weights[i]` large (1 when counting objects)."""
    hits = bytes_hit = 0
    req = libcachesim.Request()
    for i, key in enumerate(keys):
        req.obj_id = key
        req.obj_size = weights[i]
        if cache.get(req) and i >= from_request:
            hits += 1
            bytes_hit += sizes[i] or 0
    return hits, bytes_hit


def replay_in_c(cache, path, requests, from_request, by_bytes):
    """Hits of `cache` replaying the `key,size` file `path` in libCacheSim's own loop."""
    params = libcachesim.ReaderInitParam(
        ignore_obj_size=not by_bytes,
        ignore_size_zero_req=False,
        has_header=True,
        has_header_set=True,
        delimiter=",",
    )
    params.time_field = 0
    params.obj_id_field = 1
    params.obj_size_field = 2
    reader = libcachesim.TraceReader(path, libcachesim.TraceType.CSV_TRACE, params)
    if from_request > 0:
        cache.process_trace(reader, 0, from_request)
    miss_ratio, _ = cache.process_trace(reader, from_request)
    return round((1.0 - miss_ratio) * (requests - from_request)), None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("requests", help="key,size lines or plugin JSON lines; - for stdin")
    p.add_argument("--policy", default="lru", help="comma-separated: " + ", ".join(POLICIES))
    p.add_argument("--objects", default="", help="capacities in objects, comma-separated")
    p.add_argument("--bytes", default="", help="capacities in bytes, comma-separated")
    p.add_argument("--warmup", type=float, default=0.0, help="fraction of requests not counted")
    p.add_argument("--c-loop", action="store_true", help="replay in libCacheSim's C loop")
    a = p.parse_args()
    policies = [x.strip() for x in a.policy.split(",") if x.strip()]
    unknown = [x for x in policies if x not in POLICIES]
    if unknown:
        sys.exit(f"unknown policy {unknown[0]!r}; this script has: {', '.join(POLICIES)}")
    capacities = [("objects", int(c)) for c in a.objects.split(",") if c.strip()]
    capacities += [("bytes", int(c)) for c in a.bytes.split(",") if c.strip()]
    if not capacities:
        sys.exit("give capacities: --objects 100,1000 and/or --bytes 1000000")
    if a.c_loop and a.requests == "-":
        sys.exit("--c-loop reads the key,size file itself: give its path, not -")

    keys, sizes = read_requests(a.requests)
    if any(s is None for s in sizes) and any(u == "bytes" for u, _ in capacities):
        sys.exit("some requests have no size: simulate capacities in objects (--objects)")
    # The first request counted, as ferry computes it.
    from_request = int(a.warmup * len(keys))
    counted_bytes = sum(s or 0 for s in sizes[from_request:])
    ones = [1] * len(keys)
    objects = len(set(keys))
    results = []
    for policy in policies:
        for unit, capacity in capacities:
            cache = POLICIES[policy](capacity, hashpower=hashpower(objects))
            started = time.perf_counter()
            if a.c_loop:
                hits, bytes_hit = replay_in_c(
                    cache, a.requests, len(keys), from_request, unit == "bytes"
                )
            else:
                weights = sizes if unit == "bytes" else ones
                hits, bytes_hit = replay(cache, keys, weights, sizes, from_request)
            results.append(
                {
                    "policy": policy,
                    "unit": unit,
                    "capacity": capacity,
                    "requests": len(keys) - from_request,
                    "hits": hits,
                    "bytes": counted_bytes,
                    "bytes_hit": bytes_hit,
                    "seconds": time.perf_counter() - started,
                }
            )
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
