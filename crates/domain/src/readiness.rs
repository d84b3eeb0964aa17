//! What `/readyz` reports. One owner writes it (the app's health watcher);
//! anyone may read it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether each thing the service needs to do its job is there.
#[derive(Debug, Default)]
pub struct Readiness {
    cache_warm: AtomicBool,
    database: AtomicBool,
    broker: AtomicBool,
}

/// A snapshot of [`Readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessReport {
    pub cache_warm: bool,
    pub database: bool,
    pub broker: bool,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.cache_warm && self.database && self.broker
    }
}

impl Readiness {
    pub fn set_cache_warm(&self, warm: bool) {
        self.cache_warm.store(warm, Ordering::Release);
    }
    pub fn set_database(&self, up: bool) {
        self.database.store(up, Ordering::Release);
    }
    pub fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Release);
    }
    pub fn report(&self) -> ReadinessReport {
        ReadinessReport {
            cache_warm: self.cache_warm.load(Ordering::Acquire),
            database: self.database.load(Ordering::Acquire),
            broker: self.broker.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_everything_is() {
        let readiness = Readiness::default();
        assert!(!readiness.report().is_ready());
        readiness.set_database(true);
        readiness.set_broker(true);
        assert!(!readiness.report().is_ready(), "the cache is still cold");
        readiness.set_cache_warm(true);
        assert!(readiness.report().is_ready());
        readiness.set_broker(false);
        assert_eq!(
            readiness.report(),
            ReadinessReport {
                cache_warm: true,
                database: true,
                broker: false
            }
        );
    }
}
