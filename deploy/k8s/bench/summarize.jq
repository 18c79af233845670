# The pullers' JSON lines (results.jsonl, README.md) summarized as `ferry-bench rollout` summarizes
# its one-machine run: one entry per case, each with baseline and p2p, each with v1 and v2, the
# same fields as the `runs` of rollout-*.json (crates/bench/src/rollout.rs, `stats`).
#   jq -s -f deploy/k8s/bench/summarize.jq results.jsonl > rollout-k8s.json
# A line collected twice (same pod, case, scenario and rollout) counts once. Not in the lines:
# upstream_bytes and upstream_x_image (the upstream's side; README.md, "Upstream bytes").

# avg, p50, p95 (nearest rank over the sorted durations, as rollout.rs) and each node's duration,
# in the order the pulls started (v2: the rollout's order).
def stats:
  (map(.duration_ms) | sort) as $ms
  | ($ms | length) as $n
  | {
      avg_ms: (($ms | add) / $n),
      p50_ms: $ms[((($n - 1) * 0.5) | round)],
      p95_ms: $ms[((($n - 1) * 0.95) | round)],
      per_node_ms: (sort_by(.started_unix, .node) | map(.duration_ms)),
      nodes: (sort_by(.started_unix, .node) | map(.node)),
      errors: (map(.errors) | add)
    };

def by_key(f): group_by(f) | map({key: (.[0] | f), value: .}) | from_entries;

unique_by([.pod, .case, .scenario, .rollout])
| group_by(.case)
| {
    benchmark: "rollout",
    source: "kubernetes (deploy/k8s/bench)",
    runs: map(
      (.[0].case | capture("^(?<mb>[0-9]+)mb-(?<layers>[0-9]+)l$") // {}) as $c
      | {
          case: .[0].case,
          size_mb: ($c.mb // null | if . then tonumber else null end),
          layers: ($c.layers // null | if . then tonumber else null end),
          image_bytes: (map(.bytes) | max)
        }
        + (by_key(.scenario) | map_values(by_key(.rollout) | map_values(stats)))
    )
  }
