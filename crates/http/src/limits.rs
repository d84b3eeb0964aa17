//! Per-client limits: who the client is, and how fast it may ask.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The address of the client that sent a request (put in the request's
/// extensions by the server; `None` when the socket did not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

/// How often the limiter forgets clients it has not seen for a while, in
/// checks: keeps its memory bounded by the clients of the last moments.
const FORGET_EVERY: u64 = 65_536;

/// Requests per second per client address on the order-bearing routes,
/// with a burst of twice that.
#[derive(Debug)]
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl RateLimit {
    /// `None` for 0: no limit.
    pub fn per_second(rate: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// `Ok` if `client` may go on; else how long it should wait.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
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
}
