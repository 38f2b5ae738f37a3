//! Fencing at the target: with a backend that can ([`Capabilities::fencing`]),
//! a volume's export admits exactly the NVMe host NQNs of the nodes that
//! hold it, and a host that loses its place has its open sessions cut.
//!
//! Trust model: which nodes hold a volume is the attachment manager's
//! decision; which host NQN a node has is what its node plugin recorded on
//! its own Node object (`rds.csi.srvlab.io/host-nqn`). Only a party that
//! may update Node objects (the node plugins, cluster administrators) can
//! write that annotation; a forged one can make the target admit a host
//! the cluster did not pick, never two nodes under one identity (two nodes
//! reporting one host NQN are refused before any publish). A node with no
//! usable host NQN is never published to while fencing is on.
//!
//! When sessions are cut (`docs/attachments.md#fencing-at-the-target`):
//! - ControllerPublish cuts when the volume's list held a host that is no
//!   holder any more (released without this controller's unpublish: a
//!   deleted node, a stale holder, state rebuilt after a restart), or when
//!   the manager dropped holders whose node is gone;
//! - ControllerUnpublish cuts when no holder is left (a single-node
//!   volume: nobody else is connected, so the cut costs nobody anything,
//!   and a force-detached node that is still writing is stopped), or when
//!   the leaving node is out of service or gone. At the end of a live
//!   migration's window the leaving node, which detached normally, is
//!   removed from the list without a cut: a cut drops every session of
//!   the volume, the staying VM's too, until it reconnects.

use std::collections::BTreeSet;

use storage::Capabilities;

use super::*;

/// When the open sessions of a volume are cut after its list is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// When the list held a host it no longer holds.
    IfAHostLeft,
    Always,
    Never,
}

impl<B: Backend> ControllerService<B> {
    pub(super) fn fencing(&self) -> bool {
        let caps: Capabilities = self.backend.capabilities();
        caps.fencing
    }

    /// The host NQNs of the nodes holding `volume` now.
    async fn holder_hosts(&self, volume: &VolumeId) -> ControllerResult<BTreeSet<Nqn>> {
        let mut hosts = BTreeSet::new();
        for node in self.manager.holders(volume.as_str()) {
            let reported = self.nodes.host_nqn(&node).await.map_err(|source| {
                ControllerError::HostNqnCheck {
                    node: node.clone(),
                    source,
                }
            })?;
            let unusable = |reason: String| ControllerError::HostNqnUnusable {
                node: node.clone(),
                reason,
            };
            let nqn = reported.ok_or_else(|| unusable("none recorded".into()))?;
            hosts.insert(Nqn::new(&nqn).map_err(|e| unusable(e.to_string()))?);
        }
        Ok(hosts)
    }

    /// Makes volume `id`'s export admit exactly the hosts of its holders
    /// (`current`: what it admits now, as just looked up), then cuts open
    /// sessions as `cut` says; returns the hosts admitted. Either failing
    /// fails the RPC: the sidecar retries, and the retry, finding the list
    /// already right, still cuts (the cut is remembered as pending until
    /// it succeeds).
    pub(super) async fn fence(
        &self,
        id: &VolumeId,
        current: Option<&[String]>,
        cut: Cut,
    ) -> ControllerResult<BTreeSet<Nqn>> {
        let want = self.holder_hosts(id).await?;
        let wanted: BTreeSet<&str> = want.iter().map(Nqn::as_str).collect();
        let have: Option<BTreeSet<&str>> =
            current.map(|hosts| hosts.iter().map(String::as_str).collect());
        if have.as_ref() != Some(&wanted) {
            let hosts: Vec<Nqn> = want.iter().cloned().collect();
            self.backend
                .set_allowed_hosts(id, &hosts)
                .await
                .map_err(Step::AllowHosts(id.clone()).failed())?;
            info!(volume = %id, hosts = ?wanted, "export admits only these hosts");
        }
        let left: Vec<&str> = have
            .iter()
            .flatten()
            .filter(|h| !wanted.contains(*h))
            .copied()
            .collect();
        // A cut that failed before is owed whatever this call would do.
        let owed = self.pending_cuts().contains(id.as_str());
        let cut_now = owed
            || match cut {
                Cut::Always => true,
                Cut::IfAHostLeft => !left.is_empty(),
                Cut::Never => false,
            };
        if cut_now {
            self.pending_cuts().insert(id.to_string());
            self.backend
                .cut_sessions(id)
                .await
                .map_err(Step::CutSessions(id.clone()).failed())?;
            self.pending_cuts().remove(id.as_str());
            info!(volume = %id, removed = ?left, admitted = ?wanted, "open sessions cut; admitted hosts reconnect");
        }
        Ok(want)
    }

    fn pending_cuts(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.pending_cuts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A volume CreateVolume returns admits only its holders (nobody,
    /// for a new one): a volume that still admits any host (made before
    /// fencing was on, or a retry that finds one half made) is narrowed.
    pub(super) async fn fence_new(&self, volume: &mut Volume) -> ControllerResult<()> {
        if !self.fencing() || volume.allowed_hosts.is_some() {
            return Ok(());
        }
        let id = VolumeId::new(&volume.id)
            .map_err(|e| ControllerError::invalid("name", e.to_string()))?;
        let hosts = self.fence(&id, None, Cut::Never).await?;
        volume.allowed_hosts = Some(hosts.iter().map(Nqn::to_string).collect());
        Ok(())
    }
}
