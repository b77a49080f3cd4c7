//! Automated analysis: compare a candidate arm's counters with the baseline's
//! and decide to promote, hold or roll back. Pure: the caller collects the
//! counters (with [`ArmStats::record`]) and passes them in.

use std::fmt;
use std::time::Duration;

/// Sub-buckets per power of two in [`LatencyHistogram`]: 8, so each bucket
/// spans at most 12.5% of its lower edge.
const SUB: u32 = 8;
/// Powers of two covered: latencies up to 2^40 µs (about 12 days).
const OCTAVES: u32 = 40;
const LEN: usize = (OCTAVES * SUB) as usize;

/// A log-linear latency histogram: counters, so two can be compared and
/// merged exactly. Quantiles are reported as the upper edge of their bucket,
/// at most 12.5% above the true value.
///
/// Sparse: only the buckets that were hit are stored, as sorted
/// `(bucket, count)` pairs, so a histogram per key costs a few dozen bytes
/// for the handful of buckets real latencies fall in.
#[derive(Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LatencyHistogram {
    counts: Vec<(u16, u64)>,
    total: u64,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("total", &self.total)
            .field("p95", &self.quantile(0.95))
            .finish()
    }
}

fn index(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let msb = 63 - us.leading_zeros();
    let idx = if msb < 3 {
        // Below 8 µs: one bucket per microsecond.
        us as u32
    } else {
        let sub = ((us >> (msb - 3)) & u64::from(SUB - 1)) as u32;
        (msb - 2) * SUB + sub
    };
    (idx as usize).min(LEN - 1)
}

/// The exclusive upper edge of bucket `idx`, in µs.
fn upper_edge(idx: usize) -> u64 {
    let idx = idx as u32;
    if idx < SUB {
        return u64::from(idx) + 1;
    }
    let msb = idx / SUB + 2;
    let sub = u64::from(idx % SUB);
    (8 + sub + 1) << (msb - 3)
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        self.add(index(latency) as u16, 1);
    }

    fn add(&mut self, bucket: u16, n: u64) {
        match self.counts.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => {
                if let Some((_, c)) = self.counts.get_mut(i) {
                    *c += n;
                }
            }
            Err(i) => self.counts.insert(i, (bucket, n)),
        }
        self.total += n;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for &(bucket, n) in &other.counts {
            self.add(bucket, n);
        }
    }

    /// Latencies counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (e.g. 0.95), as its bucket's upper edge; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(bucket, c) in &self.counts {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper_edge(usize::from(bucket))));
            }
        }
        None
    }
}

/// What one arm did over the analysis window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ArmStats {
    /// Requests answered (successes and errors).
    pub requests: u64,
    /// Of those, how many failed (server errors, timeouts: what the caller counts as errors).
    pub errors: u64,
    /// Total cost in micro-dollars.
    pub cost_micros: u64,
    /// Latencies of successful requests.
    pub latency: LatencyHistogram,
}

impl ArmStats {
    /// Counts one request.
    pub fn record(&mut self, ok: bool, latency: Duration, cost_micros: u64) {
        self.requests += 1;
        if ok {
            self.latency.record(latency);
        } else {
            self.errors += 1;
        }
        self.cost_micros = self.cost_micros.saturating_add(cost_micros);
    }

    /// The error rate in basis points (0 with no requests).
    pub fn error_rate_bp(&self) -> u64 {
        (self.errors * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }
}

/// The thresholds a candidate must stay within.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Gates {
    /// Requests each arm needs before any verdict but Hold. Default 100.
    pub min_requests: u64,
    /// How far the candidate's error rate may exceed the baseline's, in basis
    /// points. Default 100 (one percentage point).
    pub max_error_rate_increase_bp: u64,
    /// Candidate p95 latency over baseline p95, in per mille. Default 1200 (1.2×).
    pub max_p95_ratio_permille: u64,
    /// Candidate cost per request over baseline's, in per mille; `None` to not judge cost.
    pub max_cost_ratio_permille: Option<u64>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            min_requests: 100,
            max_error_rate_increase_bp: 100,
            max_p95_ratio_permille: 1200,
            max_cost_ratio_permille: None,
        }
    }
}

/// Why a candidate failed a gate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "gate", rename_all = "snake_case"))]
pub enum GateFailure {
    /// The error rate rose too much.
    ErrorRate {
        /// Baseline error rate, basis points.
        baseline_bp: u64,
        /// Candidate error rate, basis points.
        candidate_bp: u64,
        /// The allowed increase, basis points.
        max_increase_bp: u64,
    },
    /// The p95 latency rose too much.
    Latency {
        /// Baseline p95.
        baseline_p95: Duration,
        /// Candidate p95.
        candidate_p95: Duration,
        /// The allowed ratio, per mille.
        max_ratio_permille: u64,
    },
    /// The cost per request rose too much.
    Cost {
        /// Baseline cost per request, micro-dollars.
        baseline_per_request_micros: u64,
        /// Candidate cost per request, micro-dollars.
        candidate_per_request_micros: u64,
        /// The allowed ratio, per mille.
        max_ratio_permille: u64,
    },
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |bp: u64| format!("{}.{:02}%", bp / 100, bp % 100);
        match self {
            GateFailure::ErrorRate {
                baseline_bp,
                candidate_bp,
                max_increase_bp,
            } => write!(
                f,
                "error rate {} vs baseline {} (at most +{} allowed)",
                pct(*candidate_bp),
                pct(*baseline_bp),
                pct(*max_increase_bp)
            ),
            GateFailure::Latency {
                baseline_p95,
                candidate_p95,
                max_ratio_permille,
            } => write!(
                f,
                "p95 latency {candidate_p95:?} vs baseline {baseline_p95:?} (at most {}.{:03}x allowed)",
                max_ratio_permille / 1000,
                max_ratio_permille % 1000
            ),
            GateFailure::Cost {
                baseline_per_request_micros,
                candidate_per_request_micros,
                max_ratio_permille,
            } => write!(
                f,
                "cost per request {candidate_per_request_micros} µ$ vs baseline {baseline_per_request_micros} µ$ (at most {}.{:03}x allowed)",
                max_ratio_permille / 1000,
                max_ratio_permille % 1000
            ),
        }
    }
}

