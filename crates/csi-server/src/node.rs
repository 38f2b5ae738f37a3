//! The CSI Node service: stage, publish, unpublish, unstage, expand and
//! stats for NVMe/TCP volumes, over the `nvme` crate's data path.
//!
//! Generic over the host traits ([`nvme::Exec`], [`nvme::Sys`]), so every
//! decision runs against the recording fake in tests. Every RPC validates
//! its input first (INVALID_ARGUMENT), holds the volume's guard for its
//! whole duration (a concurrent call for the same volume gets ABORTED), is
//! idempotent, and runs detached from the RPC: when kubelet's deadline
//! cancels a call, a mkfs or mount in flight finishes (and keeps the guard)
//! instead of being killed halfway.
//!
//! Safety rules the node keeps (the failures behind them are in
//! docs/safety.md):
//! - a filesystem is made only on a definitively empty device, never on a
//!   volume whose context says `formatted=true` (in `nvme::format`;
//!   docs/safety.md#formatting-over-data),
//!   nor on one whose durable format record (the PV annotation, see
//!   [`format_record`]) says it was formatted; the record is read before the
//!   probe and written before a stage that found or made a filesystem
//!   returns;
//! - a raw block volume is published as a device node made with mknod,
//!   never as a bind mount of `/dev`
//!   (docs/safety.md#device-nodes-not-bind-mounts);
//! - every mount decision is taken on the mount table as read now; a path
//!   is only ever removed with rmdir/unlink after it is no longer a mount
//!   point, never recursively
//!   (docs/safety.md#stacked-mounts-and-recursive-deletes);
//! - only subsystems whose NQN is the NQN prefix followed by a volume ID
//!   with the volume-ID prefix are ever disconnected, and a connection
//!   without a device is never torn down while the volume is mounted or
//!   published (docs/safety.md#subsystems-the-driver-does-not-own);
//! - the NQN is resolved to a device through sysfs on every call, and a
//!   mount whose device is not the NQN's current device is stale
//!   (docs/safety.md#renumbered-devices).
//!
//! The decisions themselves are pure functions in [`decide`]; each RPC has
//! its module (stage, publish with unpublish, unstage, stats, expand), with
//! recovery and the orphan sweep beside them.

mod context;
pub mod decide;
mod error;
pub mod events;
mod expand;
pub mod format_record;
mod orphans;
mod publish;
mod recovery;
mod stage;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod unstage;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nvme::mount::{classify, parse_mount_flags, MountOptions, MountState};
use nvme::mountinfo::{is_mount_point, mounts_of, Mount};
use nvme::{BlockDevice, DataPath, DevId, Deviceless, Exec, FileKind, FsType, MsFlags, Sys};
use tonic::{Request, Response, Status};
use tracing::{debug, info, instrument, warn, Instrument, Level};

use attachment_manager::EventKind;

use crate::controller::VolumeLocks;
use crate::error::chain;
use crate::metrics::RpcMetrics;
use crate::proto::{self, node_server::Node};
use crate::rpc;

pub use context::FORMATTED;
use context::{
    abs_path, capability, optional_abs_path, volume_id, volume_path, volume_target, Cap,
};
pub use events::NodeEvents;
use events::{FORMAT_REFUSED, MOUNT_FAILED, STALE_MOUNT_RECOVERED};
pub use format_record::FormatRecord;
use state::{Records, Stored, VolumeRecord};

use error::{dp, host};
pub use error::{NodeError, NodeResult};
pub use orphans::{OrphanCleanup, OrphanReport};

/// Node settings, from flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub max_volumes: i64,
    /// The node's topology segments: the default backend's, and one for
    /// each other backend it can reach.
    pub topology: Vec<(String, String)>,
    /// Where the node keeps one record per staged volume.
    pub state_dir: PathBuf,
    /// Kubelet's root directory: the orphan cleaner looks for device nodes
    /// of raw block volumes under it.
    pub staging_root: PathBuf,
    /// Upper bound for a volume's ctrlLossTmo (-1, "forever", included):
    /// an unreachable target can hold a reboot that long
    /// (docs/safety.md#controller-loss-timeout).
    pub max_ctrl_loss_tmo: Option<i32>,
}

pub struct NodeService<E, S> {
    inner: Arc<Inner<E, S>>,
}

