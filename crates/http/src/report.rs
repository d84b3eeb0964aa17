//! What the router says about the requests it answers: a port of the HTTP
//! adapter. The app implements it with the service's metrics; the adapter
//! knows nothing of how the reports are kept.
//!
//! Every call runs on the request path, so each MUST return at once: never
//! wait for I/O, nor for a lock held across I/O.

use std::time::Duration;

/// Where the router reports its requests, and what it serves at
/// `GET /metrics`.
pub trait RequestReport: Send + Sync {
    /// The report of one route's answers. The router asks once per route,
    /// at the route's first request, and keeps the handle: this call MAY
    /// take a lock or hash labels, the handle's calls MUST NOT. `route` is
    /// the route's fixed label (`/order`, `/rejected/{id}`, `static`,
    /// `other`), never a path from a request, so a client cannot make new
    /// ones.
    fn route(&self, route: &'static str) -> Box<dyn RouteReport>;

    /// A request let in by a listed bearer token: `name` is the caller's
    /// name in `API_TOKENS_FILE`, never anything a request wrote.
    fn caller(&self, name: &str);

    /// A request for orders turned away for want of a listed token:
    /// `reason` is `missing`, `invalid_request` or `invalid_token`.
    fn denied(&self, reason: &'static str);

    /// An order looked up and answered (found, not found, or failed):
    /// `from_cache` when the answer came from memory without reading
    /// through. A lookup refused for too many read-throughs is not one.
    fn lookup(&self, from_cache: bool);

    /// Answering a request panicked (a bug; the request was answered 500,
    /// the process carries on).
    fn panicked(&self);

    /// What `GET /metrics` answers: MUST be the Prometheus text format,
    /// version 0.0.4 (the answer's `Content-Type` says so).
    fn exposition(&self) -> String;
}

/// One route's answers, from [`RequestReport::route`].
pub trait RouteReport: Send + Sync {
    /// One request to this route answered with `status` in `elapsed`.
    /// Every request pays for this call: it MUST take no lock, allocate
    /// nothing and hash no label for a 200 (an answer of another status
    /// MAY).
    fn answered(&self, status: u16, elapsed: Duration);
}

/// A report that keeps what it was told, for the router's own tests.
#[cfg(test)]
pub(crate) mod recording {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{RequestReport, RouteReport};

    /// One call the router made.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Reported {
        /// [`RequestReport::route`]: a route's handle resolved.
        Route(&'static str),
        Answered {
            route: &'static str,
            status: u16,
        },
        Caller(String),
        Denied(&'static str),
        Lookup {
            from_cache: bool,
        },
        Panicked,
    }

    /// The text [`Recording`] serves at `/metrics`.
    pub(crate) const EXPOSITION: &str = "# a recording\nrecorded 1\n";

    /// Keeps every report in order; clones share the record.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Recording(Arc<Mutex<Vec<Reported>>>);

    impl Recording {
        fn note(&self, reported: Reported) {
            self.0.lock().expect("the record").push(reported);
        }

        /// Everything reported so far, in order.
        pub(crate) fn reported(&self) -> Vec<Reported> {
            self.0.lock().expect("the record").clone()
        }

        /// How often `reported` was reported.
        pub(crate) fn count(&self, reported: &Reported) -> usize {
            self.reported().iter().filter(|r| *r == reported).count()
        }
    }

    struct RouteRecording {
        route: &'static str,
        record: Recording,
    }

    impl RouteReport for RouteRecording {
        fn answered(&self, status: u16, _: Duration) {
            self.record.note(Reported::Answered {
                route: self.route,
                status,
            });
        }
    }

    impl RequestReport for Recording {
        fn route(&self, route: &'static str) -> Box<dyn RouteReport> {
            self.note(Reported::Route(route));
            Box::new(RouteRecording {
                route,
                record: self.clone(),
            })
        }

        fn caller(&self, name: &str) {
            self.note(Reported::Caller(name.to_owned()));
        }

        fn denied(&self, reason: &'static str) {
            self.note(Reported::Denied(reason));
        }

        fn lookup(&self, from_cache: bool) {
            self.note(Reported::Lookup { from_cache });
        }

        fn panicked(&self) {
            self.note(Reported::Panicked);
        }

        fn exposition(&self) -> String {
            EXPOSITION.to_owned()
        }
    }
}
