use canary::bucket;

/// The 0.999 quantile of the chi-square distribution with 99 degrees of freedom.
const CHI2_99_P001: f64 = 148.230;

#[test]
fn a_million_subjects_spread_evenly_over_every_one_percent_slice() {
    let n = 1_000_000u32;
    let mut slices = [0u32; 100];
    for i in 0..n {
        let b = bucket("launch-1", &format!("user-{i}")).unwrap();
        slices[usize::from(b / 100)] += 1;
    }
    // Every 1% slice holds 1% ± 0.1 percentage point.
    for (i, &c) in slices.iter().enumerate() {
        assert!((9_000..=11_000).contains(&c), "slice {i}: {c}");
    }
    let expected = f64::from(n) / 100.0;
    let chi2: f64 = slices
        .iter()
        .map(|&c| (f64::from(c) - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < CHI2_99_P001, "chi-square {chi2:.1} over 100 bins");
}