/// Another handle on the same service (the periodic orphan scan shares
/// the RPCs' volume locks).
impl<E, S> Clone for NodeService<E, S> {
    fn clone(&self) -> Self {
        NodeService {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E, S> {
    config: NodeConfig,
    dp: DataPath<E, S>,
    locks: VolumeLocks,
    metrics: RpcMetrics,
    events: NodeEvents,
    /// Where the node records that a volume was formatted; none: the
    /// probe alone decides.
    format_record: Option<Arc<dyn FormatRecord>>,
}

impl<E: Exec, S: Sys> NodeService<E, S> {
    /// A node service whose events are only logged.
    pub fn new(config: NodeConfig, data_path: DataPath<E, S>, metrics: RpcMetrics) -> Self {
        Self::with_events(config, data_path, metrics, NodeEvents::log_only())
    }

    /// A node service that records events on PVCs through `events`.
    pub fn with_events(
        config: NodeConfig,
        data_path: DataPath<E, S>,
        metrics: RpcMetrics,
        events: NodeEvents,
    ) -> Self {
        NodeService {
            inner: Arc::new(Inner {
                config,
                dp: data_path,
                locks: VolumeLocks::default(),
                metrics,
                events,
                format_record: None,
            }),
        }
    }

    /// Keeps the durable format record in `record`: read before any mkfs,
    /// written before a stage that made or found a filesystem returns.
    pub fn with_format_record(mut self, record: Arc<dyn FormatRecord>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_format_record is called before the service is shared")
            .format_record = Some(record);
        self
    }

    async fn call<T, Fut>(
        &self,
        method: &'static str,
        volume: &str,
        work: impl FnOnce(Arc<Inner<E, S>>) -> Fut,
    ) -> Result<Response<T>, Status>
    where
        T: Send + 'static,
        Fut: Future<Output = NodeResult<T>> + Send + 'static,
    {
        let work = work(self.inner.clone());
        let vol = volume.to_string();
        let detached = async move {
            let handle = tokio::spawn(
                async move {
                    // Where the time went, step by step (`node_steps=debug`).
                    let (result, steps) = nvme::steps::record(work).await;
                    debug!(
                        target: "node_steps",
                        rpc = %method,
                        volume = %vol,
                        ok = result.is_ok(),
                        total_ms = (steps.total().as_secs_f64() * 10_000.0).round() / 10.0,
                        steps = %steps,
                        "timing"
                    );
                    result
                }
                .instrument(tracing::Span::current()),
            );
            match handle.await {
                Ok(r) => r,
                Err(source) => Err(NodeError::Unfinished {
                    rpc: method,
                    source,
                }),
            }
        };
        let log = rpc::Log {
            volume: Some(volume),
            done: Some(match method {
                "NodeGetVolumeStats" => Level::DEBUG,
                _ => Level::INFO,
            }),
        };
        rpc::run(&self.inner.metrics, method, log, detached).await
    }
}

/// What a volume RPC's own fields are checked against: its volume ID
/// (checked first), and this node's NQN prefix and controller-loss bound.
pub(super) struct Checks<'a> {
    id: &'a str,
    prefix: &'a nvme::NqnPrefix,
    max_ctrl_loss_tmo: Option<i32>,
}

impl Checks<'_> {
    /// The volume's NVMe/TCP target from its contexts.
    fn target(
        &self,
        volume_ctx: &HashMap<String, String>,
        publish_ctx: &HashMap<String, String>,
    ) -> NodeResult<context::VolumeTarget> {
        volume_target(
            self.id,
            volume_ctx,
            publish_ctx,
            self.prefix,
            self.max_ctrl_loss_tmo,
        )
    }
}

/// A volume RPC past its opening (`Inner::serve`): the request checked,
/// the volume's guard held, its record read.
pub(super) struct Opened<A> {
    id: String,
    /// The RPC's own fields, checked.
    args: A,
    /// The volume's record, when it is staged here.
    rec: Option<VolumeRecord>,
    /// The volume's NQN: the record's, or the prefix and the volume ID.
    nqn: String,
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl<E: Exec, S: Sys> Inner<E, S> {
    /// Records an event about a staged volume on its PVC (from the record),
    /// in the background: never waits, never fails the RPC.
    fn report(&self, rec: &VolumeRecord, kind: EventKind, reason: &'static str, what: String) {
        self.events.report(events::volume_event(
            &rec.volume_id,
            rec.pvc.clone(),
            &self.config.node_id,
            kind,
            reason,
            what,
        ));
    }

    /// A failed mount: reported, then returned.
    fn mount_failed(&self, rec: &VolumeRecord, e: NodeError) -> NodeError {
        self.report(
            rec,
            EventKind::Warning,
            MOUNT_FAILED,
            format!("mounting volume {} failed: {}", rec.volume_id, chain(&e)),
        );
        e
    }

    /// The opening every volume RPC shares, then `run`: the volume ID and
    /// the RPC's own `check` of its other fields (INVALID_ARGUMENT before
    /// anything else happens), the volume's guard for the whole RPC, and
    /// its record.
    async fn serve<R, A, T, Fut>(
        &self,
        req: &R,
        volume: &str,
        check: impl FnOnce(&R, &Checks) -> NodeResult<A>,
        run: impl FnOnce(Opened<A>) -> Fut,
    ) -> NodeResult<T>
    where
        Fut: Future<Output = NodeResult<T>>,
    {
        let id = volume_id(volume)?;
        let args = check(
            req,
            &Checks {
                id: &id,
                prefix: self.dp.prefix(),
                max_ctrl_loss_tmo: self.config.max_ctrl_loss_tmo,
            },
        )?;
        let _guard = self.lock(&id)?;
        let rec = self.record(&id).await?;
        let nqn = rec
            .as_ref()
            .map(|r| r.nqn.clone())
            .unwrap_or_else(|| self.dp.prefix().volume_nqn(&id));
        run(Opened { id, args, rec, nqn }).await
    }

    /// The volume's guard for the whole RPC: a concurrent call for the
    /// same volume is refused (ABORTED), never queued.
    fn lock(&self, id: &str) -> NodeResult<attachment_manager::VolumeGuard> {
        self.locks.try_lock(id).map_err(|_| NodeError::Busy {
            volume: id.to_string(),
        })
    }

    fn records(&self) -> Records<'_, S> {
        Records {
            sys: self.dp.sys(),
            dir: &self.config.state_dir,
        }
    }

