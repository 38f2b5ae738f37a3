//! Reconciler metrics.

use attachment_manager::metrics::Registrar;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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
        let r = Registrar(registry);
        Ok(ReconcilerMetrics {
            runs: r.add(IntCounterVec::new(
                Opts::new(
                    "rds_csi_attachment_reconcile_total",
                    "Stale-attachment sweeps, by result (success, failure).",
                ),
                &["result"],
            ))?,
            released: r.add(IntCounterVec::new(
                Opts::new(
                    "rds_csi_reconciler_stale_attachments_released_total",
                    "Attachments released without their own unpublish, by trigger: watch or sweep (node tainted out-of-service), attachment_gone (VolumeAttachment no longer exists).",
                ),
                &["trigger"],
            ))?,
            not_ready_attachments: r.add(IntGauge::new(
                "rds_csi_reconciler_not_ready_attachments",
                "Attachments on nodes NotReady for longer than the threshold, at the last sweep (reported, not released).",
            ))?,
            not_ready_oldest: r.add(Gauge::new(
                "rds_csi_reconciler_not_ready_oldest_seconds",
                "How long the longest-NotReady node holding a volume has been NotReady, at the last sweep.",
            ))?,
            deleted_node_attachments: r.add(IntGauge::new(
                "rds_csi_reconciler_deleted_node_attachments",
                "Attachments whose Node object is deleted while their VolumeAttachment still exists, at the last sweep (kept, reported: a deleted Node is not a stopped machine).",
            ))?,
        })
    }
}

/// What the orphan sweep saw and did.
#[derive(Clone)]
pub struct OrphanMetrics {
    /// Every orphan volume left after the sweep, whatever its reason.
    pub volumes: IntGauge,
    /// The same, by reason: `own`, `retained`, `no-identity`.
    pub by_reason: IntGaugeVec,
    /// Disks with the prefix that carry another cluster's identity.
    pub foreign: IntGauge,
    pub files: IntGauge,
    pub deleted: IntCounter,
    /// Comment updates (orphan marks) the RDS refused or did not answer.
    pub mark_failures: IntCounter,
}

impl OrphanMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let r = Registrar(registry);
        let m = OrphanMetrics {
            volumes: r.add(IntGauge::new(
                "rds_csi_orphan_volumes",
                "Backend volumes with the driver's prefix, not of another cluster, that no PersistentVolume references, at the last orphan sweep (all reasons).",
            ))?,
            by_reason: r.add(IntGaugeVec::new(
                Opts::new(
                    "rds_csi_orphan_volumes_by_reason",
                    "Orphan volumes at the last orphan sweep by reason: own (this cluster's; deleted after the grace period with --orphan-delete), retained (its PersistentVolume had reclaim policy Retain; never deleted), no-identity (no cluster identity in its comment; never deleted).",
                ),
                &["reason"],
            ))?,
            foreign: r.add(IntGauge::new(
                "rds_csi_foreign_volumes",
                "Backend volumes with the driver's prefix that carry another cluster's identity, at the last orphan sweep (ignored: never reported as orphans, never deleted).",
            ))?,
            files: r.add(IntGauge::new(
                "rds_csi_orphan_files",
                "Backing files under the volume path that no disk owns, at the last orphan sweep (never deleted automatically).",
            ))?,
            deleted: r.add(IntCounter::new(
                "rds_csi_orphan_deleted_total",
                "Orphan volumes deleted by the orphan sweep (--orphan-delete).",
            ))?,
            mark_failures: r.add(IntCounter::new(
                "rds_csi_orphan_mark_failures_total",
                "Disk comment updates by the orphan sweep (orphaned-since, retain) that failed; an orphan's age starts only once its mark is written.",
            ))?,
        };
        for reason in ["own", "retained", "no-identity"] {
            m.by_reason.with_label_values(&[reason]).set(0);
        }
        Ok(m)
    }
}
