//! Attachment and migration metrics, and [`Registrar`], which the
//! reconciler's metric sets use too.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Creates metrics and registers each in one step, so a metric can never be
/// declared and forgotten at registration.
pub struct Registrar<'a>(pub &'a Registry);

impl Registrar<'_> {
    /// Registers a newly created metric and hands it back.
    pub fn add<C: Collector + Clone + 'static>(
        &self,
        metric: prometheus::Result<C>,
    ) -> prometheus::Result<C> {
        let metric = metric?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// Registers a histogram with its bucket bounds (seconds).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> prometheus::Result<Histogram> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts))
    }
}

#[derive(Clone)]
pub struct AttachMetrics {
    pub attach: IntCounterVec,
    pub detach: IntCounterVec,
    pub conflicts: IntCounter,
    pub grace_period_used: IntCounter,
    pub stale_cleared: IntCounter,
    pub kept_for_deleted_node: IntCounter,
    pub rebuild_conflicts: IntCounter,
    pub operation_duration: HistogramVec,
    pub migrations: IntCounterVec,
    pub migration_duration: Histogram,
    pub active_migrations: IntGauge,
    pub handoff_duration: Histogram,
}

impl AttachMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let r = Registrar(registry);
        Ok(AttachMetrics {
            attach: r.add(IntCounterVec::new(
                Opts::new(
                    "rds_csi_attachment_attach_total",
                    "ControllerPublish decisions, by status (success, conflict, failure, unavailable).",
                ),
                &["status"],
            ))?,
            detach: r.add(IntCounterVec::new(
                Opts::new(
                    "rds_csi_attachment_detach_total",
                    "ControllerUnpublish decisions, by status (success, failure, unavailable).",
                ),
                &["status"],
            ))?,
            conflicts: r.add(IntCounter::new(
                "rds_csi_attachment_conflicts_total",
                "Publishes refused because another node holds the volume.",
            ))?,
            grace_period_used: r.add(IntCounter::new(
                "rds_csi_attachment_grace_period_used_total",
                "Publishes to a new node within the grace period after a release (handoffs).",
            ))?,
            stale_cleared: r.add(IntCounter::new(
                "rds_csi_attachment_stale_cleared_total",
                "Attachments dropped without their own unpublish: the node carries the out-of-service taint, or the VolumeAttachment is gone.",
            ))?,
            kept_for_deleted_node: r.add(IntCounter::new(
                "rds_csi_attachment_deleted_node_kept_total",
                "Times an attachment was kept although its Node object is deleted, because its VolumeAttachment still exists (a deleted Node is not a stopped machine).",
            ))?,
            rebuild_conflicts: r.add(IntCounter::new(
                "rds_csi_attachment_rebuild_conflicts_total",
                "Volumes found at a rebuild with more nodes than their access mode allows (kept fenced and reported).",
            ))?,
            operation_duration: r.add(HistogramVec::new(
                HistogramOpts::new(
                    "rds_csi_attachment_operation_duration_seconds",
                    "Time to decide and persist an attachment operation.",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["operation"],
            ))?,
            migrations: r.add(IntCounterVec::new(
                Opts::new(
                    "rds_csi_migration_migrations_total",
                    "Live-migration windows, by result (started, completed, failed, node_lost, timed_out).",
                ),
                &["result"],
            ))?,
            migration_duration: r.histogram(
                "rds_csi_migration_duration_seconds",
                "Time from admitting a migration target to one side leaving.",
                &[1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0],
            )?,
            active_migrations: r.add(IntGauge::new(
                "rds_csi_migration_active_migrations",
                "Volumes attached to two nodes for a live migration right now.",
            ))?,
            handoff_duration: r.histogram(
                "rds_csi_handoff_duration_seconds",
                "Time from a volume's release on one node to its publish on another (handoffs).",
                &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            )?,
        })
    }

    /// Times a publish or unpublish and counts its outcome.
    pub fn observe(&self, operation: &str, started: std::time::Instant, status: &str) {
        self.operation_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        let counter = if operation == "publish" {
            &self.attach
        } else {
            &self.detach
        };
        counter.with_label_values(&[status]).inc();
    }

    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }
}
