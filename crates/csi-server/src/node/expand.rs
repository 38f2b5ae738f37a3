//! NodeExpandVolume: rescan the namespace and grow the filesystem online.

use super::*;

/// NodeExpandVolume's fields, checked.
pub(super) struct Expand {
    path: PathBuf,
    staging: Option<PathBuf>,
    required_bytes: u64,
    /// The capability says raw block.
    cap_block: bool,
}

pub(super) fn expand_args(r: &proto::NodeExpandVolumeRequest, _: &Checks) -> NodeResult<Expand> {
    let path = volume_path(&r.volume_path)?;
    let staging = optional_abs_path("staging_target_path", &r.staging_target_path)?;
    let range = r.capacity_range.unwrap_or_default();
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(NodeError::invalid("capacity_range", "must not be negative"));
    }
    if range.limit_bytes > 0 && range.limit_bytes < range.required_bytes {
        return Err(NodeError::invalid(
            "capacity_range",
            "limit_bytes is below required_bytes",
        ));
    }
    let cap_block = match &r.volume_capability {
        Some(c) => capability(Some(c))?.block,
        None => false,
    };
    Ok(Expand {
        path,
        staging,
        required_bytes: range.required_bytes as u64,
        cap_block,
    })
}

impl<E: Exec, S: Sys> Inner<E, S> {
    pub(super) async fn expand(
        &self,
        Opened { id, args, rec, nqn }: Opened<Expand>,
    ) -> NodeResult<proto::NodeExpandVolumeResponse> {
        let Expand {
            path,
            staging,
            required_bytes,
            cap_block,
        } = args;
        if !self.resolve(&nqn).await?.is_connected() {
            return Err(NodeError::NotStagedHere { volume: id });
        }
        let dev = self
            .dp
            .rescan(&nqn, required_bytes)
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
