//! The canary judge against SciPy (fixtures made by `fixtures/gen_mannwhitney.py`),
//! against cases computed by hand, and against invariants (proptest).

use casebook_control::deploy::judge::{
    self, Classification, Direction, JudgeConfig, Measure, MetricConfig, Verdict, classify, stats,
};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    confidence: f64,
    outlier_factor: f64,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    canary: Vec<f64>,
    baseline: Vec<f64>,
    u: f64,
    p_value: f64,
    hodges_lehmann: f64,
    ci_low: f64,
    ci_high: f64,
    canary_without_outliers: Vec<f64>,
    baseline_without_outliers: Vec<f64>,
}

fn fixtures() -> Fixtures {
    let text = include_str!("fixtures/mannwhitney.json");
    serde_json::from_str(text).expect("the fixture file parses")
}

fn close(got: f64, want: f64, abs: f64, rel: f64) -> bool {
    (got - want).abs() <= abs + rel * want.abs()
}

#[test]
fn u_and_p_value_match_scipy() {
    let f = fixtures();
    assert!(f.cases.len() >= 10);
    for c in &f.cases {
        let t = stats::mann_whitney_u(&c.canary, &c.baseline);
        assert_eq!(t.u, c.u, "{}: U", c.name);
        assert!(
            close(t.p_value, c.p_value, 1e-15, 1e-9),
            "{}: p {} vs scipy {}",
            c.name,
            t.p_value,
            c.p_value
        );
    }
}

#[test]
fn hodges_lehmann_matches_numpy() {
    for c in &fixtures().cases {
        let hl = stats::hodges_lehmann(&c.canary, &c.baseline);
        assert!(
            close(hl, c.hodges_lehmann, 1e-12, 1e-12),
            "{}: {hl} vs {}",
            c.name,
            c.hodges_lehmann
        );
    }
}

/// The reference finds each bound by Brent's method on the step function, to
/// within its tolerance of the jump; the judge lands on the jump exactly.
#[test]
fn the_confidence_interval_matches_the_brent_inversion() {
    let f = fixtures();
    for c in &f.cases {
        let (low, high) = stats::confidence_interval(&c.canary, &c.baseline, f.confidence)
            .expect("every fixture has variance");
        let scale = c.ci_low.abs().max(c.ci_high.abs()).max(1e-3);
        assert!(
            close(low, c.ci_low, 1e-9 * scale, 1e-9),
            "{}: low {low} vs {}",
            c.name,
            c.ci_low
        );
        assert!(
            close(high, c.ci_high, 1e-9 * scale, 1e-9),
            "{}: high {high} vs {}",
            c.name,
            c.ci_high
        );
        assert!(
            low <= c.hodges_lehmann && c.hodges_lehmann <= high,
            "{}",
            c.name
        );
    }
}

#[test]
fn outlier_removal_matches_numpy_percentiles() {
    let f = fixtures();
    for c in &f.cases {
        assert_eq!(
            judge::classify::remove_outliers(&c.canary, f.outlier_factor),
            c.canary_without_outliers,
            "{}: canary",
            c.name
        );
        assert_eq!(
            judge::classify::remove_outliers(&c.baseline, f.outlier_factor),
            c.baseline_without_outliers,
            "{}: baseline",
            c.name
        );
    }
    // The case built with outliers loses them.
    let c = f
        .cases
        .iter()
        .find(|c| c.name == "normal-with-outliers")
        .unwrap();
    assert!(!c.canary_without_outliers.contains(&900.0));
    assert!(!c.baseline_without_outliers.contains(&5000.0));
}

/// By hand, x = {5,6,7,8} against y = {1,2,3}: the 12 differences are
/// 2,3,3,4,4,4,5,5,5,6,6,7. At 98 % z = 2.326; sigma = sqrt(4·3·8/12) = sqrt 8.
/// dz(mu) - 0.5 must stay above 2.326·sqrt 8 = 6.58 for the lower bound: dz is
/// U(mu) - 6, so U(mu) > 13.08 — impossible (U ≤ 12), so the lower bound is the
/// smallest difference, 2; symmetrically the upper bound is the largest, 7.
#[test]
fn a_small_interval_by_hand() {
    let (low, high) =
        stats::confidence_interval(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0], 0.98).unwrap();
    assert_eq!((low, high), (2.0, 7.0));
    // At 50 % (z = 0.674, 0.674·sqrt 8 = 1.907), U(mu) counting the differences
    // above mu: the lower bound needs U - 6.5 > 1.907, U ≥ 9, which holds just
    // below 4 and not just above it: 4. The upper needs U - 5.5 < -1.907, U ≤ 3,
    // first true right of 5 (above it only 6, 6, 7): 5.
    let (low, high) =
        stats::confidence_interval(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0], 0.5).unwrap();
    assert_eq!((low, high), (4.0, 5.0));
}

