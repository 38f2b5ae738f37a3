//! The CSI Controller service: volumes on the RDS and who may attach them.
//!
//! Every RPC validates all of its input before the backend is asked
//! anything, holds the per-volume guard for its whole duration (a second
//! call for the same volume gets ABORTED), and is idempotent: a repeat of a
//! finished call returns the same success.

mod capabilities;
mod error;
mod listing;
mod publish;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use attachment_manager::{
    AccessKind, Manager, ManagerError, NodeStatus, NodeView, PublishDecision, PublishRequest,
    Refusal, UnpublishDecision,
};
use routeros::{ClusterId, Disk, DiskComment, NewDisk, Nqn, RosPath, Slot, SlotPrefix};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};
use vmi_grouper::KubeVirt;

use crate::backend::Backend;
use crate::metrics::RpcMetrics;
use crate::params::{self, allocation_size, FsType, ParamDefaults, VolumeParams};
use crate::proto::{self, controller_server::Controller};

/// Controller settings, from flags.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub defaults: ParamDefaults,
    pub max_volume_bytes: u64,
    /// Only volumes whose ID starts with this prefix are created and listed.
    pub volume_id_prefix: SlotPrefix,
    pub nqn_prefix: String,
    /// Topology segment every volume is accessible from.
    pub topology: (String, String),
    pub max_list_entries: usize,
}

impl ControllerConfig {
    /// The pool's mount point, for capacity queries.
    pub fn pool(&self) -> Slot {
        Slot::new(self.defaults.volume_path_root.mount_point()).expect("validated root")
    }
}

/// The default live-migration window when the volume context has none.
pub const DEFAULT_MIGRATION_TIMEOUT: Duration =
    Duration::from_secs(params::DEFAULT_MIGRATION_TIMEOUT as u64);

pub struct ControllerService<B> {
    config: ControllerConfig,
    backend: Arc<B>,
    nodes: Arc<dyn NodeView>,
    manager: Arc<Manager>,
    grouper: Option<KubeVirt>,
    metrics: RpcMetrics,
    /// Written on every disk CreateVolume makes (`--cluster-id`); may
    /// become known only after start (read from the API server).
    cluster_id: Option<Arc<OnceLock<ClusterId>>>,
}

