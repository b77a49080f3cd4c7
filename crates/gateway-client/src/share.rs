//! Limits shared with other processes: what the client asks for when a
//! request finds this process's share of a limit short.

use budget::Money;

/// Grows this process's shares of shared limits (see
/// [`budget::Allowances`] and [`budget::Ledger::share_limits`]) when a
/// request finds one short. Set with
/// [`Client::set_share_backer`](crate::Client::set_share_backer); without
/// one, a short share refuses the request.
#[async_trait::async_trait]
pub trait ShareBacker: Send + Sync + 'static {
    /// Tries to have at least `needed` free in this process's share of the
    /// ledger's limit number `limit` (asking the pool, and the other
    /// processes to hand back what they hold free); whether the request
    /// should try to reserve again. It must not wait long: the request
    /// waits for it.
    async fn cover(&self, limit: usize, needed: Money) -> bool;
}