fn latency() -> MetricConfig {
    MetricConfig::new(
        "latency",
        Measure::LatencyMean,
        "latency",
        Direction::Increase,
    )
}

fn series(base: f64, n: usize, wobble: f64) -> Vec<f64> {
    // Deterministic spread: a sawtooth of ±wobble.
    (0..n)
        .map(|i| base + wobble * (((i * 7) % 11) as f64 / 5.0 - 1.0))
        .collect()
}

#[test]
fn a_slower_canary_is_high_and_an_equal_one_passes() {
    let cfg = JudgeConfig::default();
    let baseline = series(0.020, 30, 0.002);
    let slow = series(0.170, 30, 0.002);
    let r = classify(&latency(), &cfg, &slow, &baseline);
    assert_eq!(r.classification, Classification::High);
    let cmp = r.comparison.unwrap();
    assert!((cmp.shift - 0.150).abs() < 1e-9);
    assert!(cmp.mean_ratio.unwrap() > 8.0);
    let same = classify(&latency(), &cfg, &series(0.020, 30, 0.002), &baseline);
    assert_eq!(same.classification, Classification::Pass);
    // Faster is no failure for an increase-is-bad metric, but is Low for `either`.
    let fast = series(0.005, 30, 0.001);
    assert_eq!(
        classify(&latency(), &cfg, &fast, &baseline).classification,
        Classification::Pass
    );
    let mut either = latency();
    either.direction = Direction::Either;
    assert_eq!(
        classify(&either, &cfg, &fast, &baseline).classification,
        Classification::Low
    );
}

#[test]
fn the_allowed_increase_tolerates_a_small_significant_rise() {
    let cfg = JudgeConfig::default();
    let baseline = series(100.0, 40, 1.0);
    let canary = series(105.0, 40, 1.0); // significant, mean ratio 1.05
    assert_eq!(
        classify(&latency(), &cfg, &canary, &baseline).classification,
        Classification::High
    );
    let mut lenient = latency();
    lenient.effect_size.allowed_increase = 1.1;
    assert_eq!(
        classify(&lenient, &cfg, &canary, &baseline).classification,
        Classification::Pass
    );
}

#[test]
fn missing_data_is_nodata_or_a_failure_when_required() {
    let cfg = JudgeConfig::default();
    let baseline = series(1.0, 10, 0.1);
    let nans = vec![f64::NAN; 10];
    let r = classify(&latency(), &cfg, &nans, &baseline);
    assert_eq!(r.classification, Classification::Nodata);
    assert_eq!(r.canary.removed, 10);
    let mut required = latency();
    required.must_have_data = true;
    assert_eq!(
        classify(&required, &cfg, &[], &baseline).classification,
        Classification::NodataFailMetric
    );
    let mut critical = latency();
    critical.critical = true;
    let r = classify(&critical, &cfg, &[], &baseline);
    assert!(r.critical && r.classification == Classification::Nodata);
}

#[test]
fn constant_but_different_samples_are_judged_without_noise() {
    let cfg = JudgeConfig::default();
    let r = classify(&latency(), &cfg, &[0.05; 20], &[0.0; 20]);
    // The mean ratio cannot be computed (a zero mean): the effect rule is skipped.
    assert_eq!(r.classification, Classification::High);
    let c = r.comparison.unwrap();
    assert_eq!((c.shift, c.mean_ratio), (0.05, None));
    let r = classify(&latency(), &cfg, &[0.0; 20], &[0.0; 20]);
    assert_eq!(r.classification, Classification::Pass);
}