/// The outcome of an analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "verdict", rename_all = "snake_case"))]
pub enum Verdict {
    /// Every gate passed with enough data: the candidate may take the next step.
    Promote,
    /// Not enough data yet.
    Hold {
        /// Requests the baseline had.
        baseline_requests: u64,
        /// Requests the candidate had.
        candidate_requests: u64,
        /// Requests each needs.
        needed: u64,
    },
    /// A gate failed: roll back.
    Rollback {
        /// The gate that failed (the first, in the order error rate, latency, cost).
        reason: GateFailure,
    },
}

/// Compares the candidate with the baseline. Pure and deterministic.
///
/// ```
/// use std::time::Duration;
/// use canary::{judge, ArmStats, Gates, Verdict};
///
/// let (mut baseline, mut candidate) = (ArmStats::default(), ArmStats::default());
/// for i in 0..200 {
///     baseline.record(i % 50 != 0, Duration::from_millis(800), 10);
///     candidate.record(i % 10 != 0, Duration::from_millis(820), 10);
/// }
/// // 10% errors against 2%: more than one point worse.
/// assert!(matches!(judge(&baseline, &candidate, &Gates::default()), Verdict::Rollback { .. }));
/// ```
pub fn judge(baseline: &ArmStats, candidate: &ArmStats, gates: &Gates) -> Verdict {
    if baseline.requests < gates.min_requests || candidate.requests < gates.min_requests {
        return Verdict::Hold {
            baseline_requests: baseline.requests,
            candidate_requests: candidate.requests,
            needed: gates.min_requests,
        };
    }
    let (base_err, cand_err) = (baseline.error_rate_bp(), candidate.error_rate_bp());
    if cand_err > base_err + gates.max_error_rate_increase_bp {
        return Verdict::Rollback {
            reason: GateFailure::ErrorRate {
                baseline_bp: base_err,
                candidate_bp: cand_err,
                max_increase_bp: gates.max_error_rate_increase_bp,
            },
        };
    }
    if let (Some(b), Some(c)) = (
        baseline.latency.quantile(0.95),
        candidate.latency.quantile(0.95),
    ) && c.as_micros() * 1000 > b.as_micros() * u128::from(gates.max_p95_ratio_permille)
    {
        return Verdict::Rollback {
            reason: GateFailure::Latency {
                baseline_p95: b,
                candidate_p95: c,
                max_ratio_permille: gates.max_p95_ratio_permille,
            },
        };
    }
    if let Some(max) = gates.max_cost_ratio_permille {
        // candidate_cost / candidate_requests > max/1000 × baseline_cost / baseline_requests
        let lhs = u128::from(candidate.cost_micros) * 1000 * u128::from(baseline.requests);
        let rhs =
            u128::from(baseline.cost_micros) * u128::from(max) * u128::from(candidate.requests);
        if lhs > rhs {
            return Verdict::Rollback {
                reason: GateFailure::Cost {
                    baseline_per_request_micros: baseline.cost_micros / baseline.requests.max(1),
                    candidate_per_request_micros: candidate.cost_micros / candidate.requests.max(1),
                    max_ratio_permille: max,
                },
            };
        }
    }
    Verdict::Promote
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_within_an_eighth_of_the_value() {
        for us in [
            1u64,
            7,
            8,
            9,
            15,
            16,
            100,
            999,
            1000,
            12_345,
            800_000,
            3_600_000_000,
        ] {
            let edge = upper_edge(index(Duration::from_micros(us)));
            assert!(edge > us, "{us} -> {edge}");
            assert!(edge * 8 <= us * 9 + 8, "{us} -> {edge}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.95), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p95 = h.quantile(0.95).unwrap();
        assert!(
            p95 >= Duration::from_millis(95) && p95 <= Duration::from_millis(107),
            "{p95:?}"
        );
        let mut g = LatencyHistogram::default();
        g.merge(&h);
        assert_eq!(g, h);
        assert_eq!(g.len(), 100);
        // Sparse: 100 distinct latencies from 1 to 100 ms fall in far fewer buckets.
        assert!(h.counts.len() < 40, "{}", h.counts.len());
        assert!(
            h.counts.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted by bucket"
        );
    }
}
