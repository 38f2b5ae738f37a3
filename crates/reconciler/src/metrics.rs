//! Reconciler metrics.

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ReconcilerMetrics {
    pub runs: IntCounterVec,
    pub released: IntCounterVec,
    pub not_ready_attachments: IntGauge,
    pub not_ready_oldest: Gauge,
    pub deleted_node_attachments: IntGauge,
}

impl ReconcilerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = ReconcilerMetrics {
            runs: IntCounterVec::new(
                Opts::new("rds_csi_attachment_reconcile_total", "Stale-attachment sweeps, by result (success, failure)."),
                &["result"],
            )?,
            released: IntCounterVec::new(
                Opts::new(
                    "rds_csi_reconciler_stale_attachments_released_total",
                    "Attachments released without their own unpublish, by trigger: watch or sweep (node tainted out-of-service), attachment_gone (VolumeAttachment no longer exists).",
                ),
                &["trigger"],
            )?,
            not_ready_attachments: IntGauge::new(
                "rds_csi_reconciler_not_ready_attachments",
                "Attachments on nodes NotReady for longer than the threshold, at the last sweep (reported, not released).",
            )?,
            not_ready_oldest: Gauge::new(
                "rds_csi_reconciler_not_ready_oldest_seconds",
                "How long the longest-NotReady node holding a volume has been NotReady, at the last sweep.",
            )?,
            deleted_node_attachments: IntGauge::new(
                "rds_csi_reconciler_deleted_node_attachments",
                "Attachments whose Node object is deleted while their VolumeAttachment still exists, at the last sweep (kept, reported: a deleted Node is not a stopped machine).",
            )?,
        };
        registry.register(Box::new(m.deleted_node_attachments.clone()))?;
        registry.register(Box::new(m.runs.clone()))?;
        registry.register(Box::new(m.released.clone()))?;
        registry.register(Box::new(m.not_ready_attachments.clone()))?;
        registry.register(Box::new(m.not_ready_oldest.clone()))?;
        Ok(m)
    }
}