    /// A failure to `action` the record of `volume` in the state directory.
    fn record_error(
        &self,
        action: &'static str,
        volume: &str,
    ) -> impl FnOnce(std::io::Error) -> NodeError {
        let (volume, dir) = (volume.to_string(), Some(self.config.state_dir.clone()));
        move |source| NodeError::Record {
            action,
            volume,
            dir,
            source,
        }
    }

    async fn record(&self, id: &str) -> NodeResult<Option<VolumeRecord>> {
        let stored = self
            .records()
            .load(id)
            .await
            .map_err(self.record_error("read", id))?;
        Ok(match stored {
            Some(Stored::Record(r)) => Some(*r),
            Some(Stored::Unreadable { error, .. }) => {
                warn!(volume = id, error, "ignoring an unreadable volume record");
                None
            }
            None => None,
        })
    }

    async fn save(&self, r: &VolumeRecord) -> NodeResult<()> {
        self.records()
            .save(r)
            .await
            .map_err(self.record_error("write", &r.volume_id))
    }

    async fn mounts(&self) -> NodeResult<Vec<Mount>> {
        self.dp.mounts().await.map_err(dp("read the mount table"))
    }

    async fn resolve(&self, nqn: &str) -> NodeResult<nvme::Subsystem> {
        self.dp
            .resolve(nqn)
            .await
            .map_err(dp(format!("look up {nqn} in sysfs")))
    }

    async fn lstat(&self, p: &Path) -> NodeResult<Option<nvme::FileStat>> {
        match self.dp.sys().lstat(p).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if not_found(&e) => Ok(None),
            Err(source) => Err(host("stat", p)(source)),
        }
    }
    // ---------------------------------------------------------------- unstage

    /// Whether a publish target still holds the volume.
    async fn still_published(
        &self,
        t: &Path,
        devs: &[DevId],
        mounts: &[Mount],
    ) -> NodeResult<bool> {
        let existing = self.lstat(t).await?;
        Ok(decide::still_published(
            existing.as_ref(),
            is_mount_point(mounts, t),
            devs,
        ))
    }

    /// The first publish target other than `target` that still holds the
    /// volume.
    async fn published_elsewhere(
        &self,
        rec: &VolumeRecord,
        target: &Path,
    ) -> NodeResult<Option<PathBuf>> {
        let devs = self.resolve(&rec.nqn).await?.dev_ids();
        let mounts = self.mounts().await?;
        for t in rec.targets.keys().filter(|t| *t != target) {
            if self.still_published(t, &devs, &mounts).await? {
                return Ok(Some(t.clone()));
            }
        }
        Ok(None)
    }

