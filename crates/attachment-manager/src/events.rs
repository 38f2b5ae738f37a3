//! Events off the critical path.
//!
//! Whoever reports an event (a publish deciding a handoff, a node stage
//! refusing to format) only hands it to a bounded queue and goes on: a slow
//! or unreachable API server never delays or fails the operation. One
//! background task drains the queue into an [`EventSink`] (`KubeEvents` in
//! a cluster), each delivery bounded by a timeout. When the queue is full,
//! or without a sink, events are only logged, so none is lost from the log.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::cluster::{EventSink, VolumeEvent};

/// Events waiting for delivery; beyond this, new ones are only logged.
pub const QUEUE_CAPACITY: usize = 256;
/// Longest one delivery may take before it is given up.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

enum Item {
    Event(VolumeEvent),
    Flush(oneshot::Sender<()>),
}

/// Where events go. Cheap to clone.
#[derive(Clone, Default)]
pub struct QueuedEvents {
    queue: Option<mpsc::Sender<Item>>,
}

impl QueuedEvents {
    /// Events are logged and go nowhere else.
    pub fn log_only() -> Self {
        QueuedEvents { queue: None }
    }

    /// Starts the task that delivers events to `sink` (needs a Tokio
    /// runtime). It ends when the last handle is dropped.
    pub fn spawn(sink: Arc<dyn EventSink>, capacity: usize, timeout: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Item::Event(e) => {
                        let reason = e.reason;
                        if tokio::time::timeout(timeout, sink.emit(e)).await.is_err() {
                            warn!(
                                reason,
                                ?timeout,
                                "recording an event took too long; given up (it was logged)"
                            );
                        }
                    }
                    Item::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        QueuedEvents { queue: Some(tx) }
    }

    /// Whether events reach a sink besides the log.
    pub fn is_recording(&self) -> bool {
        self.queue.is_some()
    }

    /// Hands an event over without waiting. When it cannot be queued it is
    /// logged instead, so it is never lost from the log.
    pub fn report(&self, event: VolumeEvent) {
        let Some(queue) = &self.queue else {
            event.log();
            return;
        };
        match queue.try_send(Item::Event(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Item::Event(e))) => {
                e.log();
                warn!(
                    reason = e.reason,
                    "event queue full (the API server is slow or unreachable); this event is only logged"
                );
            }
            Err(mpsc::error::TrySendError::Closed(Item::Event(e))) => {
                e.log();
                debug!(reason = e.reason, "event task gone; event only logged");
            }
            Err(_) => {}
        }
    }

    /// Waits until every event queued before this call was delivered (or
    /// given up). For shutdown and tests.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if queue.send(Item::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Reporting through the queue: the returned future is already complete.
impl EventSink for QueuedEvents {
    fn emit(&self, event: VolumeEvent) -> BoxFuture<'_, ()> {
        self.report(event);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::LogEvents;
    use crate::EventKind;

    fn ev(n: usize) -> VolumeEvent {
        VolumeEvent {
            volume: format!("pvc-{n}"),
            pvc: Some(("ns".into(), "claim".into())),
            kind: EventKind::Warning,
            reason: "MountFailed",
            message: "boom".into(),
        }
    }

    /// A sink whose API server never answers.
    struct Hung;
    impl EventSink for Hung {
        fn emit(&self, _: VolumeEvent) -> BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn events_are_delivered_in_order_and_flush_waits_for_them() {
        let sink = Arc::new(LogEvents::default());
        let events = QueuedEvents::spawn(sink.clone(), 8, DELIVERY_TIMEOUT);
        for n in 0..5 {
            events.report(ev(n));
        }
        events.flush().await;
        let seen = sink.seen.lock().unwrap().clone();
        let volumes: Vec<&str> = seen.iter().map(|e| e.volume.as_str()).collect();
        assert_eq!(volumes, ["pvc-0", "pvc-1", "pvc-2", "pvc-3", "pvc-4"]);
        assert_eq!(seen[0].message, "boom");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_api_server_never_blocks_a_report_and_each_delivery_is_bounded() {
        let events = QueuedEvents::spawn(Arc::new(Hung), 2, Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        // Far more than the queue holds: the extra ones are only logged.
        for n in 0..1000 {
            events.report(ev(n));
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "report never waits");
        // Each stuck delivery is given up after the timeout, so the queue
        // drains: one in flight plus two queued.
        tokio::time::timeout(Duration::from_secs(60), events.flush())
            .await
            .expect("stuck deliveries are given up");
        assert!(
            start.elapsed() <= Duration::from_secs(31),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn without_a_sink_events_are_only_logged() {
        let events = QueuedEvents::log_only();
        assert!(!events.is_recording());
        events.report(ev(0));
        events.flush().await;
    }
}
