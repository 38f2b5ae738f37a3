//! The CSI Controller service: volumes on the RDS and who may attach them.
//!
//! Every RPC validates all of its input before the backend is asked
//! anything, holds the per-volume guard for its whole duration (a second
//! call for the same volume gets ABORTED), and is idempotent: a repeat of a
//! finished call returns the same success.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use attachment_manager::{
    AccessKind, Manager, ManagerError, NodeStatus, NodeView, PublishDecision, PublishRequest,
    Refusal, UnpublishDecision,
};
use routeros::{ClusterId, Disk, DiskComment, NewDisk, Nqn, RosPath, Slot, SlotPrefix};
use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};
use vmi_grouper::KubeVirt;

use crate::backend::Backend;
use crate::error::{CsiError, CsiResult};
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

/// The per-volume guard, shared by the controller and node services.
pub use attachment_manager::VolumeLocks;

impl From<ManagerError> for CsiError {
    fn from(e: ManagerError) -> Self {
        manager_error(e)
    }
}

fn manager_error(e: ManagerError) -> CsiError {
    match e {
        ManagerError::Busy(v) => CsiError::Aborted(format!("volume {v}")),
        ManagerError::NotReady => CsiError::Unavailable(e.to_string()),
        ManagerError::Cluster { .. } => CsiError::Unavailable(crate::error::chain(&e)),
    }
}

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
    /// Refuses a node whose NVMe host NQN another node also reports: the
    /// target could not tell their connections apart.
    async fn check_host_nqn(&self, node: &str) -> CsiResult<()> {
        match self.nodes.sharing_host_nqn(node).await {
            Ok(None) => Ok(()),
            Ok(Some(shared)) => Err(CsiError::FailedPrecondition(format!(
                "node {node:?} and node(s) {} report the same NVMe host NQN {:?} (Node annotation {}): the target could not tell them apart; give each node its own /etc/nvme/hostnqn",
                shared.others.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
                shared.nqn,
                attachment_manager::host_nqn::HOST_NQN_ANNOTATION,
            ))),
            Err(e) => Err(CsiError::Unavailable(format!(
                "check the host NQN of node {node:?}: {e}"
            ))),
        }
    }

    async fn lookup(&self, slot: &Slot) -> CsiResult<Option<Disk>> {
        self.backend
            .get_volume(slot)
            .await
            .map_err(|e| CsiError::backend(format!("look up volume {slot}"), e))
    }

    /// A volume that must exist: NOT_FOUND otherwise.
    async fn existing(&self, slot: &Slot) -> CsiResult<Disk> {
        self.lookup(slot)
            .await?
            .ok_or_else(|| CsiError::NotFound(format!("volume {slot}")))
    }

    fn lock(&self, volume: &Slot) -> CsiResult<attachment_manager::VolumeGuard> {
        self.manager
            .locks()
            .try_lock(volume.as_str())
            .map_err(manager_error)
    }

    fn volume_id(&self, id: &str) -> CsiResult<Slot> {
        if id.is_empty() {
            return Err(CsiError::invalid("volume_id", "must not be empty"));
        }
        let slot = Slot::new(id).map_err(|e| CsiError::invalid("volume_id", e.to_string()))?;
        // Never touch a disk this driver would not have created.
        if !self.config.volume_id_prefix.matches(slot.as_str()) {
            return Err(CsiError::invalid(
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

    /// The context a volume reports when only the backend record is known
    /// (ListVolumes, ControllerGetVolume).
    fn context_from_disk(&self, disk: &Disk) -> HashMap<String, String> {
        let mut c = HashMap::new();
        c.insert(
            params::ctx::NVME_ADDRESS.into(),
            self.config.defaults.nvme_address.clone(),
        );
        if let Some(p) = disk.port {
            c.insert(params::ctx::NVME_PORT.into(), p.to_string());
        }
        if let Some(n) = &disk.nqn {
            c.insert(params::ctx::NQN.into(), n.clone());
        }
        c
    }

    async fn create(
        &self,
        req: proto::CreateVolumeRequest,
    ) -> CsiResult<proto::CreateVolumeResponse> {
        if req.name.is_empty() {
            return Err(CsiError::invalid("name", "must not be empty"));
        }
        let slot = Slot::new(&req.name).map_err(|e| CsiError::invalid("name", e.to_string()))?;
        if !self.config.volume_id_prefix.matches(slot.as_str()) {
            return Err(CsiError::invalid(
                "name",
                format!(
                    "must start with the configured volume ID prefix {:?} (--volume-id-prefix)",
                    self.config.volume_id_prefix.as_str()
                ),
            ));
        }
        let caps = validate_capabilities(&req.volume_capabilities)?;
        if req.volume_content_source.is_some() {
            return Err(CsiError::invalid(
                "volume_content_source",
                "creating volumes from snapshots or clones is not supported yet",
            ));
        }
        let mut vp = VolumeParams::parse(&req.parameters, &self.config.defaults)?;
        if let Some(fs) = caps.fs_type {
            if vp.fs_type.is_some_and(|p| p != fs) {
                return Err(CsiError::invalid(
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
            .map_err(|e| CsiError::invalid("volumePath", e.to_string()))?;
        let nqn = Nqn::for_volume(&self.config.nqn_prefix, &slot)
            .map_err(|e| CsiError::invalid("name", e.to_string()))?;

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
                    Some(id) => Some(id.get().cloned().ok_or_else(|| {
                        CsiError::Unavailable(
                            "the cluster identity (--cluster-id, by default the kube-system namespace UID) is not known yet"
                                .into(),
                        )
                    })?),
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
                    .map_err(|e| CsiError::backend(format!("create volume {slot}"), e))?;
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
    ) -> CsiResult<()> {
        let size = disk.size_bytes;
        let too_small = size < range.required_bytes.max(0) as u64;
        let too_big = range.limit_bytes > 0 && size > range.limit_bytes as u64;
        if too_small || too_big {
            return Err(CsiError::AlreadyExists(format!(
                "volume {} exists with {size} bytes, incompatible with the requested range {}..{}",
                disk.slot, range.required_bytes, range.limit_bytes
            )));
        }
        if disk
            .file_path
            .as_deref()
            .is_some_and(|f| f != file.as_str())
        {
            return Err(CsiError::AlreadyExists(format!(
                "volume {} exists at {}, not at the requested {file}",
                disk.slot,
                disk.file_path.as_deref().unwrap_or_default()
            )));
        }
        if disk.port.is_some_and(|p| p != vp.nvme_port)
            || disk.nqn.as_deref().is_some_and(|n| n != nqn.as_str())
        {
            return Err(CsiError::AlreadyExists(format!(
                "volume {} exists with a different NVMe/TCP export",
                disk.slot
            )));
        }
        Ok(())
    }

    fn check_topology(&self, req: Option<&proto::TopologyRequirement>) -> CsiResult<()> {
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
            Err(CsiError::ResourceExhausted(format!(
                "no requisite topology includes {k}={v}, the only place this RDS serves"
            )))
        }
    }

    async fn delete(
        &self,
        req: proto::DeleteVolumeRequest,
    ) -> CsiResult<proto::DeleteVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        let _guard = self.lock(&slot)?;
        if !self.manager.is_ready() {
            // Deleting a volume that may still be attached destroys a VM's
            // disk: without the rebuilt state, refuse.
            return Err(manager_error(ManagerError::NotReady));
        }
        let holders = self.manager.holders(slot.as_str());
        if !holders.is_empty() {
            return Err(CsiError::FailedPrecondition(format!(
                "volume {slot} is still published to {}",
                holders.join(", ")
            )));
        }
        let known = self.lookup(&slot).await?;
        self.backend
            .delete_volume(
                &slot,
                known.as_ref(),
                &self.config.defaults.volume_path_root,
            )
            .await
            .map_err(|e| CsiError::backend(format!("delete volume {slot}"), e))?;
        info!(volume = %slot, existed = known.is_some(), "volume deleted");
        Ok(proto::DeleteVolumeResponse {})
    }

    async fn publish(
        &self,
        req: proto::ControllerPublishVolumeRequest,
    ) -> CsiResult<proto::ControllerPublishVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        if req.node_id.is_empty() {
            return Err(CsiError::invalid("node_id", "must not be empty"));
        }
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| CsiError::invalid("volume_capability", "must be given"))?;
        let caps = validate_capabilities(std::slice::from_ref(cap))?;
        let _guard = self.lock(&slot)?;
        if !self.manager.is_ready() {
            return Err(manager_error(ManagerError::NotReady));
        }
        let disk = self.existing(&slot).await?;
        match self.nodes.node_status(&req.node_id).await {
            Ok(NodeStatus::Present) => {}
            Ok(NodeStatus::Missing) => {
                return Err(CsiError::NotFound(format!("node {:?}", req.node_id)))
            }
            Ok(NodeStatus::OutOfService) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "node {:?} carries the node.kubernetes.io/out-of-service taint",
                    req.node_id
                )))
            }
            Err(e) => {
                return Err(CsiError::Unavailable(format!(
                    "check node {:?}: {e}",
                    req.node_id
                )))
            }
        }
        self.check_host_nqn(&req.node_id).await?;
        let pvc = params::pvc_of(&req.volume_context);
        // Publishes for the volumes of one VM run one at a time.
        let _vmi_guard = match (&self.grouper, &pvc) {
            (Some(g), Some((ns, name))) => match g.vmi_for_pvc(ns, name).await {
                Ok(Some(key)) => Some(g.locks().lock(&key).await),
                Ok(None) => None,
                Err(e) => return Err(CsiError::Unavailable(e.to_string())),
            },
            _ => None,
        };
        let kind = if caps.multi_node {
            AccessKind::MultiNodeBlock
        } else {
            AccessKind::SingleNode
        };
        let decision = self
            .manager
            .publish(PublishRequest {
                volume: slot.as_str(),
                node: &req.node_id,
                kind,
                pvc,
                migration_timeout: migration_timeout_of(&req.volume_context),
            })
            .await
            .map_err(manager_error)?;
        match decision {
            PublishDecision::Attached { .. } | PublishDecision::AlreadyAttached => {}
            PublishDecision::Refused(Refusal::IncompatibleOnSameNode) => {
                return Err(CsiError::AlreadyExists(format!(
                    "volume {slot} is already published to node {} with an incompatible capability",
                    req.node_id
                )))
            }
            PublishDecision::Refused(r) => {
                return Err(CsiError::FailedPrecondition(format!("volume {slot}: {r}")))
            }
        }
        info!(volume = %slot, node = %req.node_id, "volume published");
        let mut ctx = BTreeMap::new();
        let address = req
            .volume_context
            .get(params::ctx::NVME_ADDRESS)
            .cloned()
            .unwrap_or_else(|| self.config.defaults.nvme_address.clone());
        ctx.insert(params::ctx::NVME_ADDRESS.to_string(), address);
        if let Some(p) = disk.port {
            ctx.insert(params::ctx::NVME_PORT.to_string(), p.to_string());
        }
        if let Some(n) = &disk.nqn {
            ctx.insert(params::ctx::NQN.to_string(), n.clone());
        }
        Ok(proto::ControllerPublishVolumeResponse {
            publish_context: ctx.into_iter().collect(),
        })
    }

    async fn unpublish(
        &self,
        req: proto::ControllerUnpublishVolumeRequest,
    ) -> CsiResult<proto::ControllerUnpublishVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        let _guard = self.lock(&slot)?;
        // An empty node ID means every node. An unknown volume or node is
        // already unpublished, which is success. "Every node" is only
        // known once the state is rebuilt.
        let nodes = if req.node_id.is_empty() {
            if !self.manager.is_ready() {
                return Err(manager_error(ManagerError::NotReady));
            }
            self.manager.holders(slot.as_str())
        } else {
            vec![req.node_id.clone()]
        };
        for node in &nodes {
            match self
                .manager
                .unpublish(slot.as_str(), node)
                .await
                .map_err(manager_error)?
            {
                UnpublishDecision::Detached { .. } => {
                    info!(volume = %slot, node = %node, "volume unpublished")
                }
                UnpublishDecision::NotAttached => {
                    info!(volume = %slot, node = %node, "volume was not published there; nothing to do")
                }
            }
        }
        Ok(proto::ControllerUnpublishVolumeResponse {})
    }

    async fn validate(
        &self,
        req: proto::ValidateVolumeCapabilitiesRequest,
    ) -> CsiResult<proto::ValidateVolumeCapabilitiesResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::invalid(
                "volume_capabilities",
                "must not be empty",
            ));
        }
        VolumeParams::parse(&req.parameters, &self.config.defaults)?;
        self.existing(&slot).await?;
        Ok(match validate_capabilities(&req.volume_capabilities) {
            Ok(_) => proto::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: HashMap::new(),
                }),
                message: String::new(),
            },
            Err(e) => proto::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: e.to_string(),
            },
        })
    }

    async fn list(&self, req: proto::ListVolumesRequest) -> CsiResult<proto::ListVolumesResponse> {
        if req.max_entries < 0 {
            return Err(CsiError::invalid("max_entries", "must not be negative"));
        }
        // The published nodes are only known once the state is rebuilt:
        // an empty list before then would tell the CO nothing is attached.
        if !self.manager.is_ready() {
            return Err(manager_error(ManagerError::NotReady));
        }
        // Tokens name the last volume of the previous page, so volumes added
        // or deleted between pages neither repeat nor shift the rest.
        let after = match req.starting_token.as_str() {
            "" => None,
            t => Some(
                t.strip_prefix(TOKEN_PREFIX)
                    .filter(|s| Slot::new(s).is_ok())
                    .ok_or_else(|| {
                        CsiError::Aborted(format!(
                            "starting_token {t:?} is not a token this driver issued"
                        ))
                    })?
                    .to_string(),
            ),
        };
        let mut disks = self
            .backend
            .list_volumes(&self.config.volume_id_prefix)
            .await
            .map_err(|e| CsiError::backend("list volumes", e))?;
        disks.sort_by(|a, b| a.slot.cmp(&b.slot));
        let limit = match req.max_entries {
            0 => self.config.max_list_entries,
            n => (n as usize).min(self.config.max_list_entries),
        };
        let page: Vec<Disk> = disks
            .into_iter()
            .filter(|d| after.as_deref().is_none_or(|a| d.slot.as_str() > a))
            .take(limit + 1)
            .collect();
        let next_token = if page.len() > limit {
            format!("{TOKEN_PREFIX}{}", page[limit - 1].slot)
        } else {
            String::new()
        };
        let entries = page
            .into_iter()
            .take(limit)
            .map(|d| proto::list_volumes_response::Entry {
                status: Some(proto::list_volumes_response::VolumeStatus {
                    published_node_ids: self.manager.holders(&d.slot),
                    volume_condition: None,
                }),
                volume: Some(self.volume_of(&d, self.context_from_disk(&d))),
            })
            .collect();
        Ok(proto::ListVolumesResponse {
            entries,
            next_token,
        })
    }

    async fn capacity(
        &self,
        req: proto::GetCapacityRequest,
    ) -> CsiResult<proto::GetCapacityResponse> {
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
            .map_err(|e| CsiError::invalid("volumePath", e.to_string()))?;
        let cap = self
            .backend
            .capacity(&pool)
            .await
            .map_err(|e| CsiError::backend(format!("read capacity of pool {pool}"), e))?;
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
    ) -> CsiResult<proto::ControllerExpandVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        let range = req
            .capacity_range
            .ok_or_else(|| CsiError::invalid("capacity_range", "must be given"))?;
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
            self.backend.expand_volume(&slot, size).await.map_err(|e| {
                CsiError::backend(format!("expand volume {slot} to {size} bytes"), e)
            })?;
            info!(volume = %slot, from = disk.size_bytes, to = size, "volume expanded");
            capacity = size;
        } else if range.limit_bytes > 0 && disk.size_bytes > range.limit_bytes as u64 {
            return Err(CsiError::Size(params::SizeError::NoAlignedSize {
                required: range.required_bytes as u64,
                limit: range.limit_bytes as u64,
            }));
        }
        Ok(proto::ControllerExpandVolumeResponse {
            capacity_bytes: capacity as i64,
            node_expansion_required: !block,
        })
    }

    async fn get_volume(
        &self,
        req: proto::ControllerGetVolumeRequest,
    ) -> CsiResult<proto::ControllerGetVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        if !self.manager.is_ready() {
            return Err(manager_error(ManagerError::NotReady));
        }
        let disk = self.existing(&slot).await?;
        Ok(proto::ControllerGetVolumeResponse {
            volume: Some(self.volume_of(&disk, self.context_from_disk(&disk))),
            status: Some(proto::controller_get_volume_response::VolumeStatus {
                published_node_ids: self.manager.holders(slot.as_str()),
                volume_condition: None,
            }),
        })
    }
}