    /// What a connect may do with a connection that has no block device:
    /// while the staging path or a publish target of the volume is a mount
    /// point, or a target is a device node, the connection is never torn
    /// down (the mounts would lose their I/O for good); the RPC answers
    /// UNAVAILABLE and kubelet retries while the kernel reconnects.
    async fn deviceless(&self, rec: &VolumeRecord) -> NodeResult<Deviceless> {
        let mounts = self.mounts().await?;
        let mut in_use = is_mount_point(&mounts, &rec.staging_path);
        for t in rec.targets.keys() {
            if in_use {
                break;
            }
            in_use = is_mount_point(&mounts, t)
                || self
                    .lstat(t)
                    .await?
                    .is_some_and(|st| st.kind == FileKind::BlockDevice);
        }
        Ok(if in_use {
            Deviceless::Keep
        } else {
            Deviceless::Reconnect
        })
    }

    async fn unlink(&self, p: &Path) -> NodeResult<()> {
        self.dp
            .sys()
            .remove_file(p)
            .await
            .map_err(host("remove", p))
    }

    /// rmdir, never recursive: a directory that is not empty stays.
    async fn rmdir(&self, p: &Path) -> NodeResult<()> {
        match self.dp.sys().remove_dir(p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                Err(NodeError::DirectoryNotEmpty {
                    path: p.to_path_buf(),
                })
            }
            Err(source) => Err(host("remove directory", p)(source)),
        }
    }
}

/// What NodeGetCapabilities announces.
const CAPABILITIES: [proto::node_service_capability::rpc::Type; 5] = {
    use proto::node_service_capability::rpc::Type as T;
    [
        T::StageUnstageVolume,
        T::ExpandVolume,
        T::GetVolumeStats,
        T::VolumeCondition,
        T::SingleNodeMultiWriter,
    ]
};

fn node_capability(t: proto::node_service_capability::rpc::Type) -> proto::NodeServiceCapability {
    proto::NodeServiceCapability {
        r#type: Some(proto::node_service_capability::Type::Rpc(
            proto::node_service_capability::Rpc { r#type: t as i32 },
        )),
    }
}

/// The Node service. The six volume RPCs are served alike (one line
/// each below): the request's volume ID names the span and the log lines,
/// and the work runs detached in [`Inner`] through `NodeService::call`:
/// first the opening they share (`Inner::serve`) with the RPC's own check
/// of its fields, then the RPC.
macro_rules! node_service {
    (
        volume RPCs {
            $($rpc:ident($req:ident) -> $resp:ident = $name:literal by $check:path, $work:ident;)*
        }
        $($other:tt)*
    ) => {
        #[tonic::async_trait]
        impl<E: Exec, S: Sys> Node for NodeService<E, S> {
            $(
                #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
                async fn $rpc(
                    &self,
                    request: Request<proto::$req>,
                ) -> Result<Response<proto::$resp>, Status> {
                    let req = request.into_inner();
                    let volume = req.volume_id.clone();
                    self.call($name, &volume, move |i| async move {
                        i.serve(&req, &req.volume_id, $check, |v| i.$work(v)).await
                    })
                    .await
                }
            )*

            $($other)*
        }
    };
}

node_service! {
    volume RPCs {
        node_stage_volume(NodeStageVolumeRequest) -> NodeStageVolumeResponse = "NodeStageVolume" by stage::stage_args, stage;
        node_unstage_volume(NodeUnstageVolumeRequest) -> NodeUnstageVolumeResponse = "NodeUnstageVolume" by unstage::unstage_args, unstage;
        node_publish_volume(NodePublishVolumeRequest) -> NodePublishVolumeResponse = "NodePublishVolume" by publish::publish_args, publish;
        node_unpublish_volume(NodeUnpublishVolumeRequest) -> NodeUnpublishVolumeResponse = "NodeUnpublishVolume" by publish::unpublish_args, unpublish;
        node_get_volume_stats(NodeGetVolumeStatsRequest) -> NodeGetVolumeStatsResponse = "NodeGetVolumeStats" by stats::stats_args, stats;
        node_expand_volume(NodeExpandVolumeRequest) -> NodeExpandVolumeResponse = "NodeExpandVolume" by expand::expand_args, expand;
    }

    async fn node_get_capabilities(
        &self,
        _r: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: CAPABILITIES.into_iter().map(node_capability).collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _r: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.inner.config.node_id.clone(),
            max_volumes_per_node: self.inner.config.max_volumes,
            accessible_topology: Some(proto::Topology {
                segments: self.inner.config.topology.iter().cloned().collect(),
            }),
        }))
    }
}
