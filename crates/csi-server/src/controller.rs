//! The CSI Controller service: volumes on the RDS and who may attach them.
//!
//! Every RPC validates all of its input before the backend is asked
//! anything, holds the per-volume guard for its whole duration (a second
//! call for the same volume gets ABORTED), and is idempotent: a repeat of a
//! finished call returns the same success.

mod capabilities;
mod error;
mod fencing;
mod listing;
mod publish;
mod snapshots;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use attachment_manager::{
    AccessKind, Manager, ManagerError, NodeStatus, NodeView, PublishDecision, PublishRequest,
    Refusal, UnpublishDecision,
};
use storage::{ClusterId, CopyMethod, IdPrefix, Nqn, VolumeId, VolumeMeta};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};
use vmi_grouper::KubeVirt;

use crate::backend::{Backend, CopySpec, Export, NewVolume, Place, PoolInfo, Volume};
use crate::metrics::RpcMetrics;
use crate::params::{self, allocation_size, FsType, ParamDefaults, VolumeParams};
use crate::proto::{self, controller_server::Controller};
use crate::snapshot::{SnapshotInfo, VolumeLayout, SNAPSHOT_PREFIX};

/// Controller settings, from flags.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub defaults: ParamDefaults,
    pub max_volume_bytes: u64,
    /// Only volumes whose ID starts with this prefix are created and listed.
    pub volume_id_prefix: IdPrefix,
    pub nqn_prefix: String,
    /// Topology segment every volume is accessible from.
    pub topology: (String, String),
    pub max_list_entries: usize,
    /// What every volume and snapshot ID of this backend starts with
    /// before the volume prefix or `snap-`: empty for the default backend
    /// (Go-compatible IDs), `<name>-` for the other named backends of one
    /// controller, so an ID alone says where its volume lives.
    pub qualifier: String,
}

impl ControllerConfig {
    /// The pool volumes are made in, for capacity and what it can do (on
    /// the RDS: the mount point of the volume path root).
    pub fn pool(&self) -> String {
        self.defaults.volume_path_root.mount_point().to_string()
    }

    /// The ID CreateSnapshot gives request name `name` on this backend.
    pub fn snapshot_id(&self, name: &str) -> VolumeId {
        let id = crate::snapshot::snapshot_id(name);
        if self.qualifier.is_empty() {
            return id;
        }
        VolumeId::new(&format!("{}{id}", self.qualifier))
            .expect("a qualifier and snap-<uuid> make a valid ID")
    }

    /// Whether `id` is a snapshot ID of this backend's.
    pub fn is_snapshot_id(&self, id: &str) -> bool {
        id.strip_prefix(self.qualifier.as_str())
            .is_some_and(|rest| rest.starts_with(SNAPSHOT_PREFIX))
    }

    /// What this backend's snapshot IDs start with, to list them.
    pub fn snapshot_prefix(&self) -> IdPrefix {
        IdPrefix::new(&format!("{}{SNAPSHOT_PREFIX}", self.qualifier))
            .expect("a qualifier and snap- make a valid prefix")
    }
}

/// The default live-migration window when the volume context has none.
pub const DEFAULT_MIGRATION_TIMEOUT: Duration =
    Duration::from_secs(params::DEFAULT_MIGRATION_TIMEOUT as u64);

pub struct ControllerService<B> {
    config: ControllerConfig,
    /// Where volumes live: the RDS, or the in-memory fake in unit tests.
    backend: Arc<B>,
    /// The cluster's nodes: present, fenced, and their NVMe host NQNs.
    nodes: Arc<dyn NodeView>,
    /// Who may attach a volume: the attachment rules, their persisted
    /// state and the per-volume guards.
    manager: Arc<Manager>,
    /// Finds the VM using a PVC, so the publishes of one VM run one at a
    /// time; none without KubeVirt.
    grouper: Option<KubeVirt>,
    metrics: RpcMetrics,
    /// Written on every disk CreateVolume makes (`--cluster-id`); may
    /// become known only after start (read from the API server).
    cluster_id: Option<Arc<OnceLock<ClusterId>>>,
    /// What the pool can do, read once (at start, or when first needed).
    pool_info: OnceLock<PoolInfo>,
    /// Byte copies running: target disk -> source volume. A source is not
    /// published while a copy reads it; refilled at start from the copy
    /// marks on the RDS.
    copies: std::sync::Mutex<HashMap<String, String>>,
    /// What this controller knows about volumes and snapshots to save
    /// RouterOS commands: each volume's layout (it never changes) and the
    /// snapshots it answered not ready yet (their next ask looks them up
    /// first). Empty after a restart, which only costs commands.
    known: std::sync::Mutex<snapshots::Known>,
    /// Volumes whose open sessions must be cut and whose cut has not yet
    /// succeeded: a retry cuts even though the list it finds is already
    /// right. Lost on restart (docs/attachments.md#fencing-at-the-target).
    pending_cuts: std::sync::Mutex<std::collections::HashSet<String>>,
}

