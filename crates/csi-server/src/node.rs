//! The CSI Node service. This first version answers identity questions
//! (NodeGetInfo, NodeGetCapabilities); the data path comes with the nvme
//! crate.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use crate::proto::{self, node_server::Node};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub max_volumes: i64,
    pub topology: (String, String),
}

pub struct NodeService {
    config: NodeConfig,
}

impl NodeService {
    pub fn new(config: NodeConfig) -> Self {
        NodeService { config }
    }
}

fn require(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!(
            "{field} must not be empty"
        )))
    } else {
        Ok(())
    }
}

/// This node plugin version never mounts anything, so an unpublish or
/// unstage is already done unless something is mounted at the path; then
/// it refuses rather than pretend (a later version unmounts).
fn nothing_mounted_at(path: &str) -> Result<(), Status> {
    let mounts = crate::mountinfo::read()
        .map_err(|e| Status::internal(format!("read /proc/self/mountinfo: {e}")))?;
    if crate::mountinfo::is_mount_point(&mounts, std::path::Path::new(path)) {
        return Err(Status::failed_precondition(format!(
            "{path} is a mount point, and this node plugin version does not unmount"
        )));
    }
    Ok(())
}

fn not_yet<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not implemented by this node plugin version"
    )))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _r: Request<proto::NodeStageVolumeRequest>,
    ) -> Result<Response<proto::NodeStageVolumeResponse>, Status> {
        not_yet("NodeStageVolume")
    }

    async fn node_unstage_volume(
        &self,
        _r: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        not_yet("NodeUnstageVolume")
    }

    async fn node_publish_volume(
        &self,
        _r: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        not_yet("NodePublishVolume")
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        require("volume_id", &r.volume_id)?;
        require("target_path", &r.target_path)?;
        nothing_mounted_at(&r.target_path)?;
        Ok(Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        _r: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        not_yet("NodeGetVolumeStats")
    }

    async fn node_expand_volume(
        &self,
        _r: Request<proto::NodeExpandVolumeRequest>,
    ) -> Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        not_yet("NodeExpandVolume")
    }

    async fn node_get_capabilities(
        &self,
        _r: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        // No optional node capabilities are claimed until the data path
        // implements them.
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn node_get_info(
        &self,
        _r: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        let (k, v) = &self.config.topology;
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes,
            accessible_topology: Some(proto::Topology {
                segments: HashMap::from([(k.clone(), v.clone())]),
            }),
        }))
    }
}
