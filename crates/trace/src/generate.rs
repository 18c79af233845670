//! `ferry trace gen`: synthetic traces shaped like the IBM sample, at any length, for benchmarks
//! and tests: blob GETs whose popularity follows a Zipf law and whose sizes follow the sample's
//! distinct-blob sizes. Deterministic: the same options give the same bytes.

use std::io::Write;

use ferry_oci::timestamp::format_timestamp;

/// Sizes of the sample's distinct blobs at every 5th percentile (0, 5, …, 100), in bytes:
/// `ferry trace analyze`'s figures on `testdata/traces/dal09_blobs_sample.csv`.
const SAMPLE_SIZE_PERCENTILES: [u64; 21] = [
    32, 141, 214, 341, 575, 975, 1470, 3785, 6782, 10273, 14724, 37716, 100051, 858032, 1927800,
    5322006, 11032695, 22543992, 31113723, 54406680, 690363128,
];

/// The first timestamp of a generated trace: the sample's day.
const START_US: i64 = 1_497_916_800_000_000;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// Requests.
    pub requests: u64,
    /// Distinct blobs.
    pub objects: u64,
    /// Zipf exponent of popularity (0: uniform; around 1: a few objects take most requests).
    pub zipf: f64,
    /// Blobs per repository.
    pub blobs_per_repository: u64,
    /// Distinct clients.
    pub clients: u64,
    /// Mean requests per second (exponential inter-arrival times).
    pub rate: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Share of the requests that are manifest GETs (`v2/<repo>/manifests/latest` of the drawn
    /// blob's repository, as a pull starts): 0 gives blob GETs only, as the sample has.
    pub manifests: f64,
}

impl Default for GenOptions {
    fn default() -> GenOptions {
        GenOptions {
            requests: 100_000,
            objects: 10_000,
            zipf: 0.9,
            blobs_per_repository: 10,
            clients: 100,
            rate: 100.0,
            seed: 1,
            manifests: 0.0,
        }
    }
}

/// Most distinct objects, and most clients: each object takes 24 bytes (its popularity, repository,
/// name and size), so the largest trace's tables stay under a GB.
pub const MAX_OBJECTS: u64 = 20_000_000;

/// Why options cannot generate a trace.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// An option is out of range.
    #[error("{0}")]
    Option(String),
    /// Writing failed (a reader that went away is `BrokenPipe`).
    #[error("writing the trace: {0}")]
    Write(#[from] std::io::Error),
}

/// splitmix64: small, fast, and the same on every platform.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A size drawn from the sample's distribution: a percentile picked uniformly, interpolated
/// log-linearly between the two tabulated ones around it.
fn sample_size(u: f64) -> u64 {
    let x = u * 20.0;
    let i = (x.floor() as usize).min(19);
    let f = x - i as f64;
    let (lo, hi) = (
        (SAMPLE_SIZE_PERCENTILES[i] as f64).ln(),
        (SAMPLE_SIZE_PERCENTILES[i + 1] as f64).ln(),
    );
    (lo + (hi - lo) * f).exp().round() as u64
}

/// 8 hex characters, as the trace anonymizes names.
fn hex8(rng: &mut Rng) -> String {
    format!("{:08x}", rng.next() as u32)
}

