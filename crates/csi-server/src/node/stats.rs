//! NodeGetVolumeStats: usage and the volume condition; a stale mount found
//! here is recovered when its device is gone.

use super::*;
use proto::volume_usage::Unit;

/// The volume path (a staging path, which is optional, is only checked).
pub(super) fn stats_args(r: &proto::NodeGetVolumeStatsRequest, _: &Checks) -> NodeResult<PathBuf> {
    let path = volume_path(&r.volume_path)?;
    optional_abs_path("staging_target_path", &r.staging_target_path)?;
    Ok(path)
}

impl<E: Exec, S: Sys> Inner<E, S> {
    pub(super) async fn stats(
        &self,
        Opened {
            id,
            args: path,
            mut rec,
            nqn,
        }: Opened<PathBuf>,
    ) -> NodeResult<proto::NodeGetVolumeStatsResponse> {
        let Some(st) = self.lstat(&path).await? else {
            return Err(NodeError::NoVolumePath { path });
        };
        let sub = self.resolve(&nqn).await?;
        let devs = sub.dev_ids();
        let mounts = self.mounts().await?;
        let condition =
            |abnormal: bool, message: String| Some(proto::VolumeCondition { abnormal, message });
        let liveness = |sub: &nvme::Subsystem| -> (bool, String) {
            if !sub.is_connected() {
                (true, format!("{nqn} is not connected on this node"))
            } else if sub.device().is_none() {
                (
                    true,
                    format!("{nqn} has no block device: {}", sub.describe()),
                )
            } else if !sub.all_live() {
                (true, format!("{nqn} is not fully live: {}", sub.describe()))
            } else {
                (false, format!("{nqn}: {}", sub.describe()))
            }
        };
        let block = st.kind == FileKind::BlockDevice
            || (st.kind == FileKind::Dir
                && !is_mount_point(&mounts, &path)
                && rec.as_ref().is_some_and(|r| r.block));
        if block {
            let (mut abnormal, mut message) = liveness(&sub);
            if st.kind == FileKind::BlockDevice
                && !abnormal
                && !st.rdev.is_some_and(|d| devs.contains(&d))
            {
                abnormal = true;
                message = format!(
                    "{} is a node for {}, not for the volume's current device",
                    path.display(),
                    st.rdev.map(|d| d.to_string()).unwrap_or_default()
                );
                if let Some(r) = rec.as_mut() {
                    match self.recover(r, false).await {
                        Ok(done) => message.push_str(&format!("; recovered: {}", done.join(", "))),
                        Err(e) => message.push_str(&format!("; not recovered: {}", chain(&e))),
                    }
                }
            }
            let usage = sub
                .device()
                .map(|d| proto::VolumeUsage {
                    available: 0,
                    total: d.size_bytes as i64,
                    used: 0,
                    unit: Unit::Bytes as i32,
                })
                .into_iter()
                .collect();
            return Ok(proto::NodeGetVolumeStatsResponse {
                usage,
                volume_condition: condition(abnormal, message),
            });
        }
        let (abnormal, message) = match classify(&mounts, &path, &devs) {
            MountState::NotMounted => {
                return Err(NodeError::VolumePathNotMounted { volume: id, path })
            }
            MountState::Current(_) => liveness(&sub),
            MountState::Other(m) => {
                let gone = self
                    .dp
                    .device_gone(m.dev())
                    .await
                    .map_err(dp("look up a mounted device"))?;
                let mut message = format!(
                    "{} is mounted from {} ({}), not from the volume's current device{}",
                    path.display(),
                    m.source,
                    m.dev(),
                    if gone { ", which no longer exists" } else { "" }
                );
                match rec.as_mut() {
                    Some(r) if gone => match self.recover(r, false).await {
                        Ok(done) => message.push_str(&format!(
                            "; remounted ({}); running containers keep the old mount until they restart",
                            done.join(", ")
                        )),
                        Err(e) => message.push_str(&format!("; not recovered: {}", chain(&e))),
                    },
                    _ => {}
                }
                (true, message)
            }
        };
        let usage = match self.dp.statfs(&path).await {
            Ok(s) => vec![
                proto::VolumeUsage {
                    available: s.available_bytes as i64,
                    total: s.total_bytes as i64,
                    used: s.total_bytes.saturating_sub(s.free_bytes) as i64,
                    unit: Unit::Bytes as i32,
                },
                proto::VolumeUsage {
                    available: s.free_inodes as i64,
                    total: s.total_inodes as i64,
                    used: s.total_inodes.saturating_sub(s.free_inodes) as i64,
                    unit: Unit::Inodes as i32,
                },
            ],
            Err(e) if abnormal => {
                warn!(volume = %id, error = %chain(&e), "statfs of an abnormal volume failed");
                Vec::new()
            }
            Err(e) => return Err(dp(format!("statfs volume {id}"))(e)),
        };
        Ok(proto::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: condition(abnormal, message),
        })
    }
}