use capabilities::Offer;
pub use capabilities::{validate_capabilities, Caps};
pub use error::{ControllerError, ControllerResult, Mismatch, Step};

/// The per-volume guard, shared by the controller and node services.
pub use attachment_manager::VolumeLocks;

impl<B: Backend> ControllerService<B> {
    pub fn new(
        config: ControllerConfig,
        backend: Arc<B>,
        nodes: Arc<dyn NodeView>,
        manager: Arc<Manager>,
        grouper: Option<KubeVirt>,
        metrics: RpcMetrics,
    ) -> Self {
        ControllerService {
            config,
            backend,
            nodes,
            manager,
            grouper,
            metrics,
            cluster_id: None,
            pool_info: OnceLock::new(),
            copies: Default::default(),
            known: Default::default(),
            pending_cuts: Default::default(),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// What the pool can do, read from the backend the first time.
    async fn pool_info(&self) -> ControllerResult<PoolInfo> {
        if let Some(info) = self.pool_info.get() {
            return Ok(info.clone());
        }
        let pool = self.config.pool();
        let info = self
            .backend
            .pool_info(&pool)
            .await
            .map_err(Step::PoolInfo(pool).failed())?;
        Ok(self.pool_info.get_or_init(|| info).clone())
    }

    /// Reads the pool's file system and logs the copy methods it allows;
    /// called at start, so the first snapshot does not pay for it. A failure
    /// is logged and the read retried when needed.
    pub async fn detect_pool(&self) {
        if let Err(e) = self.find_running_copies().await {
            tracing::warn!(error = %crate::error::chain(&e), "could not look for byte copies still running");
        }
        match self.pool_info().await {
            Ok(pool) => {
                self.metrics.set_copy_methods(&pool.methods);
                let methods: Vec<&str> = pool.methods.iter().map(|m| m.as_str()).collect();
                info!(pool = %self.config.pool(), kind = %pool.kind, methods = ?methods, "storage pool detected");
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "could not read the storage pool's file system yet")
            }
        }
    }

    /// Where a new volume or snapshot `id` goes and where its data will
    /// be: the subvolume layout is refused unless the pool allows it.
    async fn place(
        &self,
        id: &VolumeId,
        layout: VolumeLayout,
        dir: &routeros::RosPath,
    ) -> ControllerResult<(String, Place)> {
        if layout != VolumeLayout::Flat {
            let pool = self.pool_info().await?;
            if !pool.allows(layout) {
                return Err(ControllerError::LayoutNeedsBtrfs {
                    pool: self.config.pool(),
                    fs: pool.kind,
                });
            }
        }
        let place = Place {
            dir: dir.to_string(),
            layout,
        };
        let location = self
            .backend
            .location(id, &place)
            .map_err(|e| ControllerError::invalid("volumePath", e.to_string()))?;
        Ok((location, place))
    }

    /// Removes a volume or snapshot `id` (`known`: as just looked up) and
    /// its image, or what an earlier attempt left of them.
    async fn remove(
        &self,
        id: &VolumeId,
        known: Option<&Volume>,
        step: Step,
    ) -> ControllerResult<()> {
        self.backend
            .delete_volume(id, known)
            .await
            .map_err(step.failed())?;
        self.forget_copy(id);
        self.forget(id);
        Ok(())
    }

    /// The identity written on every disk this controller makes.
    fn cluster(&self) -> ControllerResult<Option<ClusterId>> {
        match &self.cluster_id {
            None => Ok(None),
            Some(id) => Ok(Some(
                id.get().cloned().ok_or(ControllerError::ClusterIdUnknown)?,
            )),
        }
    }

    /// Every disk CreateVolume makes carries the identity in its comment:
    /// the orphan sweep considers only disks with its own cluster's
    /// identity. Until `id` is set, CreateVolume of a new volume answers
    /// UNAVAILABLE rather than make a disk no cluster owns.
    pub fn with_cluster_id(mut self, id: Arc<OnceLock<ClusterId>>) -> Self {
        self.cluster_id = Some(id);
        self
    }

    /// Looks a volume up on the backend: `None` only when the backend
    /// answered that it is absent.
    async fn lookup(&self, slot: &VolumeId) -> ControllerResult<Option<Volume>> {
        self.backend
            .get_volume(slot)
            .await
            .map_err(Step::Lookup(slot.clone()).failed())
    }

    /// A volume that must exist: NOT_FOUND otherwise.
    async fn existing(&self, slot: &VolumeId) -> ControllerResult<Volume> {
        self.lookup(slot)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound {
                volume: slot.clone(),
            })
    }

