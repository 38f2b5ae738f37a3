//! ControllerPublishVolume and ControllerUnpublishVolume: who may attach a
//! volume, decided by the attachment manager, and the node checks before it.

use super::fencing::Cut;
use super::*;

impl<B: Backend> ControllerService<B> {
    /// Refuses a node that may not receive a volume: one the cluster does
    /// not have, a fenced one, or one whose NVMe host NQN another node also
    /// reports (the target could not tell their connections apart).
    async fn check_node(&self, node: &str) -> ControllerResult<()> {
        let name = || node.to_string();
        let status = self.nodes.node_status(node).await;
        match status.map_err(|source| ControllerError::NodeCheck {
            node: name(),
            source,
        })? {
            NodeStatus::Present => {}
            NodeStatus::Missing => return Err(ControllerError::NodeNotFound { node: name() }),
            NodeStatus::OutOfService => {
                return Err(ControllerError::NodeOutOfService { node: name() })
            }
        }
        let shared = self.nodes.sharing_host_nqn(node).await;
        match shared.map_err(|source| ControllerError::HostNqnCheck {
            node: name(),
            source,
        })? {
            None => Ok(()),
            Some(shared) => Err(ControllerError::SharedHostNqn {
                node: name(),
                others: shared.others,
                nqn: shared.nqn,
            }),
        }
    }

    pub(super) async fn publish(
        &self,
        req: proto::ControllerPublishVolumeRequest,
    ) -> ControllerResult<proto::ControllerPublishVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        ControllerError::require("node_id", &req.node_id)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| ControllerError::invalid("volume_capability", "must be given"))?;
        let caps = validate_capabilities(std::slice::from_ref(cap))?;
        let _guard = self.lock(&slot)?;
        self.ready()?;
        if let Some(into) = self.copying_from(&slot) {
            return Err(ControllerError::SourceBeingCopied { volume: slot, into });
        }
        let disk = self.existing(&slot).await?;
        self.check_node(&req.node_id).await?;
        let pvc = params::pvc_of(&req.volume_context);
        // Publishes for the volumes of one VM run one at a time.
        let _vmi_guard = match (&self.grouper, &pvc) {
            (Some(g), Some((ns, name))) => match g.vmi_for_pvc(ns, name).await {
                Ok(Some(key)) => Some(g.locks().lock(&key).await),
                Ok(None) => None,
                Err(source) => {
                    return Err(ControllerError::VmLookup {
                        namespace: ns.clone(),
                        name: name.clone(),
                        source: Box::new(source),
                    })
                }
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
            .map_err(ControllerError::from)?;
        let dropped_stale = match &decision {
            PublishDecision::Attached { stale_cleared, .. } => !stale_cleared.is_empty(),
            _ => false,
        };
        match decision {
            PublishDecision::Attached { .. } | PublishDecision::AlreadyAttached => {}
            PublishDecision::Refused(Refusal::IncompatibleOnSameNode) => {
                return Err(ControllerError::PublishedIncompatibly {
                    volume: slot,
                    node: req.node_id,
                })
            }
            PublishDecision::Refused(r) => {
                return Err(ControllerError::Refused {
                    volume: slot,
                    refusal: r,
                })
            }
        }
        if self.fencing() {
            // Admit the new holder (and only the holders) before answering:
            // the node connects right after. A holder dropped because its
            // node is gone may still have a session: cut it.
            let cut = if dropped_stale {
                Cut::Always
            } else {
                Cut::IfAHostLeft
            };
            self.fence(&slot, disk.allowed_hosts.as_deref(), cut)
                .await?;
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

    pub(super) async fn unpublish(
        &self,
        req: proto::ControllerUnpublishVolumeRequest,
    ) -> ControllerResult<proto::ControllerUnpublishVolumeResponse> {
        let slot = self.volume_id(&req.volume_id)?;
        let _guard = self.lock(&slot)?;
        // An empty node ID means every node. An unknown volume or node is
        // already unpublished, which is success. "Every node" is only
        // known once the state is rebuilt.
        let nodes = if req.node_id.is_empty() {
            self.ready()?;
            self.manager.holders(slot.as_str())
        } else {
            vec![req.node_id.clone()]
        };
        for node in &nodes {
            match self
                .manager
                .unpublish(slot.as_str(), node)
                .await
                .map_err(ControllerError::from)?
            {
                UnpublishDecision::Detached { .. } => {
                    info!(volume = %slot, node = %node, "volume unpublished")
                }
                UnpublishDecision::NotAttached => {
                    info!(volume = %slot, node = %node, "volume was not published there; nothing to do")
                }
            }
        }
        // Also when the node held nothing: a retry after a failed fence.
        if self.fencing() && !nodes.is_empty() {
            self.fence_released(&slot, &nodes).await?;
        }
        Ok(proto::ControllerUnpublishVolumeResponse {})
    }

    /// Takes the hosts of `released` nodes off volume `id`'s export. The
    /// release is already recorded: a failure here fails the RPC, and the
    /// sidecar's retry (the node no longer a holder) fences again.
    async fn fence_released(&self, id: &VolumeId, released: &[String]) -> ControllerResult<()> {
        // A volume already deleted admits nobody.
        let Some(volume) = self.lookup(id).await? else {
            return Ok(());
        };
        let mut gone = false;
        for node in released {
            let status = self.nodes.node_status(node).await.map_err(|source| {
                ControllerError::NodeCheck {
                    node: node.clone(),
                    source,
                }
            })?;
            gone |= status != NodeStatus::Present;
        }
        let cut = if gone || self.manager.holders(id.as_str()).is_empty() {
            Cut::Always
        } else {
            Cut::Never
        };
        self.fence(id, volume.allowed_hosts.as_deref(), cut)
            .await
            .map(drop)
    }
}

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
