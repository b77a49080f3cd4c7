//! Drives a pool through two simulated hours of traffic and prints what the
//! pool decided and its status report. No network, no real keys, no waiting:
//! time is simulated, and the same run always prints the same thing.
//!
//! ```text
//! cargo run -p keypool-core --example simulate
//! ```

use std::time::Duration;

use keypool_core::{Event, KeyPool, NewKey, Outcome, PoolConfig, Timestamp};

/// A tiny deterministic generator for the simulated upstream's answers.
struct Upstream(u64);

impl Upstream {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pool = KeyPool::new(PoolConfig::default())?;
    let start = Timestamp::from_unix_secs(1_795_322_452); // 2026-11-22T04:40:52Z
    let mut now = start;

    // The first seed's three keys, plus a backup tier that serves only when the primaries cannot.
    let prod = pool.add(
        NewKey::new("Production Key", "sk-holysheep-prod-001").tokens_per_day(5_000_000),
        now,
    )?;
    pool.add(
        NewKey::new("Production Backup", "sk-holysheep-prod-002").tokens_per_day(5_000_000),
        now,
    )?;
    let test = pool.add(
        NewKey::new("Testing Key", "sk-holysheep-test-001").tokens_per_day(500_000),
        now,
    )?;
    pool.add(
        NewKey::new("Official API (backup tier)", "sk-openai-backup-0001").tier(1),
        now,
    )?;

    let mut upstream = Upstream(7);
    let (mut served, mut refused) = (0u32, 0u32);
    let mut rotated = false;
    let end = start.saturating_add(Duration::from_secs(2 * 3600));
    while now < end {
        // Scripted incidents: the testing key is revoked upstream after 5 minutes,
        // the production key's secret is rotated after an hour.
        let minutes = now.saturating_duration_since(start).as_secs() / 60;
        if minutes >= 60 && !rotated {
            pool.rotate(
                prod,
                "sk-holysheep-prod-003",
                Duration::from_secs(15 * 60),
                now,
            )?;
            rotated = true;
        }
        match pool.acquire(now) {
            Ok(lease) => {
                let roll = upstream.next() % 100;
                let outcome = if lease.key() == test && minutes >= 5 {
                    Outcome::Unauthorized
                } else if roll < 2 {
                    Outcome::RateLimited {
                        retry_after: Some(Duration::from_secs(upstream.next() % 10 + 1)),
                    }
                } else if (40..50).contains(&minutes) && roll < 60 {
                    Outcome::ServerError // an upstream incident
                } else {
                    let prompt = 200 + upstream.next() % 1_200;
                    Outcome::success(
                        prompt,
                        prompt / 3,
                        Duration::from_millis(300 + upstream.next() % 900),
                    )
                };
                if matches!(outcome, Outcome::Success { .. }) {
                    served += 1;
                }
                pool.report(lease, outcome, now);
            }
            Err(no_key) => {
                refused += 1;
                if refused <= 3 {
                    println!("{now}  {no_key}");
                }
            }
        }
        while let Some(event) = pool.poll_event() {
            print_event(now, &event);
        }
        // The next request arrives in 0.3 to 1.3 s; the pool's own timers are applied on the way.
        let next = now.saturating_add(Duration::from_millis(300 + upstream.next() % 1_000));
        while let Some(t) = pool.poll_timeout().filter(|&t| t <= next) {
            pool.handle_timeout(t);
            while let Some(event) = pool.poll_event() {
                print_event(t, &event);
            }
        }
        now = next;
    }

    println!("\n{served} requests served, {refused} refused for want of a key.");
    print!("{}", pool.status_report());
    Ok(())
}

/// Prints the events worth a line; routine ones (usage warnings, recoveries from
/// short rate-limit cooldowns) are left out to keep the output short.
fn print_event(at: Timestamp, event: &Event) {
    let line = match event {
        Event::Disabled { name, cause, .. } => format!("🚫 {name} disabled: {cause}"),
        Event::BreakerOpened { name, until, .. } => {
            format!("⚡ {name}: circuit breaker opened until {until}")
        }
        Event::BreakerHalfOpen { name, .. } => format!("🔎 {name}: breaker half-open, probing"),
        Event::BreakerClosed { name, .. } => format!("✅ {name}: breaker closed"),
        Event::Rotated {
            name, revoke_at, ..
        } => format!("🔁 {name} rotated; the old secret drains until {revoke_at}"),
        Event::Revoked { name, .. } => format!("🗑  {name}: old secret revoked"),
        Event::Exhausted { name, until, .. } => format!("⛽ {name}: quota exhausted until {until}"),
        Event::PoolEmpty { retry_at: Some(t) } => format!("🔴 no key can serve until {t}"),
        Event::PoolEmpty { retry_at: None } => "🔴 no key can serve".to_owned(),
        Event::PoolRecovered => "🟢 keys available again".to_owned(),
        _ => return,
    };
    println!("{at}  {line}");
}
