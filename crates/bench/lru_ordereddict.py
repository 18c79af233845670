#!/usr/bin/env python3
"""The baseline `cargo xtask bench trace` holds ferry's simulator against: a straightforward LRU on
Python's `collections.OrderedDict`, replaying the same requests at each object capacity, printing
the hits per capacity as JSON (in the field names of `ferry trace simulate --json`) with the
seconds each replay took.

The input is a trace in JSON lines, as `ferry trace gen` and `ferry serve --access-log` write it
(the same file `ferry trace simulate` reads: the cache requests are the GETs of blobs and
manifests, an object is its URI without the query); or what `ferry trace simulate
--export-requests FILE` writes (a `key,size` header, then one line a request); or the JSON lines a
`--plugin` reads (their `key`); from a file or standard input (`-`), so it also runs as a plugin:

    lru_ordereddict.py trace.jsonl --objects 100,1000,10000 [--warmup 0.2]
    ferry trace simulate --export-requests requests.csv TRACE
    lru_ordereddict.py requests.csv --objects 100,1000,10000
    ferry trace simulate --plugin 'python3 crates/bench/lru_ordereddict.py - --objects 100' TRACE

The requests are read into memory first, so the seconds are the replay's alone. libCacheSim's
side of the same sweep is crates/cli/tests/it/libcachesim_replay.py (`--c-loop` for its C loop).
"""

import argparse
import json
import sys
import time
from collections import OrderedDict


def is_cache_request(method, uri):
    """A GET of `v2/<repo>/blobs/<digest>` or `v2/<repo>/manifests/<reference>`."""
    if method.upper() != "GET":
        return False
    parts = uri.strip("/").split("/")
    return (
        len(parts) >= 4
        and parts[0] == "v2"
        and parts[-2] in ("blobs", "manifests")
        and parts[-1] != "uploads"
    )


def read_keys(path):
    """The requests' object keys, in order."""
    keys = []
    ids = {}
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for line in stream:
            line = line.strip()
            if not line or line == "key,size":
                continue
            if line.startswith("{"):
                record = json.loads(line)
                if "key" in record:
                    keys.append(int(record["key"]))
                    continue
                uri = record.get("http.request.uri", "").partition("?")[0]
                if is_cache_request(record.get("http.request.method", ""), uri):
                    keys.append(ids.setdefault(uri, len(ids)))
            else:
                keys.append(int(line.partition(",")[0]))
    return keys


def lru_hits(keys, capacity, from_request):
    """Hits of an LRU cache of `capacity` objects, counted from request `from_request` on."""
    cache = OrderedDict()
    hits = 0
    for i, key in enumerate(keys):
        if key in cache:
            cache.move_to_end(key)
            if i >= from_request:
                hits += 1
        elif capacity > 0:
            if len(cache) >= capacity:
                cache.popitem(last=False)
            cache[key] = None
    return hits


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "requests", help="a JSON-lines trace, key,size lines or plugin JSON lines; - for stdin"
    )
    p.add_argument("--objects", required=True, help="capacities in objects, comma-separated")
    p.add_argument("--warmup", type=float, default=0.0, help="fraction of requests not counted")
    a = p.parse_args()
    capacities = [int(c) for c in a.objects.split(",") if c.strip()]
    keys = read_keys(a.requests)
    # The first request counted, as ferry computes it.
    from_request = int(a.warmup * len(keys))
    results = []
    for capacity in capacities:
        started = time.perf_counter()
        hits = lru_hits(keys, capacity, from_request)
        results.append(
            {
                "policy": "lru",
                "unit": "objects",
                "capacity": capacity,
                "requests": len(keys) - from_request,
                "hits": hits,
                "seconds": time.perf_counter() - started,
            }
        )
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