pub use capabilities::{validate_capabilities, Caps};
pub use error::{ControllerError, ControllerResult, Step};

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
    async fn lookup(&self, slot: &Slot) -> ControllerResult<Option<Disk>> {
        self.backend
            .get_volume(slot)
            .await
            .map_err(Step::Lookup(slot.clone()).failed())
    }

    /// A volume that must exist: NOT_FOUND otherwise.
    async fn existing(&self, slot: &Slot) -> ControllerResult<Disk> {
        self.lookup(slot)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound {
                volume: slot.clone(),
            })
    }

    fn lock(&self, volume: &Slot) -> ControllerResult<attachment_manager::VolumeGuard> {
        self.manager
            .locks()
            .try_lock(volume.as_str())
            .map_err(ControllerError::from)
    }

    fn volume_id(&self, id: &str) -> ControllerResult<Slot> {
        if id.is_empty() {
            return Err(ControllerError::invalid("volume_id", "must not be empty"));
        }
        let slot =
            Slot::new(id).map_err(|e| ControllerError::invalid("volume_id", e.to_string()))?;
        // Never touch a disk this driver would not have created.
        if !self.config.volume_id_prefix.matches(slot.as_str()) {
            return Err(ControllerError::invalid(
                "volume_id",
                format!(
                    "{slot} does not start with the configured volume ID prefix {:?}; this driver does not manage it",
                    self.config.volume_id_prefix.as_str()
                ),
            ));
        }
        Ok(slot)
    }

    fn topology(&self) -> Vec<proto::Topology> {
        let (k, v) = &self.config.topology;
        vec![proto::Topology {
            segments: HashMap::from([(k.clone(), v.clone())]),
        }]
    }

    fn volume_of(&self, disk: &Disk, context: HashMap<String, String>) -> proto::Volume {
        proto::Volume {
            capacity_bytes: disk.size_bytes as i64,
            volume_id: disk.slot.clone(),
            volume_context: context,
            content_source: None,
            accessible_topology: self.topology(),
        }
    }

    async fn create(
        &self,
        req: proto::CreateVolumeRequest,
    ) -> ControllerResult<proto::CreateVolumeResponse> {
        if req.name.is_empty() {
            return Err(ControllerError::invalid("name", "must not be empty"));
        }
        let slot =
            Slot::new(&req.name).map_err(|e| ControllerError::invalid("name", e.to_string()))?;
        if !self.config.volume_id_prefix.matches(slot.as_str()) {
            return Err(ControllerError::invalid(
                "name",
                format!(
                    "must start with the configured volume ID prefix {:?} (--volume-id-prefix)",
                    self.config.volume_id_prefix.as_str()
                ),
            ));
        }
        let caps = validate_capabilities(&req.volume_capabilities)?;
        if req.volume_content_source.is_some() {
            return Err(ControllerError::invalid(
                "volume_content_source",
                "creating volumes from snapshots or clones is not supported yet",
            ));
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
        let file = vp
            .volume_path
            .join(&format!("{slot}.img"))
            .map_err(|e| ControllerError::invalid("volumePath", e.to_string()))?;
        let nqn = Nqn::for_volume(&self.config.nqn_prefix, &slot)
            .map_err(|e| ControllerError::invalid("name", e.to_string()))?;

        let _guard = self.lock(&slot)?;
        // Look first: "absent" only when the RDS said so. An unreachable RDS
        // fails here and never leads to a second disk.
        let existing = self.lookup(&slot).await?;
        let disk = match existing {
            Some(disk) => {
                self.check_compatible(&disk, &range, &file, &vp, &nqn)?;
                info!(volume = %slot, "volume already exists with compatible size; returning it");
                disk
            }
            None => {
                let cluster = match &self.cluster_id {
                    None => None,
                    Some(id) => Some(id.get().cloned().ok_or(ControllerError::ClusterIdUnknown)?),
                };
                let spec = NewDisk {
                    slot: slot.clone(),
                    file: file.clone(),
                    size_bytes: size,
                    port: vp.nvme_port,
                    nqn: nqn.clone(),
                    // Whose disk it is and since when, for the orphan sweep.
                    comment: DiskComment::created(jiff::Timestamp::now(), cluster),
                };
                self.backend
                    .create_volume(&spec)
                    .await
                    .map_err(Step::Create(slot.clone()).failed())?;
                info!(volume = %slot, bytes = size, file = %file, "volume created");
                Disk {
                    slot: slot.to_string(),
                    file_path: Some(file.to_string()),
                    size_bytes: size,
                    nqn: Some(nqn.to_string()),
                    port: Some(vp.nvme_port),
                    exported: true,
                    comment: spec.comment.clone(),
                }
            }
        };
        self.manager.recent_creates().note(slot.as_str());
        Ok(proto::CreateVolumeResponse {
            volume: Some(self.volume_of(&disk, vp.volume_context(nqn.as_str()))),
        })
    }

    fn check_compatible(
        &self,
        disk: &Disk,
        range: &proto::CapacityRange,
        file: &RosPath,
        vp: &VolumeParams,
        nqn: &Nqn,
    ) -> ControllerResult<()> {
        let size = disk.size_bytes;
        let too_small = size < range.required_bytes.max(0) as u64;
        let too_big = range.limit_bytes > 0 && size > range.limit_bytes as u64;
        if too_small || too_big {
            return Err(ControllerError::ExistsWithOtherSize {
                volume: disk.slot.clone(),
                size,
                required: range.required_bytes,
                limit: range.limit_bytes,
            });
        }
        if let Some(at) = disk.file_path.as_ref().filter(|f| *f != file.as_str()) {
            return Err(ControllerError::ExistsAtOtherPath {
                volume: disk.slot.clone(),
                at: at.clone(),
                wanted: file.clone(),
            });
        }
        if disk.port.is_some_and(|p| p != vp.nvme_port)
            || disk.nqn.as_deref().is_some_and(|n| n != nqn.as_str())
        {
            return Err(ControllerError::ExistsWithOtherExport {
                volume: disk.slot.clone(),
            });
        }
        Ok(())
    }

    fn check_topology(&self, req: Option<&proto::TopologyRequirement>) -> ControllerResult<()> {
        let Some(req) = req else { return Ok(()) };
        if req.requisite.is_empty() {
            return Ok(());
        }
        let (k, v) = &self.config.topology;
        let reachable = req
            .requisite
            .iter()
            .any(|t| t.segments.get(k).is_none_or(|val| val == v));
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
        if !self.manager.is_ready() {
            // Deleting a volume that may still be attached destroys a VM's
            // disk: without the rebuilt state, refuse.
            return Err(ManagerError::NotReady.into());
        }
        let holders = self.manager.holders(slot.as_str());
        if !holders.is_empty() {
            return Err(ControllerError::StillPublished {
                volume: slot,
                nodes: holders,
            });
        }
        let known = self.lookup(&slot).await?;
        self.backend
            .delete_volume(
                &slot,
                known.as_ref(),
                &self.config.defaults.volume_path_root,
            )
            .await
            .map_err(Step::Delete(slot.clone()).failed())?;
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
        let pool = Slot::new(vp.volume_path.mount_point())
            .map_err(|e| ControllerError::invalid("volumePath", e.to_string()))?;
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

fn capability(
    rpc: proto::controller_service_capability::rpc::Type,
) -> proto::ControllerServiceCapability {
    proto::ControllerServiceCapability {
        r#type: Some(proto::controller_service_capability::Type::Rpc(
            proto::controller_service_capability::Rpc { r#type: rpc as i32 },
        )),
    }
}

/// Runs one controller RPC through the shared outcome handling (metrics,
/// log level by code, status with the whole cause chain).
async fn rpc<T>(
    metrics: &RpcMetrics,
    name: &'static str,
    work: impl std::future::Future<Output = ControllerResult<T>>,
) -> Result<Response<T>, Status> {
    crate::rpc::run(metrics, name, crate::rpc::Log::default(), work).await
}

#[tonic::async_trait]
impl<B: Backend> Controller for ControllerService<B> {
    #[instrument(skip_all, fields(volume.name = %request.get_ref().name))]
    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        rpc(
            &self.metrics,
            "CreateVolume",
            self.create(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn delete_volume(
        &self,
        request: Request<proto::DeleteVolumeRequest>,
    ) -> Result<Response<proto::DeleteVolumeResponse>, Status> {
        rpc(
            &self.metrics,
            "DeleteVolume",
            self.delete(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id, node.id = %request.get_ref().node_id))]
    async fn controller_publish_volume(
        &self,
        request: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerPublishVolumeResponse>, Status> {
        rpc(
            &self.metrics,
            "ControllerPublishVolume",
            self.publish(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id, node.id = %request.get_ref().node_id))]
    async fn controller_unpublish_volume(
        &self,
        request: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerUnpublishVolumeResponse>, Status> {
        rpc(
            &self.metrics,
            "ControllerUnpublishVolume",
            self.unpublish(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn validate_volume_capabilities(
        &self,
        request: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        rpc(
            &self.metrics,
            "ValidateVolumeCapabilities",
            self.validate(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all)]
    async fn list_volumes(
        &self,
        request: Request<proto::ListVolumesRequest>,
    ) -> Result<Response<proto::ListVolumesResponse>, Status> {
        rpc(
            &self.metrics,
            "ListVolumes",
            self.list(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all)]
    async fn get_capacity(
        &self,
        request: Request<proto::GetCapacityRequest>,
    ) -> Result<Response<proto::GetCapacityResponse>, Status> {
        rpc(
            &self.metrics,
            "GetCapacity",
            self.capacity(request.into_inner()),
        )
        .await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<proto::ControllerGetCapabilitiesResponse>, Status> {
        use proto::controller_service_capability::rpc::Type as T;
        let timer = self.metrics.start("ControllerGetCapabilities");
        timer.finish(tonic::Code::Ok);
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities: [
                T::CreateDeleteVolume,
                T::PublishUnpublishVolume,
                T::ListVolumes,
                T::GetCapacity,
                T::ExpandVolume,
                T::GetVolume,
                T::ListVolumesPublishedNodes,
                T::SingleNodeMultiWriter,
            ]
            .into_iter()
            .map(capability)
            .collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        _r: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported yet"))
    }

    async fn delete_snapshot(
        &self,
        _r: Request<proto::DeleteSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported yet"))
    }

    async fn list_snapshots(
        &self,
        _r: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported yet"))
    }

    async fn get_snapshot(
        &self,
        _r: Request<proto::GetSnapshotRequest>,
    ) -> Result<Response<proto::GetSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported yet"))
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn controller_expand_volume(
        &self,
        request: Request<proto::ControllerExpandVolumeRequest>,
    ) -> Result<Response<proto::ControllerExpandVolumeResponse>, Status> {
        rpc(
            &self.metrics,
            "ControllerExpandVolume",
            self.expand(request.into_inner()),
        )
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn controller_get_volume(
        &self,
        request: Request<proto::ControllerGetVolumeRequest>,
    ) -> Result<Response<proto::ControllerGetVolumeResponse>, Status> {
        rpc(
            &self.metrics,
            "ControllerGetVolume",
            self.get_volume(request.into_inner()),
        )
        .await
    }

    async fn controller_modify_volume(
        &self,
        _r: Request<proto::ControllerModifyVolumeRequest>,
    ) -> Result<Response<proto::ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volume modification is not supported",
        ))
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