const TOKEN_PREFIX: &str = "after:";

fn migration_timeout_of(context: &HashMap<String, String>) -> Duration {
    context
        .get(params::ctx::MIGRATION_TIMEOUT)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| {
            let (lo, hi) = params::MIGRATION_TIMEOUT_RANGE;
            Duration::from_secs(s.clamp(lo as u64, hi as u64))
        })
        .unwrap_or(DEFAULT_MIGRATION_TIMEOUT)
}

/// What a set of volume capabilities asks for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Caps {
    pub block: bool,
    pub multi_node: bool,
    pub fs_type: Option<FsType>,
}

/// Single-node modes for filesystem and block; multi-node writer only for
/// raw block (two QEMUs never write at once during a live migration, two
/// filesystems mounted on two nodes always corrupt).
pub fn validate_capabilities(caps: &[proto::VolumeCapability]) -> CsiResult<Caps> {
    use proto::volume_capability::access_mode::Mode;
    use proto::volume_capability::AccessType;
    if caps.is_empty() {
        return Err(CsiError::invalid(
            "volume_capabilities",
            "must not be empty",
        ));
    }
    let mut out = Caps::default();
    for cap in caps {
        let block = match &cap.access_type {
            Some(AccessType::Block(_)) => true,
            Some(AccessType::Mount(m)) => {
                if !m.fs_type.is_empty() {
                    let fs = FsType::parse(&m.fs_type).ok_or_else(|| {
                        CsiError::invalid(
                            "volume_capabilities",
                            format!("unsupported fs_type {:?}; use ext4 or xfs", m.fs_type),
                        )
                    })?;
                    out.fs_type = Some(fs);
                }
                false
            }
            None => {
                return Err(CsiError::invalid(
                    "volume_capabilities",
                    "access_type (block or mount) must be given",
                ))
            }
        };
        let mode = cap
            .access_mode
            .as_ref()
            .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown))
            .unwrap_or(Mode::Unknown);
        match mode {
            Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter => {}
            Mode::MultiNodeMultiWriter if block => out.multi_node = true,
            Mode::MultiNodeMultiWriter => {
                return Err(CsiError::invalid(
                    "volume_capabilities",
                    "multi-node writer is only offered for raw block volumes (KubeVirt live migration); a filesystem on two nodes would be corrupted",
                ))
            }
            Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter => {
                return Err(CsiError::invalid("volume_capabilities", format!("access mode {} is not supported", mode.as_str_name())))
            }
            Mode::Unknown => return Err(CsiError::invalid("volume_capabilities", "access_mode must be given")),
        }
        out.block |= block;
    }
    Ok(out)
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

