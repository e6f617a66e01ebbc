//! Repeated failures in the log: the first of a kind (route and cause) in full, then one summary line with a count per interval, so an outage cannot fill the disk or bury its first line.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most kinds tracked at once; beyond it every failure is logged in full (a bound on memory,
/// never reached by real routes and causes).
const MAX_KINDS: usize = 1024;

/// One kind of failure: the route (or pseudo-route) and the cause, in words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    /// Route name, `_gateway` or `_none`.
    pub route: String,
    /// What failed, e.g. `upstream connect` or `DingTalk user_access_token timeout`.
    pub cause: String,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    suppressed: u64,
}

/// A summary line that is due: `count` failures of `kind` were not logged in the last `span`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The kind.
    pub kind: Kind,
    /// Failures not logged in full.
    pub count: u64,
    /// The time they happened in.
    pub span: Duration,
}

/// The failure kinds seen recently. `interval` zero turns summarizing off.
#[derive(Debug)]
pub struct Repeats {
    interval: Duration,
    windows: Mutex<HashMap<Kind, Window>>,
}

impl Repeats {
    /// Summarizes per `interval` (zero: every failure is logged in full).
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// The summary interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether a failure of `kind` at `now` is logged in full: the first of its kind since the
    /// kind was last quiet for a whole interval. Otherwise it is counted for the next summary.
    pub fn first(&self, kind: Kind, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = windows.get_mut(&kind) {
            w.suppressed += 1;
            return false;
        }
        if windows.len() < MAX_KINDS {
            windows.insert(
                kind,
                Window {
                    started: now,
                    suppressed: 0,
                },
            );
        }
        true
    }

    /// The summaries due at `now` (each kind whose interval is over and that had failures not
    /// logged); a kind with none in its interval is forgotten, so its next failure is logged in
    /// full. `all` ends every window (at shutdown).
    pub fn due(&self, now: Instant, all: bool) -> Vec<Summary> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        windows.retain(|kind, w| {
            let span = now.saturating_duration_since(w.started);
            if !all && span < self.interval {
                return true;
            }
            if w.suppressed == 0 {
                return false;
            }
            out.push(Summary {
                kind: kind.clone(),
                count: w.suppressed,
                span,
            });
            w.started = now;
            w.suppressed = 0;
            !all
        });
        out
    }

    /// Writes the due summaries, one ERROR line each.
    pub fn log_due(&self, now: Instant, all: bool) {
        for s in self.due(now, all) {
            tracing::error!(
                route = %s.kind.route,
                cause = %s.kind.cause,
                count = s.count,
                "… {} more like this in the last {} s",
                s.count,
                s.span.as_secs().max(1)
            );
        }
    }

    /// Logs due summaries every second until the task is dropped.
    pub async fn run(&self) {
        if self.interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(self.interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.log_due(Instant::now(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(route: &str, cause: &str) -> Kind {
        Kind {
            route: route.to_owned(),
            cause: cause.to_owned(),
        }
    }

    #[test]
    fn first_in_full_then_counted_then_summarized_per_interval() {
        let r = Repeats::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let a = kind("app", "upstream connect");
        assert!(r.first(a.clone(), t0));
        for _ in 0..5 {
            assert!(!r.first(a.clone(), t0));
        }
        // Another route or cause is a kind of its own.
        assert!(r.first(kind("admin", "upstream connect"), t0));
        assert!(r.first(kind("app", "upstream timeout"), t0));
        assert!(r.due(t0 + Duration::from_secs(9), false).is_empty());
        let due = r.due(t0 + Duration::from_secs(10), false);
        assert_eq!(
            due,
            vec![Summary {
                kind: a.clone(),
                count: 5,
                span: Duration::from_secs(10)
            }]
        );
        // Still failing: counted, summarized again, never logged in full.
        let t1 = t0 + Duration::from_secs(10);
        assert!(!r.first(a.clone(), t1));
        assert_eq!(r.due(t1 + Duration::from_secs(10), false)[0].count, 1);
        // A quiet interval forgets the kind: the next failure is logged in full.
        assert!(r.due(t1 + Duration::from_secs(20), false).is_empty());
        assert!(r.first(a.clone(), t1 + Duration::from_secs(21)));
    }

    #[test]
    fn shutdown_reports_what_is_pending_and_zero_turns_it_off() {
        let r = Repeats::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let a = kind("app", "upstream connect");
        r.first(a.clone(), t0);
        r.first(a.clone(), t0);
        assert_eq!(r.due(t0, true)[0].count, 1);
        assert!(r.due(t0, true).is_empty());
        let off = Repeats::new(Duration::ZERO);
        assert!(off.first(a.clone(), t0));
        assert!(off.first(a, t0));
    }
}