    fn lock(&self, volume: &VolumeId) -> ControllerResult<attachment_manager::VolumeGuard> {
        self.manager
            .locks()
            .try_lock(volume.as_str())
            .map_err(ControllerError::from)
    }

    /// The volume ID in request field `field`: a valid slot with the
    /// configured prefix, so a disk this driver would not have created is
    /// never touched.
    fn slot(&self, field: &'static str, id: &str) -> ControllerResult<VolumeId> {
        ControllerError::require(field, id)?;
        let slot = VolumeId::new(id).map_err(|e| ControllerError::invalid(field, e.to_string()))?;
        if !self.config.volume_id_prefix.matches(slot.as_str()) {
            return Err(ControllerError::NotManaged {
                field,
                volume: slot,
                prefix: self.config.volume_id_prefix.clone(),
            });
        }
        Ok(slot)
    }

    /// Refuses until the attachment state is rebuilt from the cluster:
    /// before then, who holds a volume is unknown.
    fn ready(&self) -> ControllerResult<()> {
        if self.manager.is_ready() {
            Ok(())
        } else {
            Err(ManagerError::NotReady.into())
        }
    }

    fn volume_id(&self, id: &str) -> ControllerResult<VolumeId> {
        self.slot("volume_id", id)
    }

    fn topology(&self) -> Vec<proto::Topology> {
        let (k, v) = &self.config.topology;
        vec![proto::Topology {
            segments: HashMap::from([(k.clone(), v.clone())]),
        }]
    }

    fn volume_of(&self, disk: &Volume, context: HashMap<String, String>) -> proto::Volume {
        proto::Volume {
            capacity_bytes: disk.size_bytes as i64,
            volume_id: disk.id.clone(),
            volume_context: context,
            content_source: None,
            accessible_topology: self.topology(),
        }
    }