/// Writes a trace of `o` as JSON lines in the original records' key names.
pub fn generate(o: &GenOptions, out: &mut impl Write) -> Result<(), GenError> {
    let bad = |m: String| Err(GenError::Option(m));
    if o.objects == 0 || o.objects > MAX_OBJECTS {
        return bad(format!("objects must be 1 to {MAX_OBJECTS}"));
    }
    if !(o.zipf.is_finite() && (0.0..=4.0).contains(&o.zipf)) {
        return bad("the Zipf exponent must be 0 to 4".to_owned());
    }
    if !(o.manifests.is_finite() && (0.0..1.0).contains(&o.manifests)) {
        return bad("the share of manifest GETs must be at least 0 and below 1".to_owned());
    }
    if !(o.rate.is_finite() && o.rate > 0.0) {
        return bad("the rate must be above 0 requests/s".to_owned());
    }
    if o.clients == 0 || o.clients > MAX_OBJECTS || o.blobs_per_repository == 0 {
        return bad(format!(
            "clients must be 1 to {MAX_OBJECTS}, blobs per repository at least 1"
        ));
    }
    let mut rng = Rng(o.seed);
    // Popularity: object i (0-based rank) has weight 1 / (i + 1)^zipf.
    let mut cdf = Vec::with_capacity(o.objects as usize);
    let mut total = 0.0;
    for i in 0..o.objects {
        total += 1.0 / ((i + 1) as f64).powf(o.zipf);
        cdf.push(total);
    }
    // Each object: its repository, name and size, drawn once. Ranks are shuffled over
    // repositories so popular blobs are spread out, as in the traces.
    let repos: Vec<String> = (0..o.objects.div_ceil(o.blobs_per_repository))
        .map(|_| format!("{}/{}", hex8(&mut rng), hex8(&mut rng)))
        .collect();
    // Names are kept as their 32 bits and spelled when written.
    let objects: Vec<(u32, u32, u64)> = (0..o.objects)
        .map(|_| {
            let repo = (rng.next() % repos.len() as u64) as u32;
            (repo, rng.next() as u32, sample_size(rng.unit()))
        })
        .collect();
    let clients: Vec<String> = (0..o.clients).map(|_| hex8(&mut rng)).collect();
    let mut now = START_US;
    for _ in 0..o.requests {
        let u = rng.unit() * total;
        let rank = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
        let (repo, name, size) = &objects[rank];
        let client = &clients[(rng.next() % clients.len() as u64) as usize];
        // Drawn only when asked for, so blob-only traces stay what they were.
        let manifest = o.manifests > 0.0 && rng.unit() < o.manifests;
        let (uri, size) = if manifest {
            // An image manifest of a few kB, the same for every GET of the repository's tag.
            let repo_name = &repos[*repo as usize];
            (
                format!("v2/{repo_name}/manifests/latest"),
                1000 + u64::from(*repo).wrapping_mul(2_654_435_761) % 4000,
            )
        } else {
            (
                format!("v2/{}/blobs/{name:08x}", repos[*repo as usize]),
                *size,
            )
        };
        let record = serde_json::json!({
            "http.request.method": "GET",
            "http.request.uri": uri,
            "http.request.remoteaddr": client,
            "http.response.status": 200,
            "http.response.written": size,
            "timestamp": format_timestamp(now),
        });
        serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        // Exponential inter-arrival times at the mean rate, in whole milliseconds (the traces'
        // resolution).
        let gap_s = -(1.0 - rng.unit()).ln() / o.rate;
        now += ((gap_s * 1000.0).round() as i64) * 1000;
    }
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_sample_percentiles() {
        assert_eq!(sample_size(0.0), 32);
        assert_eq!(sample_size(0.5), 14724);
        assert!(sample_size(1.0 - 1e-12) > 690_000_000);
        let mut sizes: Vec<u64> = (0..10_000)
            .map(|i| sample_size(i as f64 / 10_000.0))
            .collect();
        sizes.sort_unstable();
        let under = |limit| sizes.iter().filter(|&&s| s < limit).count() as f64 / 10_000.0;
        // The sample: 65.7% under 1 MB, 79.5% under 10 MB.
        assert!(
            (under(1_000_000) - 0.657).abs() < 0.02,
            "{}",
            under(1_000_000)
        );
        assert!(
            (under(10_000_000) - 0.795).abs() < 0.02,
            "{}",
            under(10_000_000)
        );
    }

    #[test]
    fn the_same_options_give_the_same_trace_and_another_seed_another() {
        let o = GenOptions {
            requests: 500,
            objects: 50,
            ..GenOptions::default()
        };
        let run = |o: &GenOptions| {
            let mut out = Vec::new();
            generate(o, &mut out).unwrap();
            out
        };
        assert_eq!(run(&o), run(&o));
        assert_ne!(
            run(&o),
            run(&GenOptions {
                seed: 2,
                ..o.clone()
            })
        );
        assert!(generate(&GenOptions { objects: 0, ..o }, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_manifest_share_adds_manifest_gets_of_a_stable_size_and_zero_changes_nothing() {
        let o = GenOptions {
            requests: 4000,
            objects: 200,
            ..GenOptions::default()
        };
        let text = |o: &GenOptions| {
            let mut out = Vec::new();
            generate(o, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let with = text(&GenOptions {
            manifests: 0.2,
            ..o.clone()
        });
        let mut sizes: std::collections::HashMap<String, u64> = Default::default();
        let mut manifests = 0;
        for line in with.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let uri = v["http.request.uri"].as_str().unwrap().to_owned();
            if uri.ends_with("/manifests/latest") {
                manifests += 1;
                let size = v["http.response.written"].as_u64().unwrap();
                assert_eq!(
                    *sizes.entry(uri).or_insert(size),
                    size,
                    "one size a manifest"
                );
            }
        }
        // 20% of 4000, within five standard deviations.
        assert!((800i64 - manifests).abs() < 5 * 25, "{manifests}");
        assert!(text(&o).lines().all(|l| l.contains("/blobs/")));
        assert!(
            generate(
                &GenOptions {
                    manifests: 1.0,
                    ..o
                },
                &mut Vec::new()
            )
            .is_err()
        );
    }
}
