//! Volume capabilities: which access types and modes the driver offers,
//! and ValidateVolumeCapabilities.

use super::*;

impl<B: Backend> ControllerService<B> {
    pub(super) async fn validate(
        &self,
        req: proto::ValidateVolumeCapabilitiesRequest,
    ) -> ControllerResult<proto::ValidateVolumeCapabilitiesResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        // No capabilities at all is a malformed request; unsupported ones
        // are an answer (not confirmed).
        let supported = match validate_capabilities(&req.volume_capabilities) {
            Err(e) if req.volume_capabilities.is_empty() => return Err(e),
            checked => checked,
        };
        VolumeParams::parse(&req.parameters, &self.config.defaults)?;
        self.existing(&slot).await?;
        Ok(match supported {
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

    /// The controller RPCs this driver offers (ControllerGetCapabilities):
    /// the core ones always, snapshots, clones and expansion as the
    /// backend declares them.
    pub(super) async fn service_capabilities(
        &self,
        _req: proto::ControllerGetCapabilitiesRequest,
    ) -> ControllerResult<proto::ControllerGetCapabilitiesResponse> {
        use proto::controller_service_capability::{rpc::Type as T, Rpc, Type};
        let backend = self.backend.capabilities();
        let mut rpcs = vec![
            T::CreateDeleteVolume,
            T::PublishUnpublishVolume,
            T::ListVolumes,
            T::GetCapacity,
            T::GetVolume,
            T::ListVolumesPublishedNodes,
            T::SingleNodeMultiWriter,
        ];
        if backend.expansion {
            rpcs.push(T::ExpandVolume);
        }
        if backend.snapshots {
            rpcs.extend([T::CreateDeleteSnapshot, T::ListSnapshots]);
        }
        if backend.clones {
            rpcs.push(T::CloneVolume);
        }
        let capabilities = rpcs
            .into_iter()
            .map(|rpc| proto::ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc { r#type: rpc as i32 })),
            })
            .collect();
        Ok(proto::ControllerGetCapabilitiesResponse { capabilities })
    }

    /// Refuses (UNIMPLEMENTED) what the backend does not declare.
    pub(super) fn offers(&self, offer: Offer) -> ControllerResult<()> {
        let caps = self.backend.capabilities();
        let (offered, what) = match offer {
            Offer::Snapshots => (caps.snapshots, "snapshots"),
            Offer::Clones => (caps.clones, "cloning a volume"),
            Offer::Expansion => (caps.expansion, "volume expansion"),
        };
        if offered {
            Ok(())
        } else {
            Err(ControllerError::NotOffered { what })
        }
    }
}

/// What a backend may or may not offer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Offer {
    Snapshots,
    Clones,
    Expansion,
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
pub fn validate_capabilities(caps: &[proto::VolumeCapability]) -> ControllerResult<Caps> {
    use proto::volume_capability::access_mode::Mode;
    use proto::volume_capability::AccessType;
    if caps.is_empty() {
        return Err(ControllerError::invalid(
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
                        ControllerError::invalid(
                            "volume_capabilities",
                            format!("unsupported fs_type {:?}; use ext4 or xfs", m.fs_type),
                        )
                    })?;
                    out.fs_type = Some(fs);
                }
                false
            }
            None => {
                return Err(ControllerError::invalid(
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
                return Err(ControllerError::invalid(
                    "volume_capabilities",
                    "multi-node writer is only offered for raw block volumes (KubeVirt live migration); a filesystem on two nodes would be corrupted",
                ))
            }
            Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter => {
                return Err(ControllerError::invalid("volume_capabilities", format!("access mode {} is not supported", mode.as_str_name())))
            }
            Mode::Unknown => return Err(ControllerError::invalid("volume_capabilities", "access_mode must be given")),
        }
        out.block |= block;
    }
    Ok(out)
}