    async fn create(
        &self,
        req: proto::CreateVolumeRequest,
    ) -> ControllerResult<proto::CreateVolumeResponse> {
        ControllerError::require("name", &req.name)?;
        let slot = self.slot("name", &format!("{}{}", self.config.qualifier, req.name))?;
        if req.name.starts_with(SNAPSHOT_PREFIX) {
            return Err(ControllerError::invalid(
                "name",
                format!("{SNAPSHOT_PREFIX} is reserved for snapshot IDs"),
            ));
        }
        let caps = validate_capabilities(&req.volume_capabilities)?;
        let source = snapshots::Source::of(req.volume_content_source.as_ref())?;
        if let Some(source) = &source {
            source.check(self)?;
        }
        let mut vp = VolumeParams::parse(&req.parameters, &self.config.defaults)?;
        if let Some(fs) = caps.fs_type {
            if vp.fs_type.is_some_and(|p| p != fs) {
                return Err(ControllerError::invalid(
                    "volume_capabilities",
                    "mount fs_type differs from the csi.storage.k8s.io/fstype parameter",
                ));
            }
            vp.fs_type = Some(fs);
        }
        self.check_topology(req.accessibility_requirements.as_ref())?;
        let range = req.capacity_range.unwrap_or_default();
        let size = allocation_size(
            range.required_bytes,
            range.limit_bytes,
            self.config.max_volume_bytes,
        )?;
        let (file, place) = self.place(&slot, vp.layout, &vp.volume_path).await?;
        let nqn = Nqn::for_volume(&self.config.nqn_prefix, &slot)
            .map_err(|e| ControllerError::invalid("name", e.to_string()))?;

        let _guard = self.lock(&slot)?;
        // Look first: "absent" only when the RDS said so. An unreachable RDS
        // fails here and never leads to a second disk.
        let existing = self.lookup(&slot).await?;
        let disk = match existing {
            Some(disk) => {
                let disk = self.settle_copy(disk).await?;
                if let Some(progress) = snapshots::still_copying(&disk) {
                    return Err(ControllerError::CopyRunning {
                        volume: slot,
                        from: disk.meta.copy_of.map(|s| s.to_string()).unwrap_or_default(),
                        progress,
                    });
                }
                if let Some(differs) = Self::mismatch(&disk, &range, &file, &vp, &nqn) {
                    return Err(ControllerError::ExistsDifferently {
                        volume: disk.id,
                        differs,
                    });
                }
                info!(volume = %slot, "volume already exists with compatible size; returning it");
                disk
            }
            None if source.is_some() => {
                let made = snapshots::Made {
                    slot: &slot,
                    place: &place,
                    nqn: &nqn,
                    port: vp.nvme_port,
                };
                let disk = self
                    .restore(source.as_ref().expect("checked"), &made, &range, size, &vp)
                    .await?;
                self.remember_layout(&slot, vp.layout);
                disk
            }
            None => {
                let cluster = self.cluster()?;
                let spec = NewVolume {
                    id: slot.clone(),
                    size_bytes: size,
                    export: Export {
                        nqn: nqn.clone(),
                        port: vp.nvme_port,
                    },
                    place: place.clone(),
                    // Whose volume it is and since when, for the orphan sweep.
                    meta: VolumeMeta::created(jiff::Timestamp::now(), cluster),
                };
                self.backend
                    .create_volume(&spec)
                    .await
                    .map_err(Step::Create(slot.clone()).failed())?;
                info!(volume = %slot, bytes = size, location = %file, "volume created");
                self.remember_layout(&slot, vp.layout);
                Volume {
                    id: slot.to_string(),
                    size_bytes: size,
                    location: Some(file),
                    layout: vp.layout,
                    nqn: Some(nqn.to_string()),
                    port: Some(vp.nvme_port),
                    exported: true,
                    meta: spec.meta,
                    busy: None,
                    // A fencing backend made it admitting nobody.
                    allowed_hosts: self.fencing().then(Vec::new),
                }
            }
        };
        let mut disk = disk;
        self.fence_new(&mut disk).await?;
        self.manager.recent_creates().note(slot.as_str());
        let mut volume = self.volume_of(&disk, vp.volume_context(nqn.as_str()));
        volume.content_source = req.volume_content_source;
        Ok(proto::CreateVolumeResponse {
            volume: Some(volume),
        })
    }

    /// How an existing volume differs from what CreateVolume asks for,
    /// if it does.
    fn mismatch(
        disk: &Volume,
        range: &proto::CapacityRange,
        file: &str,
        vp: &VolumeParams,
        nqn: &Nqn,
    ) -> Option<Mismatch> {
        let size = disk.size_bytes;
        let too_small = size < range.required_bytes.max(0) as u64;
        let too_big = range.limit_bytes > 0 && size > range.limit_bytes as u64;
        if too_small || too_big {
            return Some(Mismatch::Size {
                size,
                required: range.required_bytes,
                limit: range.limit_bytes,
            });
        }
        if let Some(at) = disk.location.as_ref().filter(|f| *f != file) {
            return Some(Mismatch::Path {
                at: at.clone(),
                wanted: file.to_string(),
            });
        }
        let other_export = disk.port.is_some_and(|p| p != vp.nvme_port)
            || disk.nqn.as_deref().is_some_and(|n| n != nqn.as_str());
        other_export.then_some(Mismatch::Export)
    }

