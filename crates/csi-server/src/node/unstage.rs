//! NodeUnstageVolume: take the staging mount off and disconnect, refusing
//! while anything still uses the device.

use super::*;

impl<E: Exec, S: Sys> Inner<E, S> {
    pub(super) async fn unstage(
        &self,
        req: proto::NodeUnstageVolumeRequest,
    ) -> NodeResult<proto::NodeUnstageVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
        let _guard = self.lock(&id)?;
        let rec = self.record(&id).await?;
        let nqn = self.nqn_of(&id, rec.as_ref());
        let sub = self.resolve(&nqn).await?;
        let devs = sub.dev_ids();
        let mounts = self.mounts().await?;
        if let Some(r) = &rec {
            for t in r.targets.keys().filter(|t| **t != staging) {
                if self.still_published(t, &devs, &mounts).await? {
                    return Err(NodeError::StillPublished {
                        volume: id,
                        at: t.clone(),
                    });
                }
            }
        }
        for d in &sub.devices {
            if let Some(m) = mounts_of(&mounts, d.dev).find(|m| m.mount_point != staging) {
                return Err(NodeError::StillMounted {
                    volume: id,
                    device: d.path.clone(),
                    at: m.mount_point.clone(),
                });
            }
        }
        match classify(&mounts, &staging, &devs) {
            MountState::Current(_) => {
                self.dp
                    .unmount_all(&staging, false)
                    .await
                    .map_err(dp(format!("unstage volume {id}")))?;
            }
            MountState::Other(m) => self.drop_stale_mount(&staging, &m).await?,
            MountState::NotMounted => {}
        }
        // The staging directory belongs to the CO: it is left in place.
        let sub = self.resolve(&nqn).await?;
        if sub.is_connected() {
            let mounts = self.mounts().await?;
            if let Some(why) = self
                .dp
                .in_use(&sub, &mounts)
                .await
                .map_err(dp("check the device is unused"))?
            {
                return Err(NodeError::DeviceInUse { volume: id, why });
            }
            self.dp
                .disconnect(&nqn)
                .await
                .map_err(dp(format!("disconnect volume {id}")))?;
        }
        self.records()
            .remove(&id)
            .await
            .map_err(|source| NodeError::Record {
                action: "remove",
                volume: id.clone(),
                dir: None,
                source,
            })?;
        info!(volume = %id, "volume unstaged and disconnected");
        Ok(proto::NodeUnstageVolumeResponse {})
    }
}
