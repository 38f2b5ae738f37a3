//! NodeExpandVolume: rescan the namespace and grow the filesystem online.

use super::*;

impl<E: Exec, S: Sys> Inner<E, S> {
    pub(super) async fn expand(
        &self,
        req: proto::NodeExpandVolumeRequest,
    ) -> NodeResult<proto::NodeExpandVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path)?;
        let staging = match req.staging_target_path.as_str() {
            "" => None,
            s => Some(abs_path("staging_target_path", s)?),
        };
        let range = req.capacity_range.unwrap_or_default();
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(NodeError::invalid("capacity_range", "must not be negative"));
        }
        if range.limit_bytes > 0 && range.limit_bytes < range.required_bytes {
            return Err(NodeError::invalid(
                "capacity_range",
                "limit_bytes is below required_bytes",
            ));
        }
        let cap_block = match &req.volume_capability {
            Some(c) => capability(Some(c))?.block,
            None => false,
        };
        let _guard = self.lock(&id)?;
        let rec = self.record(&id).await?;
        let nqn = self.nqn_of(&id, rec.as_ref());
        if !self.resolve(&nqn).await?.is_connected() {
            return Err(NodeError::NotStagedHere { volume: id });
        }
        let dev = self
            .dp
            .rescan(&nqn, range.required_bytes as u64)
            .await
            .map_err(dp(format!("rescan volume {id}")))?;
        let is_node = self
            .lstat(&path)
            .await?
            .is_some_and(|s| s.kind == FileKind::BlockDevice);
        if cap_block || rec.as_ref().is_some_and(|r| r.block) || is_node {
            return Ok(proto::NodeExpandVolumeResponse {
                capacity_bytes: dev.size_bytes as i64,
            });
        }
        let devs = self.resolve(&nqn).await?.dev_ids();
        let mounts = self.mounts().await?;
        let candidates = std::iter::once(&path).chain(staging.iter());
        let mut found = None;
        for p in candidates {
            match classify(&mounts, p, &devs) {
                MountState::Current(m) => {
                    found = Some((p.clone(), m));
                    break;
                }
                MountState::Other(m) => {
                    return Err(NodeError::StaleMountAtExpand {
                        path: p.clone(),
                        dev: m.dev(),
                        source_name: m.source,
                        current: dev.dev,
                    })
                }
                MountState::NotMounted => {}
            }
        }
        let Some((mount_point, m)) = found else {
            return Err(NodeError::NotAMountOfVolume { volume: id, path });
        };
        self.dp
            .grow_filesystem(&dev, &mount_point, &m.fs_type)
            .await
            .map_err(dp(format!("grow the filesystem of volume {id}")))?;
        info!(volume = %id, bytes = dev.size_bytes, "filesystem grown");
        Ok(proto::NodeExpandVolumeResponse {
            capacity_bytes: dev.size_bytes as i64,
        })
    }
}