    fn check_topology(&self, req: Option<&proto::TopologyRequirement>) -> ControllerResult<()> {
        let Some(req) = req else { return Ok(()) };
        if req.requisite.is_empty() {
            return Ok(());
        }
        let (k, v) = &self.config.topology;
        // A segment without the key says nothing about the default backend
        // (nodes of older releases); another backend's key is reported only
        // by the nodes that reach it, so its absence means "not from here".
        let named = !self.config.qualifier.is_empty();
        let reachable = req.requisite.iter().any(|t| match t.segments.get(k) {
            Some(val) => val == v,
            None => !named,
        });
        if reachable {
            Ok(())
        } else {
            Err(ControllerError::TopologyUnreachable {
                key: k.clone(),
                value: v.clone(),
            })
        }
    }

    async fn delete(
        &self,
        req: proto::DeleteVolumeRequest,
    ) -> ControllerResult<proto::DeleteVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        let _guard = self.lock(&slot)?;
        // Deleting a volume that may still be attached destroys a VM's
        // disk: without the rebuilt state, refuse.
        self.ready()?;
        let holders = self.manager.holders(slot.as_str());
        if !holders.is_empty() {
            return Err(ControllerError::StillPublished {
                volume: slot,
                nodes: holders,
            });
        }
        let known = self.lookup(&slot).await?;
        self.remove(&slot, known.as_ref(), Step::Delete(slot.clone()))
            .await?;
        info!(volume = %slot, existed = known.is_some(), "volume deleted");
        Ok(proto::DeleteVolumeResponse {})
    }

    async fn capacity(
        &self,
        req: proto::GetCapacityRequest,
    ) -> ControllerResult<proto::GetCapacityResponse> {
        validate_capabilities(&req.volume_capabilities).or_else(|e| {
            if req.volume_capabilities.is_empty() {
                Ok(Caps::default())
            } else {
                Err(e)
            }
        })?;
        let vp = VolumeParams::parse(&req.parameters, &self.config.defaults)?;
        if let Some(t) = &req.accessible_topology {
            let (k, v) = &self.config.topology;
            if t.segments.get(k).is_some_and(|val| val != v) {
                return Ok(proto::GetCapacityResponse {
                    available_capacity: 0,
                    maximum_volume_size: None,
                    minimum_volume_size: None,
                });
            }
        }
        let pool = vp.volume_path.mount_point().to_string();
        let cap = self
            .backend
            .capacity(&pool)
            .await
            .map_err(Step::Capacity(pool.clone()).failed())?;
        Ok(proto::GetCapacityResponse {
            available_capacity: cap.free_bytes.min(i64::MAX as u64) as i64,
            maximum_volume_size: Some(
                self.config
                    .max_volume_bytes
                    .min(cap.free_bytes)
                    .min(i64::MAX as u64) as i64,
            ),
            minimum_volume_size: Some(params::MIN_VOLUME_BYTES as i64),
        })
    }

    async fn expand(
        &self,
        req: proto::ControllerExpandVolumeRequest,
    ) -> ControllerResult<proto::ControllerExpandVolumeResponse> {
        self.offers(Offer::Expansion)?;
        let slot = self.volume_id(&req.volume_id)?;
        let range = req
            .capacity_range
            .ok_or_else(|| ControllerError::invalid("capacity_range", "must be given"))?;
        let block = match &req.volume_capability {
            Some(cap) => validate_capabilities(std::slice::from_ref(cap))?.block,
            None => false,
        };
        let size = allocation_size(
            range.required_bytes,
            range.limit_bytes,
            self.config.max_volume_bytes,
        )?;
        let _guard = self.lock(&slot)?;
        let disk = self.existing(&slot).await?;
        let mut capacity = disk.size_bytes;
        if size > disk.size_bytes {
            let step = Step::Expand {
                volume: slot.clone(),
                bytes: size,
            };
            self.backend
                .expand_volume(&slot, size)
                .await
                .map_err(step.failed())?;
            info!(volume = %slot, from = disk.size_bytes, to = size, "volume expanded");
            capacity = size;
        } else if range.limit_bytes > 0 && disk.size_bytes > range.limit_bytes as u64 {
            return Err(ControllerError::Size(params::SizeError::NoAlignedSize {
                required: range.required_bytes as u64,
                limit: range.limit_bytes as u64,
            }));
        }
        Ok(proto::ControllerExpandVolumeResponse {
            capacity_bytes: capacity as i64,
            node_expansion_required: !block,
        })
    }
}

