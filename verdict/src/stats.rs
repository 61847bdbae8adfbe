//! Robust statistics for memory series: Theil-Sen slopes, the Mann-Kendall trend test,
//! ordinary least squares and Pearson correlation. Small and dependency-free; inputs are
//! bucket floors (tens to hundreds of points), so the O(n^2) estimators are fine.

/// Median of `v` (reordered in place). `None` for an empty slice.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    // A selection, not a sort: the same order statistics in linear time (Theil-Sen takes the
    // median of n(n-1)/2 slopes: 258,840 for a 30-day window's 720 hourly floors).
    let m = v.len() / 2;
    let odd = v.len() % 2 == 1;
    let (below, mid, _) = v.select_nth_unstable_by(m, f64::total_cmp);
    let mid = *mid;
    if odd {
        return Some(mid);
    }
    let lower = below.iter().copied().max_by(f64::total_cmp).unwrap_or(mid);
    Some((lower + mid) / 2.0)
}

/// The smallest slope a trend test at `z_alpha` would find with power `z_power` (one-sided
/// normal quantiles) in `points`, whose noise is measured robustly around the line of slope
/// `slope`: `(z_alpha + z_power) * sigma / sqrt(sum((x - mean x)^2))`, the standard error of a
/// least-squares slope with `sigma = 1.4826 * MAD` of the residuals. Mann-Kendall's power is
/// within a few percent of the t-test's on normal noise, so this is its limit too. `None` with
/// fewer than three points or no spread in `x`.
pub fn detectable_slope(
    points: &[(f64, f64)],
    slope: f64,
    z_alpha: f64,
    z_power: f64,
) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let mut residuals: Vec<f64> = points.iter().map(|p| p.1 - slope * p.0).collect();
    let centre = median(&mut residuals)?;
    let mut spread: Vec<f64> = residuals.iter().map(|r| (r - centre).abs()).collect();
    let sigma = 1.4826 * median(&mut spread)?;
    Some((z_alpha + z_power) * sigma / sxx.sqrt())
}

/// Theil-Sen estimator: the median of the slopes between every pair of points with distinct
/// `x`. Robust to a third of the points being outliers. `None` with fewer than two distinct x.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dx = b.0 - a.0;
            if dx.abs() > f64::EPSILON {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    median(&mut slopes)
}

/// Mann-Kendall trend test statistic `z` for a series in time order (tie-corrected variance,
/// continuity correction). |z| > 2.58 is a trend at the 1% level. 0 for fewer than 3 points.
pub fn mann_kendall_z(series: &[f64]) -> f64 {
    let n = series.len();
    if n < 3 {
        return 0.0;
    }
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            let d = series[j] - series[i];
            if d > 0.0 {
                s += 1;
            } else if d < 0.0 {
                s -= 1;
            }
        }
    }
    // Tie correction: groups of equal values.
    let mut sorted: Vec<f64> = series.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && sorted[j + 1] == sorted[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            ties += t * (t - 1.0) * (2.0 * t + 5.0);
        }
        i = j + 1;
    }
    let nf = n as f64;
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    if var <= 0.0 {
        return 0.0;
    }
    let s = s as f64;
    if s > 0.0 {
        (s - 1.0) / var.sqrt()
    } else if s < 0.0 {
        (s + 1.0) / var.sqrt()
    } else {
        0.0
    }
}

/// Two-sided confidence that a trend with this `z` is real: 1 - p for the normal
/// distribution (0.99 at z = 2.58).
pub fn confidence(z: f64) -> f64 {
    1.0 - 2.0 * (1.0 - normal_cdf(z.abs()))
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// Abramowitz-Stegun 7.1.26 (error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    sign * y
}

/// Least squares `y = a + b x`: returns `(a, b)`, or `None` when x does not vary.
pub fn ols(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

/// Pearson correlation; `None` when either side does not vary.
pub fn pearson(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for p in points {
        sxx += (p.0 - mx) * (p.0 - mx);
        syy += (p.1 - my) * (p.1 - my);
        sxy += (p.0 - mx) * (p.1 - my);
    }
    if sxx <= f64::EPSILON || syy <= f64::EPSILON {
        return None;
    }
    Some(sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detectable_slope_grows_with_noise_and_shrinks_with_time() {
        // Alternating +-1 noise around a flat line: MAD 1, sigma 1.4826.
        let pts = |n: usize| -> Vec<(f64, f64)> {
            (0..n).map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { -1.0 })).collect()
        };
        let ten = detectable_slope(&pts(10), 0.0, 2.58, 1.645).unwrap();
        let sxx: f64 = (0..10).map(|i| (i as f64 - 4.5).powi(2)).sum();
        assert!((ten - 4.225 * 1.4826 / sxx.sqrt()).abs() < 1e-9, "{ten}");
        let twenty = detectable_slope(&pts(20), 0.0, 2.58, 1.645).unwrap();
        assert!(twenty < ten / 2.0, "twice the span, under half the limit: {twenty} vs {ten}");
        let noisier: Vec<(f64, f64)> = pts(10).into_iter().map(|(x, y)| (x, 3.0 * y)).collect();
        let loud = detectable_slope(&noisier, 0.0, 2.58, 1.645).unwrap();
        assert!((loud - 3.0 * ten).abs() < 1e-9);
        // The noise is measured around the slope given: a clean ramp has no noise.
        let ramp: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 5.0 * i as f64)).collect();
        assert_eq!(detectable_slope(&ramp, 5.0, 2.58, 1.645), Some(0.0));
        assert_eq!(detectable_slope(&ramp[..2], 5.0, 2.58, 1.645), None);
    }

    #[test]
    fn theil_sen_ignores_outliers() {
        let mut pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        pts[3].1 = 1000.0;
        pts[11].1 = -500.0;
        assert!((theil_sen(&pts).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(theil_sen(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn mann_kendall_detects_trends_and_not_noise() {
        let up: Vec<f64> = (0..30).map(|i| i as f64 + ((i * 7919) % 5) as f64).collect();
        assert!(mann_kendall_z(&up) > 2.58);
        let down: Vec<f64> = up.iter().rev().copied().collect();
        assert!(mann_kendall_z(&down) < -2.58);
        // A sawtooth with no trend.
        let flat: Vec<f64> = (0..30).map(|i| (i % 3) as f64).collect();
        assert!(mann_kendall_z(&flat).abs() < 1.0);
        assert_eq!(mann_kendall_z(&[5.0; 10]), 0.0);
    }

    #[test]
    fn confidence_matches_the_normal_table() {
        assert!((confidence(2.58) - 0.990).abs() < 1e-3);
        assert!((confidence(1.96) - 0.950).abs() < 1e-3);
        assert!(confidence(0.0).abs() < 1e-6);
    }

    #[test]
    fn ols_and_pearson() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 4.0)).collect();
        let (a, b) = ols(&pts).unwrap();
        assert!((a - 4.0).abs() < 1e-9 && (b - 3.0).abs() < 1e-9);
        assert!((pearson(&pts).unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(ols(&[(1.0, 2.0), (1.0, 3.0)]), None);
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 4.0]), Some(2.5));
    }
}
