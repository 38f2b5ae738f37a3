//! Stale attachments: keep the holders in step with the cluster.
//!
//! - A node tainted `node.kubernetes.io/out-of-service` (an operator's
//!   statement that the machine is off) loses its attachments at once.
//! - A holder whose VolumeAttachment no longer exists (its finalizer
//!   stripped by hand, or deleted while the controller was away) is
//!   released by the periodic pass.
//! - A deleted Node object is not a stopped machine: its attachments stay
//!   while their VolumeAttachments exist, and are reported (event and
//!   gauge) so an operator can taint the node once the machine is off.
//! - Attachments on nodes NotReady for long are reported, not released.

use std::sync::Arc;
use std::time::Duration;

use attachment_manager::kube_store::{out_of_service, KubeNodes};
use attachment_manager::{EventKind, Manager, NodeStatus};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::ReconcilerMetrics;

#[derive(Debug, Clone)]
pub struct StaleConfig {
    /// Periodic sweep (`--attachment-reconcile-interval`).
    pub interval: Duration,
    /// Report attachments on nodes NotReady for longer than this.
    pub not_ready_after: Duration,
}

pub struct StaleAttachments {
    manager: Arc<Manager>,
    nodes: KubeNodes,
    client: Client,
    config: StaleConfig,
    metrics: ReconcilerMetrics,
    /// Notified when the backend comes back, to sweep at once.
    kick: Arc<Notify>,
}

impl StaleAttachments {
    pub fn new(
        manager: Arc<Manager>,
        nodes: KubeNodes,
        client: Client,
        config: StaleConfig,
        metrics: ReconcilerMetrics,
        kick: Arc<Notify>,
    ) -> Self {
        StaleAttachments {
            manager,
            nodes,
            client,
            config,
            metrics,
            kick,
        }
    }

    /// Runs the watch and the sweeps until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let watch = {
            let me = self.clone();
            let cancel = cancel.clone();
            async move { me.watch(cancel).await }
        };
        let sweeps = async {
            // Wait for the rebuild: sweeping an empty state proves nothing.
            while !self.manager.is_ready() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            loop {
                self.sweep().await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.config.interval) => {}
                    _ = self.kick.notified() => info!("backend reconnected; sweeping attachments"),
                }
            }
        };
        tokio::join!(watch, sweeps);
    }

    async fn watch(&self, cancel: CancellationToken) {
        let api: Api<Node> = Api::all(self.client.clone());
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                e = stream.next() => e,
            };
            let Some(event) = event else { return };
            let (name, fenced) = match event {
                Ok(watcher::Event::Delete(n)) => (n.metadata.name.unwrap_or_default(), false),
                Ok(watcher::Event::Apply(n)) | Ok(watcher::Event::InitApply(n))
                    if out_of_service(&n) =>
                {
                    (n.metadata.name.unwrap_or_default(), true)
                }
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "Node watch error; retrying");
                    continue;
                }
            };
            if !self.manager.is_ready() {
                continue;
            }
            if fenced {
                let released = self.manager.release_out_of_service(&name).await;
                if !released.is_empty() {
                    info!(node = %name, volumes = ?released, "released the attachments of a node tainted out-of-service");
                    self.metrics
                        .released
                        .with_label_values(&["watch"])
                        .inc_by(released.len() as u64);
                }
            } else {
                // Deleted: release only what lost its VolumeAttachment too,
                // report the rest.
                self.release_without_attachment().await;
                self.report_deleted_node(&name).await;
            }
        }
    }

    /// The periodic pass: releases holders whose VolumeAttachment is gone.
    async fn release_without_attachment(&self) -> bool {
        match self.manager.release_without_attachment().await {
            Ok(released) => {
                if !released.is_empty() {
                    info!(released = ?released, "released holders whose VolumeAttachment no longer exists");
                    self.metrics
                        .released
                        .with_label_values(&["attachment_gone"])
                        .inc_by(released.len() as u64);
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot compare holders with the VolumeAttachments; will retry");
                false
            }
        }
    }

    /// Reports every volume a deleted node still holds; returns how many.
    async fn report_deleted_node(&self, node: &str) -> usize {
        let volumes = self
            .manager
            .attachments_by_node()
            .remove(node)
            .unwrap_or_default();
        for volume in &volumes {
            self.manager
                .report(volume, EventKind::Warning, "AttachedToDeletedNode", format!(
                    "volume {volume} stays attached to node {node}: the Node object is deleted but its VolumeAttachment still exists, and a deleted Node may still be running. Once the machine is off, taint it node.kubernetes.io/out-of-service (or let Kubernetes detach it) to release the volume"
                ))
                .await;
        }
        volumes.len()
    }

    /// One pass: holders without a VolumeAttachment are released, nodes
    /// tainted out-of-service lose their attachments, and deleted or long
    /// NotReady nodes that still hold volumes are reported.
    pub async fn sweep(&self) {
        if self.nodes.wait_ready().await.is_err() {
            self.metrics.runs.with_label_values(&["failure"]).inc();
            return;
        }
        let pass_ok = self.release_without_attachment().await;
        let now = Timestamp::now();
        let mut not_ready = 0i64;
        let mut deleted = 0i64;
        let mut oldest = Duration::ZERO;
        for (node, volumes) in self.manager.attachments_by_node() {
            match self.nodes.status_now(&node) {
                NodeStatus::OutOfService => {
                    let released = self.manager.release_out_of_service(&node).await;
                    if !released.is_empty() {
                        info!(node = %node, volumes = ?released, "sweep released the attachments of a node tainted out-of-service");
                        self.metrics
                            .released
                            .with_label_values(&["sweep"])
                            .inc_by(released.len() as u64);
                    }
                }
                NodeStatus::Missing => {
                    deleted += self.report_deleted_node(&node).await as i64;
                }
                NodeStatus::Present => {
                    let Some(since) = self.nodes.not_ready_since(&node) else {
                        continue;
                    };
                    let age = Duration::try_from(now.duration_since(since)).unwrap_or_default();
                    if age < self.config.not_ready_after {
                        continue;
                    }
                    oldest = oldest.max(age);
                    for volume in volumes {
                        not_ready += 1;
                        self.manager
                            .report(&volume, EventKind::Warning, "AttachedToNotReadyNode", format!(
                                "volume {volume} is attached to node {node}, NotReady for {}s; it stays attached until the node is tainted node.kubernetes.io/out-of-service or detached by Kubernetes",
                                age.as_secs()
                            ))
                            .await;
                    }
                }
            }
        }
        self.metrics.not_ready_attachments.set(not_ready);
        self.metrics.deleted_node_attachments.set(deleted);
        self.metrics.not_ready_oldest.set(oldest.as_secs_f64());
        self.metrics
            .runs
            .with_label_values(&[if pass_ok { "success" } else { "failure" }])
            .inc();
    }
}
