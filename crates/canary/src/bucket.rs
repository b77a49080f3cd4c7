//! Where a subject falls: the md5 bucket formulas. These never change between
//! releases (golden vectors in the tests pin them), so a user keeps their model.

use md5::{Digest, Md5};

use crate::error::CanaryError;

/// Buckets in the default scheme: basis points.
pub const BUCKETS: u16 = 10_000;

/// The default bucket of `subject` under `salt`, in `0..10_000`.
///
/// The formula, exactly: take the md5 digest of the UTF-8 bytes of
/// `"{salt}:{subject}"`, read its first 8 bytes as a big-endian `u64`, and
/// take that modulo 10 000.
///
/// ```
/// assert_eq!(canary::bucket("launch-1", "alice")?, 6639);
/// # Ok::<(), canary::CanaryError>(())
/// ```
pub fn bucket(salt: &str, subject: &str) -> Result<u16, CanaryError> {
    if subject.is_empty() {
        return Err(CanaryError::EmptySubject);
    }
    let digest = Md5::new()
        .chain_update(salt.as_bytes())
        .chain_update(b":")
        .chain_update(subject.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    if let Some(head) = digest.first_chunk::<8>() {
        first = *head;
    }
    // The remainder is below 10 000, so it fits in u16.
    Ok((u64::from_be_bytes(first) % u64::from(BUCKETS)) as u16)
}

/// How many buckets the seed scripts used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SeedBuckets {
    /// 100 buckets: the first seed's `should_use_new_model`.
    Hundred,
    /// 1000 buckets: the first seed's `good_canary`.
    Thousand,
}

impl SeedBuckets {
    /// The number of buckets.
    pub const fn count(self) -> u32 {
        match self {
            SeedBuckets::Hundred => 100,
            SeedBuckets::Thousand => 1000,
        }
    }
}

/// The seed scripts' bucket of `subject`, for teams migrating from them.
///
/// The formula, exactly: the whole 128-bit md5 digest of the UTF-8 bytes of
/// `subject` (no salt) read as a big-endian integer, modulo 100 or 1000:
/// Python's `int(hashlib.md5(s.encode()).hexdigest(), 16) % n`.
///
/// ```
/// use canary::{seed_bucket, SeedBuckets};
/// assert_eq!(seed_bucket("customer_12345", SeedBuckets::Hundred)?, 51);
/// assert_eq!(seed_bucket("customer_12345", SeedBuckets::Thousand)?, 951);
/// # Ok::<(), canary::CanaryError>(())
/// ```
pub fn seed_bucket(subject: &str, buckets: SeedBuckets) -> Result<u32, CanaryError> {
    if subject.is_empty() {
        return Err(CanaryError::EmptySubject);
    }
    let digest: [u8; 16] = Md5::digest(subject.as_bytes()).into();
    // The remainder is below 1000, so it fits in u32.
    Ok((u128::from_be_bytes(digest) % u128::from(buckets.count())) as u32)
}

/// Whether a seed-scheme bucket is in the candidate at `share_bp` basis points:
/// the seeds' `bucket / N < percentage`, compared exactly in integers
/// (`bucket × 10 000 < share × N`), which agrees with Python's float
/// comparison for every bucket and every basis-point share.
pub(crate) fn seed_in_candidate(bucket: u32, buckets: SeedBuckets, share_bp: u16) -> bool {
    u64::from(bucket) * u64::from(BUCKETS) < u64::from(share_bp) * u64::from(buckets.count())
}
