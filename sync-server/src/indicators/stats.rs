//! The Wilson score interval of a proportion (Wilson 1927; recommended over the Wald interval
//! by Brown, Cai and DasGupta 2001 because it keeps close to 95% coverage for small samples
//! and proportions near 0 or 1, and never leaves [0, 1]).

use serde::Serialize;

/// The 0.975 quantile of the standard normal distribution (a two-sided 95% interval).
pub const Z95: f64 = 1.959_963_984_540_054;

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The 95% Wilson interval of `successes` out of `trials`; `None` for no trials.
///
/// With p̂ = x/n and z = 1.96:
/// centre = (p̂ + z²/2n) / (1 + z²/n),
/// half-width = z·√(p̂(1−p̂)/n + z²/4n²) / (1 + z²/n).
/// `successes` above `trials` is taken as `trials`.
pub fn wilson(successes: u64, trials: u64) -> Option<Interval> {
    wilson_z(successes, trials, Z95)
}

/// The Wilson interval for any z.
pub fn wilson_z(successes: u64, trials: u64, z: f64) -> Option<Interval> {
    if trials == 0 || !z.is_finite() {
        return None;
    }
    let n = trials as f64;
    let p = successes.min(trials) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).max(0.0).sqrt() / denom;
    // Mathematically low ≤ p̂ ≤ high within [0, 1]; the clamps only absorb rounding.
    let low = (centre - half).clamp(0.0, 1.0).min(p);
    let high = (centre + half).clamp(0.0, 1.0).max(p);
    Some(Interval { low, high })
}