/// The Controller service, one row per RPC. Every RPC the driver offers
/// runs its method through the shared outcome handling ([`crate::rpc::run`]:
/// metrics and the log line by method and code, the status with the whole
/// cause chain) inside a span with the request fields named in the row. A
/// row: the trait method, its request and response types, the method name
/// in metrics and logs, the method that does the work, and the span
/// fields (span field = request field). The rest answer UNIMPLEMENTED.
macro_rules! controller_service {
    (
        rpcs {
            $( $method:ident($req:ident) -> $resp:ident = $name:literal by $work:ident,
               span($($($span:ident).+ = $field:ident),*); )*
        }
        unimplemented {
            $( $umethod:ident($ureq:ident) -> $uresp:ident = $why:literal; )*
        }
    ) => {
        #[tonic::async_trait]
        impl<B: Backend> Controller for ControllerService<B> {
            $(
                #[instrument(skip_all, fields($($($span).+ = %request.get_ref().$field),*))]
                async fn $method(
                    &self,
                    request: Request<proto::$req>,
                ) -> Result<Response<proto::$resp>, Status> {
                    let work = self.$work(request.into_inner());
                    crate::rpc::run(&self.metrics, $name, crate::rpc::Log::default(), work).await
                }
            )*
            $(
                async fn $umethod(
                    &self,
                    _request: Request<proto::$ureq>,
                ) -> Result<Response<proto::$uresp>, Status> {
                    Err(Status::unimplemented($why))
                }
            )*
        }
    };
}

controller_service! {
    rpcs {
        create_volume(CreateVolumeRequest) -> CreateVolumeResponse = "CreateVolume" by create, span(volume.name = name);
        delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse = "DeleteVolume" by delete, span(volume.id = volume_id);
        controller_publish_volume(ControllerPublishVolumeRequest) -> ControllerPublishVolumeResponse = "ControllerPublishVolume" by publish, span(volume.id = volume_id, node.id = node_id);
        controller_unpublish_volume(ControllerUnpublishVolumeRequest) -> ControllerUnpublishVolumeResponse = "ControllerUnpublishVolume" by unpublish, span(volume.id = volume_id, node.id = node_id);
        validate_volume_capabilities(ValidateVolumeCapabilitiesRequest) -> ValidateVolumeCapabilitiesResponse = "ValidateVolumeCapabilities" by validate, span(volume.id = volume_id);
        list_volumes(ListVolumesRequest) -> ListVolumesResponse = "ListVolumes" by list, span();
        get_capacity(GetCapacityRequest) -> GetCapacityResponse = "GetCapacity" by capacity, span();
        controller_get_capabilities(ControllerGetCapabilitiesRequest) -> ControllerGetCapabilitiesResponse = "ControllerGetCapabilities" by service_capabilities, span();
        controller_expand_volume(ControllerExpandVolumeRequest) -> ControllerExpandVolumeResponse = "ControllerExpandVolume" by expand, span(volume.id = volume_id);
        controller_get_volume(ControllerGetVolumeRequest) -> ControllerGetVolumeResponse = "ControllerGetVolume" by get_volume, span(volume.id = volume_id);
        create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse = "CreateSnapshot" by create_snapshot, span(snapshot.name = name, volume.id = source_volume_id);
        delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse = "DeleteSnapshot" by delete_snapshot, span(snapshot.id = snapshot_id);
        list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse = "ListSnapshots" by list_snapshots, span();
    }
    unimplemented {
        get_snapshot(GetSnapshotRequest) -> GetSnapshotResponse = "GetSnapshot is not offered (ListSnapshots with a snapshot_id answers the same)";
        controller_modify_volume(ControllerModifyVolumeRequest) -> ControllerModifyVolumeResponse = "volume modification is not supported";
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
