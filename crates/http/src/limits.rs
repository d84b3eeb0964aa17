//! Per-client limits: how fast a client may ask. The client is an address
//! (the peer, or the one a trusted proxy forwarded for: `client.rs`), or,
//! for a request with a listed token, the token's caller.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The address of the client that sent a request (put in the request's
/// extensions by the server; `None` when the socket did not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

/// How often the limiter forgets clients it has not seen for a while, in
/// checks: keeps its memory bounded by the clients of the last moments.
const FORGET_EVERY: u64 = 65_536;

/// Requests per second per client on the order-bearing routes, with a
/// burst of twice that: one bucket per address, one per caller.
#[derive(Debug)]
pub struct RateLimit {
    /// Requests without a listed token, by client address.
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    /// Requests with a listed token, by the caller's name.
    callers: DefaultKeyedRateLimiter<Arc<str>>,
    /// Addresses `addresses` refused, and until when: a request with a
    /// token from one of them is refused before its token is looked at
    /// (see `Router::admit`). Sharded, as governor's own map is, so that
    /// a lookup does not serialise the cores.
    refused: DashMap<IpAddr, Instant>,
    checks: AtomicU64,
}

impl RateLimit {
    /// `None` for 0: no limit.
    pub fn per_second(rate: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            addresses: RateLimiter::keyed(quota),
            callers: RateLimiter::keyed(quota),
            refused: DashMap::new(),
            checks: AtomicU64::new(0),
        })
    }

    /// Charges `client`'s address: `Ok` if it may go on; else how long it
    /// should wait (and until then [`RateLimit::refused`] says so too).
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.forget_now_and_then();
        self.addresses.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.refused.insert(client, Instant::now() + wait);
            wait
        })
    }

    /// Charges the caller named `name` (its token's bucket).
    pub(crate) fn check_caller(&self, name: &Arc<str>) -> Result<(), Duration> {
        self.forget_now_and_then();
        self.callers
            .check_key(name)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Whether `client`'s address is over its limit now (how long until it
    /// is not), without charging it.
    pub(crate) fn refused(&self, client: IpAddr) -> Result<(), Duration> {
        // Copied out, so the map's shard is not locked past this line.
        let Some(until) = self.refused.get(&client).map(|until| *until) else {
            return Ok(());
        };
        let now = Instant::now();
        if until > now {
            return Err(until - now);
        }
        self.refused.remove_if(&client, |_, until| *until <= now);
        Ok(())
    }

    fn forget_now_and_then(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.addresses.retain_recent();
            self.callers.retain_recent();
            let now = Instant::now();
            self.refused.retain(|_, until| *until > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_waits_and_others_do_not() {
        let limit = RateLimit::per_second(10).expect("a limit");
        let greedy: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");

        // A burst of twice the rate, then refused with a wait.
        for _ in 0..20 {
            assert!(limit.check(greedy).is_ok());
        }
        let wait = limit.check(greedy).expect_err("over the limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(limit.check(other).is_ok(), "another client is not limited");
        assert!(RateLimit::per_second(0).is_none(), "0 is off");
    }

    #[test]
    fn callers_have_buckets_of_their_own_and_a_refused_address_is_known_without_a_charge() {
        let limit = RateLimit::per_second(1).expect("a limit");
        let shared: IpAddr = "192.0.2.1".parse().expect("ip");
        let (desk, audit): (Arc<str>, Arc<str>) = ("desk".into(), "audit".into());

        // The desk's burst does not touch the audit's, nor the address's.
        assert!(limit.check_caller(&desk).is_ok() && limit.check_caller(&desk).is_ok());
        assert!(limit.check_caller(&desk).is_err());
        assert!(limit.check_caller(&audit).is_ok());
        assert_eq!(limit.refused(shared), Ok(()));

        // Asking whether the address is refused charges nothing.
        for _ in 0..10 {
            assert_eq!(limit.refused(shared), Ok(()));
        }
        assert!(limit.check(shared).is_ok() && limit.check(shared).is_ok());
        let wait = limit.check(shared).expect_err("over the limit");
        let refused = limit.refused(shared).expect_err("known refused");
        assert!(
            refused <= wait && refused > Duration::ZERO,
            "{refused:?} {wait:?}"
        );
        assert_eq!(limit.refused("192.0.2.2".parse().expect("ip")), Ok(()));
    }
}
