//! Backend health, polled in the background.
//!
//! Probe, the readiness endpoint and the gauges read what the poller last
//! saw; none of them ever waits on SSH: backend I/O inside a scrape or a
//! probe turns a slow RDS into a dead driver
//! (docs/safety.md#backend-io-in-a-scrape).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntGauge, Registry};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::metrics::registered;

#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Of a controller with several backends ([`Health::any_of`]): theirs.
    members: Vec<Arc<AtomicBool>>,
    /// The backend's name in logs, with several backends.
    name: Option<String>,
    /// Notified each time the backend becomes reachable (also the first
    /// time), so reconcilers can sweep after an outage.
    recovered: Arc<tokio::sync::Notify>,
    up: IntGauge,
    rtt: Gauge,
    pool_size: IntGauge,
    pool_free: IntGauge,
}

impl Health {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let int_gauge = |name: &str, help: &str| registered(registry, IntGauge::new(name, help)?);
        let rtt = Gauge::new(
            "rds_csi_backend_health_check_seconds",
            "Round-trip time of the last backend health check.",
        )?;
        Ok(Health {
            ready: Arc::new(AtomicBool::new(false)),
            members: Vec::new(),
            name: None,
            recovered: Arc::new(tokio::sync::Notify::new()),
            up: int_gauge(
                "rds_csi_backend_up",
                "1 when the last backend health check succeeded.",
            )?,
            rtt: registered(registry, rtt)?,
            pool_size: int_gauge("rds_csi_pool_size_bytes", "Size of the RDS storage pool.")?,
            pool_free: int_gauge(
                "rds_csi_pool_free_bytes",
                "Free space in the RDS storage pool.",
            )?,
        })
    }

    /// Always ready: for services that have no backend (the node plugin).
    pub fn always_ready() -> Self {
        let h = Self::register(&Registry::new()).expect("fresh registry");
        h.ready.store(true, Ordering::Relaxed);
        h
    }

    /// Names the backend in its log lines.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The readiness of a controller with several backends: ready while
    /// any of them is reachable. One server down must not make Kubernetes
    /// restart the controller that serves the others; which one is down is
    /// in `rds_csi_backend_up{backend}`, and its own RPCs answer
    /// UNAVAILABLE.
    pub fn any_of(members: &[Health]) -> prometheus::Result<Health> {
        let mut h = Self::register(&Registry::new())?;
        h.members = members.iter().map(|m| m.ready.clone()).collect();
        Ok(h)
    }

    pub fn is_ready(&self) -> bool {
        if self.members.is_empty() {
            self.ready.load(Ordering::Relaxed)
        } else {
            self.members.iter().any(|m| m.load(Ordering::Relaxed))
        }
    }

    pub fn recovered(&self) -> Arc<tokio::sync::Notify> {
        self.recovered.clone()
    }

    fn record(&self, ok: bool) {
        let was = self.ready.swap(ok, Ordering::Relaxed);
        self.up.set(ok as i64);
        if was != ok {
            if ok {
                self.recovered.notify_one();
                info!(backend = self.name.as_deref(), "backend is reachable");
            } else {
                warn!(backend = self.name.as_deref(), "backend is unreachable");
            }
        }
    }

    /// Checks the backend every `interval` until cancelled.
    pub async fn run<B: Backend>(
        self,
        backend: Arc<B>,
        pool: String,
        interval: Duration,
        timeout: Duration,
        cancel: CancellationToken,
    ) {
        loop {
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, backend.capacity(&pool)).await;
            match result {
                Ok(Ok(cap)) => {
                    self.rtt.set(started.elapsed().as_secs_f64());
                    self.pool_size
                        .set(cap.size_bytes.min(i64::MAX as u64) as i64);
                    self.pool_free
                        .set(cap.free_bytes.min(i64::MAX as u64) as i64);
                    self.record(true);
                }
                Ok(Err(e)) => {
                    warn!(backend = self.name.as_deref(), error = %e, "backend health check failed");
                    self.record(false);
                }
                Err(_) => {
                    warn!(
                        backend = self.name.as_deref(),
                        ?timeout,
                        "backend health check timed out"
                    );
                    self.record(false);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_backends_are_ready_while_any_is_reachable() {
        let (a, b) = (
            Health::register(&Registry::new()).unwrap(),
            Health::register(&Registry::new()).unwrap(),
        );
        let all = Health::any_of(&[a.clone(), b.clone()]).unwrap();
        assert!(!all.is_ready(), "nothing checked yet");
        a.record(true);
        assert!(all.is_ready());
        a.record(false);
        b.record(true);
        assert!(all.is_ready());
        b.record(false);
        assert!(!all.is_ready());
    }
}
