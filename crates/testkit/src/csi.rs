//! CSI volume capabilities and CreateVolume requests as the container
//! orchestrator sends them.

use csi_server::proto::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use csi_server::proto::{CapacityRange, CreateVolumeRequest, VolumeCapability};

/// A filesystem volume of `fs_type` with access `mode`.
pub fn mount(fs_type: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A raw block volume with access `mode`.
pub fn block(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// CreateVolume as the external-provisioner sends it: the volume `name`,
/// at least `bytes` (no limit), one capability and the `parameters` (the
/// StorageClass's, and the `csi.storage.k8s.io/...` keys the provisioner
/// adds).
pub fn create_volume(
    name: &str,
    bytes: i64,
    cap: VolumeCapability,
    parameters: &[(&str, &str)],
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}
