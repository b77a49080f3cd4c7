use canary::{CanaryError, Rollout, Scheme, SeedBuckets, Share, bucket, seed_bucket};

/// Computed with Python: `int.from_bytes(md5(f"{salt}:{subject}".encode()).digest()[:8], "big") % 10000`.
const SALTED: &[(&str, &str, u16)] = &[
    ("launch-1", "alice", 6639),
    ("launch-1", "user_42", 5553),
    ("exp-b", "alice", 5992),
    ("", "alice", 1286),
    ("launch-1", "ผู้ใช้_ไทย", 6693),
    ("launch-1", "người dùng", 651),
    ("gpt-4.1/claude", "customer_12345", 1202),
];

/// Computed with Python: `int(hashlib.md5(s.encode()).hexdigest(), 16) % 100` and `% 1000`.
const SEED: &[(&str, u32, u32)] = &[
    ("user_0", 72, 72),
    ("user_1", 53, 753),
    ("customer_12345", 51, 951),
    ("alice", 0, 300),
    ("ผู้ใช้_ไทย", 69, 69),
    ("người dùng", 91, 991),
];

#[test]
fn salted_buckets_match_the_golden_vectors() {
    for &(salt, subject, expected) in SALTED {
        assert_eq!(bucket(salt, subject).unwrap(), expected, "{salt}:{subject}");
    }
}

#[test]
fn seed_buckets_match_pythons_hashlib() {
    for &(subject, hundred, thousand) in SEED {
        assert_eq!(
            seed_bucket(subject, SeedBuckets::Hundred).unwrap(),
            hundred,
            "{subject}"
        );
        assert_eq!(
            seed_bucket(subject, SeedBuckets::Thousand).unwrap(),
            thousand,
            "{subject}"
        );
    }
}

fn seed_rollout(buckets: SeedBuckets, fraction: f64) -> Rollout {
    Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::from_fraction(fraction).unwrap())
        .scheme(Scheme::Seed(buckets))
        .build()
        .unwrap()
}

fn candidates(rollout: &Rollout, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|i| &**rollout.model_for(&format!("user_{i}")).unwrap() == "claude-sonnet-4.5")
        .collect()
}

#[test]
fn seed_scheme_reproduces_should_use_new_model_exactly() {
    // Python, the seed's own function over user_0..user_99 at 10%:
    // [i for i in range(100) if should_use_new_model(f"user_{i}")]
    let r = seed_rollout(SeedBuckets::Hundred, 0.1);
    assert_eq!(candidates(&r, 100), vec![38, 59, 75, 83, 93, 96]);
    // Over user_0..user_999: (share, how many, sum of their numbers).
    for (fraction, count, sum) in [(0.1, 89, 46_142), (0.05, 53, 29_238), (0.333, 326, 158_855)] {
        let got = candidates(&seed_rollout(SeedBuckets::Hundred, fraction), 1000);
        assert_eq!(
            (got.len(), got.iter().sum::<usize>()),
            (count, sum),
            "{fraction}"
        );
    }
}

#[test]
fn seed_scheme_reproduces_good_canary_exactly() {
    let r = seed_rollout(SeedBuckets::Thousand, 0.1);
    assert_eq!(candidates(&r, 100), vec![0, 11, 16, 51, 55, 56, 72, 75, 94]);
    for (fraction, count, sum) in [(0.1, 86, 42_855), (0.05, 39, 19_341), (0.333, 322, 165_465)] {
        let got = candidates(&seed_rollout(SeedBuckets::Thousand, fraction), 1000);
        assert_eq!(
            (got.len(), got.iter().sum::<usize>()),
            (count, sum),
            "{fraction}"
        );
    }
}

#[test]
fn an_empty_subject_is_an_error_not_bucket_zero() {
    assert_eq!(bucket("salt", ""), Err(CanaryError::EmptySubject));
    assert_eq!(
        seed_bucket("", SeedBuckets::Hundred),
        Err(CanaryError::EmptySubject)
    );
    let r = seed_rollout(SeedBuckets::Hundred, 0.5);
    assert_eq!(r.model_for(""), Err(CanaryError::EmptySubject));
}

#[test]
fn one_candidate_owns_exactly_the_lowest_buckets() {
    let r = Rollout::builder("base")
        .candidate("cand", Share::from_bp(1234).unwrap())
        .salt("launch-1")
        .build()
        .unwrap();
    for i in 0..5000 {
        let subject = format!("u{i}");
        let in_candidate = bucket("launch-1", &subject).unwrap() < 1234;
        assert_eq!(
            &**r.model_for(&subject).unwrap() == "cand",
            in_candidate,
            "{subject}"
        );
    }
}