/// Scores by hand: latency group 1 of 2 passing (50), errors group 1 of 1 (100),
/// weights 50/50 → 75.00: marginal. A critical failure → 0, whatever else passed.
#[test]
fn group_scores_are_weighted_and_a_critical_failure_zeroes() {
    let cfg = JudgeConfig::default();
    let base = series(0.02, 30, 0.002);
    let slow = series(0.2, 30, 0.002);
    let ok_errors = vec![0.0; 30];
    let verdict = judge::judge(&cfg, |m| match m.measure {
        Measure::LatencyMean => (slow.clone(), base.clone()),
        Measure::LatencyP99 => (base.clone(), base.clone()),
        _ => (ok_errors.clone(), ok_errors.clone()),
    });
    assert_eq!(verdict.score, 75.0);
    assert_eq!(verdict.verdict, Verdict::Marginal);
    let latency = verdict.groups.iter().find(|g| g.name == "latency").unwrap();
    assert_eq!((latency.score, latency.weight), (50.0, 50.0));

    let errors: Vec<f64> = (0..30)
        .map(|i| if i % 4 == 0 { 0.0 } else { 0.05 })
        .collect();
    let verdict = judge::judge(&cfg, |m| match m.measure {
        Measure::ErrorRate => (errors.clone(), ok_errors.clone()),
        _ => (base.clone(), base.clone()),
    });
    assert_eq!(verdict.score, 0.0);
    assert_eq!(verdict.verdict, Verdict::Fail);
    assert!(verdict.reason.unwrap().contains("critical"));

    let all_good = judge::judge(&cfg, |m| match m.measure {
        Measure::ErrorRate => (ok_errors.clone(), ok_errors.clone()),
        _ => (base.clone(), base.clone()),
    });
    assert_eq!((all_good.score, all_good.verdict), (100.0, Verdict::Pass));
}

#[test]
fn half_the_metrics_without_data_fail_the_canary() {
    let mut cfg = JudgeConfig::default();
    for m in &mut cfg.metrics {
        m.must_have_data = false;
        m.critical = false;
    }
    let base = series(0.02, 30, 0.002);
    let verdict = judge::judge(&cfg, |m| match m.measure {
        Measure::LatencyMean => (base.clone(), base.clone()),
        _ => (Vec::new(), base.clone()),
    });
    assert_eq!(verdict.score, 0.0);
    assert!(verdict.reason.unwrap().contains("no data"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Swapping the samples mirrors everything: U ↔ n1·n2 − U, the same p-value,
    /// the shift and its interval negated.
    #[test]
    fn swapping_the_samples_mirrors_the_test(
        x in prop::collection::vec(0u32..50, 2..25),
        y in prop::collection::vec(0u32..50, 2..25),
    ) {
        let x: Vec<f64> = x.into_iter().map(f64::from).collect();
        let y: Vec<f64> = y.into_iter().map(f64::from).collect();
        let a = stats::mann_whitney_u(&x, &y);
        let b = stats::mann_whitney_u(&y, &x);
        prop_assert_eq!(a.u + b.u, (x.len() * y.len()) as f64);
        prop_assert!((a.p_value - b.p_value).abs() < 1e-12);
        prop_assert_eq!(stats::hodges_lehmann(&x, &y), -stats::hodges_lehmann(&y, &x));
        if let (Some((l1, h1)), Some((l2, h2))) = (
            stats::confidence_interval(&x, &y, 0.98),
            stats::confidence_interval(&y, &x, 0.98),
        ) {
            prop_assert_eq!((l1, h1), (-h2, -l2));
        }
    }

    /// Shifting the canary by d shifts the estimate and the interval by d, and a
    /// large enough rise of a latency is classified High, never Low.
    #[test]
    fn a_shift_moves_the_estimate_by_as_much(
        y in prop::collection::vec(0u32..1000, 5..30),
        noise in prop::collection::vec(0u32..1000, 5..30),
        d in 1u32..5000,
    ) {
        let y: Vec<f64> = y.into_iter().map(|v| f64::from(v) / 1000.0).collect();
        let x: Vec<f64> = noise.into_iter().map(|v| f64::from(v) / 1000.0).collect();
        let d = f64::from(d) / 100.0;
        let shifted: Vec<f64> = x.iter().map(|v| v + d).collect();
        let hl = stats::hodges_lehmann(&x, &y);
        prop_assert!((stats::hodges_lehmann(&shifted, &y) - (hl + d)).abs() < 1e-9);
        if d > 2.0 {
            let r = classify(&latency(), &JudgeConfig::default(), &shifted, &y);
            prop_assert_eq!(r.classification, Classification::High);
        }
    }
}
