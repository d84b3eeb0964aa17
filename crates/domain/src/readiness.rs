//! What `/readyz` reports. One owner writes it (the app's health watcher);
//! anyone may read it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether each thing the service needs to do its job is there.
#[derive(Debug, Default)]
pub struct Readiness {
    cache_warm: AtomicBool,
    database: AtomicBool,
    broker: AtomicBool,
    sync_standby: AtomicBool,
    sync_standby_required: AtomicBool,
}

/// A snapshot of [`Readiness`]; the default is nothing there yet, as at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessReport {
    pub cache_warm: bool,
    pub database: bool,
    pub broker: bool,
    /// A commit is held by a synchronous standby too, so losing the
    /// primary loses no acked order.
    pub sync_standby: bool,
    /// The operator prefers stalling to risking loss
    /// (`REQUIRE_SYNC_STANDBY`): without a synchronous standby the service
    /// is not ready, and ingest waits.
    pub sync_standby_required: bool,
}

impl ReadinessReport {
    /// Each part of readiness by its name in `/readyz`'s body, and whether
    /// it is there (the synchronous standby counts towards
    /// [`is_ready`](Self::is_ready) only when required).
    pub fn dependencies(&self) -> [(&'static str, bool); 4] {
        [
            ("database", self.database),
            ("broker", self.broker),
            ("cache_warm", self.cache_warm),
            ("sync_standby", self.sync_standby),
        ]
    }

    pub fn is_ready(&self) -> bool {
        self.cache_warm
            && self.database
            && self.broker
            && (self.sync_standby || !self.sync_standby_required)
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
    pub fn set_sync_standby(&self, attached: bool) {
        self.sync_standby.store(attached, Ordering::Release);
    }
    pub fn set_sync_standby_required(&self, required: bool) {
        self.sync_standby_required
            .store(required, Ordering::Release);
    }
    pub fn report(&self) -> ReadinessReport {
        ReadinessReport {
            cache_warm: self.cache_warm.load(Ordering::Acquire),
            database: self.database.load(Ordering::Acquire),
            broker: self.broker.load(Ordering::Acquire),
            sync_standby: self.sync_standby.load(Ordering::Acquire),
            sync_standby_required: self.sync_standby_required.load(Ordering::Acquire),
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
                broker: false,
                sync_standby: false,
                sync_standby_required: false,
            }
        );
    }

    #[test]
    fn dependencies_are_named_as_readyz_names_them() {
        let report = ReadinessReport {
            broker: true,
            ..ReadinessReport::default()
        };

        let body = serde_json::to_value(report).expect("serializable");

        for (name, up) in report.dependencies() {
            assert_eq!(body[name], up, "{name}");
        }
        assert!(report.dependencies().contains(&("broker", true)));
    }

    #[test]
    fn a_missing_sync_standby_matters_only_when_required() {
        let readiness = Readiness::default();
        readiness.set_cache_warm(true);
        readiness.set_database(true);
        readiness.set_broker(true);
        assert!(readiness.report().is_ready(), "not required: reported only");

        readiness.set_sync_standby_required(true);
        assert!(!readiness.report().is_ready());
        readiness.set_sync_standby(true);
        assert!(readiness.report().is_ready());
    }
}