macro_rules! rpc {
    ($self:ident, $name:literal, $req:ident, $body:expr) => {{
        let timer = $self.metrics.start($name);
        let $req = $req.into_inner();
        let result: CsiResult<_> = $body.await;
        match result {
            Ok(resp) => {
                timer.finish(tonic::Code::Ok);
                Ok(Response::new(resp))
            }
            Err(e) => {
                let status: Status = e.into();
                timer.finish(status.code());
                if matches!(status.code(), tonic::Code::Internal | tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) {
                    warn!(rpc = $name, code = ?status.code(), error = %status.message(), "RPC failed");
                } else {
                    info!(rpc = $name, code = ?status.code(), error = %status.message(), "RPC refused");
                }
                Err(status)
            }
        }
    }};
}

#[tonic::async_trait]
impl<B: Backend> Controller for ControllerService<B> {
    #[instrument(skip_all, fields(volume.name = %request.get_ref().name))]
    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        rpc!(self, "CreateVolume", request, self.create(request))
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn delete_volume(
        &self,
        request: Request<proto::DeleteVolumeRequest>,
    ) -> Result<Response<proto::DeleteVolumeResponse>, Status> {
        rpc!(self, "DeleteVolume", request, self.delete(request))
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id, node.id = %request.get_ref().node_id))]
    async fn controller_publish_volume(
        &self,
        request: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerPublishVolumeResponse>, Status> {
        rpc!(
            self,
            "ControllerPublishVolume",
            request,
            self.publish(request)
        )
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id, node.id = %request.get_ref().node_id))]
    async fn controller_unpublish_volume(
        &self,
        request: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerUnpublishVolumeResponse>, Status> {
        rpc!(
            self,
            "ControllerUnpublishVolume",
            request,
            self.unpublish(request)
        )
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn validate_volume_capabilities(
        &self,
        request: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        rpc!(
            self,
            "ValidateVolumeCapabilities",
            request,
            self.validate(request)
        )
    }

    #[instrument(skip_all)]
    async fn list_volumes(
        &self,
        request: Request<proto::ListVolumesRequest>,
    ) -> Result<Response<proto::ListVolumesResponse>, Status> {
        rpc!(self, "ListVolumes", request, self.list(request))
    }

    #[instrument(skip_all)]
    async fn get_capacity(
        &self,
        request: Request<proto::GetCapacityRequest>,
    ) -> Result<Response<proto::GetCapacityResponse>, Status> {
        rpc!(self, "GetCapacity", request, self.capacity(request))
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
        rpc!(
            self,
            "ControllerExpandVolume",
            request,
            self.expand(request)
        )
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn controller_get_volume(
        &self,
        request: Request<proto::ControllerGetVolumeRequest>,
    ) -> Result<Response<proto::ControllerGetVolumeResponse>, Status> {
        rpc!(
            self,
            "ControllerGetVolume",
            request,
            self.get_volume(request)
        )
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
