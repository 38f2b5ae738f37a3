//! NodeUnstageVolume: take the staging mount off and disconnect, refusing
//! while anything still uses the device.

use super::*;

/// The staging path.
pub(super) fn unstage_args(r: &proto::NodeUnstageVolumeRequest, _: &Checks) -> NodeResult<PathBuf> {
    abs_path("staging_target_path", &r.staging_target_path)
}

impl<E: Exec, S: Sys> Inner<E, S> {
    pub(super) async fn unstage(
        &self,
        Opened {
            id,
            args: staging,
            rec,
            nqn,
        }: Opened<PathBuf>,
    ) -> NodeResult<proto::NodeUnstageVolumeResponse> {
        let sub = self.resolve(&nqn).await?;
        let devs = sub.dev_ids();
        let mounts = self.mounts().await?;
        let mut published_at = None;
        if let Some(r) = &rec {
            for t in r.targets.keys().filter(|t| **t != staging) {
                if self.still_published(t, &devs, &mounts).await? {
                    published_at = Some(t.as_path());
                    break;
                }
            }
        }
        let mounted_elsewhere = sub.devices.iter().find_map(|d| {
            mounts_of(&mounts, d.dev)
                .find(|m| m.mount_point != staging)
                .map(|m| (d.path.as_path(), m.mount_point.as_path()))
        });
        let state = classify(&mounts, &staging, &devs);
        match decide::unstage(&id, published_at, mounted_elsewhere, state)? {
            decide::Unmount::Staging => {
                self.dp
                    .unmount_all(&staging, false)
                    .await
                    .map_err(dp(format!("unstage volume {id}")))?;
            }
            decide::Unmount::Stale(m) => self.drop_stale_mount(&staging, &m).await?,
            decide::Unmount::Nothing => {}
        }
        // The staging directory belongs to the CO: it is left in place.
        let sub = self.resolve(&nqn).await?;
        if sub.is_connected() {
            let mounts = self.mounts().await?;
            let in_use = self
                .dp
                .in_use(&sub, &mounts)
                .await
                .map_err(dp("check the device is unused"))?;
            decide::may_disconnect(&id, in_use)?;
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
