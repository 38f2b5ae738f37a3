//! The snapshot calls of `rds-csi csi`: CreateSnapshot, DeleteSnapshot,
//! ListSnapshots, and the content source of a CreateVolume made from a
//! snapshot or a volume.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use csi_server::proto::{
    self,
    controller_client::ControllerClient,
    volume_content_source::{SnapshotSource, Type, VolumeSource},
};
use tonic::transport::Channel;

#[derive(Subcommand, Debug)]
pub enum SnapshotCall {
    /// CreateSnapshot of a volume; prints the snapshot as `list-snapshots`
    /// does, after `created snapshot`.
    CreateSnapshot {
        /// The request name (a retry with the same name finds the same
        /// snapshot).
        name: String,
        /// The volume to snapshot.
        #[arg(long)]
        source: String,
        /// VolumeSnapshotClass parameter `key=value` (repeatable).
        #[arg(long = "param", value_parser = super::parse_kv)]
        params: Vec<(String, String)>,
    },
    /// DeleteSnapshot.
    DeleteSnapshot { snapshot_id: String },
    /// ListSnapshots (follows every page): one snapshot a line.
    ListSnapshots {
        /// Only the snapshots of this volume.
        #[arg(long)]
        source: Option<String>,
        /// Only this snapshot.
        #[arg(long = "id")]
        snapshot_id: Option<String>,
        #[arg(long, default_value_t = 0)]
        max_entries: i32,
    },
}

/// Where a new volume's content comes from (`create`'s flags).
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// Restore this snapshot into the new volume.
    #[arg(long, conflicts_with = "from_volume")]
    pub from_snapshot: Option<String>,
    /// Clone this volume into the new one.
    #[arg(long)]
    pub from_volume: Option<String>,
}

impl SourceArgs {
    /// The CreateVolume content source these flags name, if any.
    pub fn content_source(&self) -> Option<proto::VolumeContentSource> {
        let r#type = match (&self.from_snapshot, &self.from_volume) {
            (Some(snapshot_id), _) => Type::Snapshot(SnapshotSource {
                snapshot_id: snapshot_id.clone(),
            }),
            (None, Some(volume_id)) => Type::Volume(VolumeSource {
                volume_id: volume_id.clone(),
            }),
            (None, None) => return None,
        };
        Some(proto::VolumeContentSource {
            r#type: Some(r#type),
        })
    }
}

/// `from snapshot <id>` / `from volume <id>` for a created volume's line,
/// empty without a source.
pub fn describe_source(source: Option<&proto::VolumeContentSource>) -> String {
    match source.and_then(|s| s.r#type.as_ref()) {
        Some(Type::Snapshot(s)) => format!(" from snapshot {}", s.snapshot_id),
        Some(Type::Volume(v)) => format!(" from volume {}", v.volume_id),
        None => String::new(),
    }
}

/// `<id> source=<volume> size=<bytes> ready=<bool> created=<RFC 3339>`:
/// one line scripts can split on spaces and `=`.
pub fn describe_snapshot(s: &proto::Snapshot) -> String {
    let created = s
        .creation_time
        .as_ref()
        .and_then(|t| {
            let since_epoch =
                Duration::new(u64::try_from(t.seconds).ok()?, u32::try_from(t.nanos).ok()?);
            SystemTime::UNIX_EPOCH.checked_add(since_epoch)
        })
        .map_or_else(
            || "-".to_string(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
    format!(
        "{} source={} size={} ready={} created={created}",
        s.snapshot_id, s.source_volume_id, s.size_bytes, s.ready_to_use
    )
}

pub async fn call(channel: Channel, call: SnapshotCall) -> anyhow::Result<()> {
    let mut ctl = ControllerClient::new(channel);
    match call {
        SnapshotCall::CreateSnapshot {
            name,
            source,
            params,
        } => {
            let r = ctl
                .create_snapshot(proto::CreateSnapshotRequest {
                    source_volume_id: source,
                    name,
                    parameters: params.into_iter().collect::<HashMap<_, _>>(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let s = r.snapshot.unwrap_or_default();
            println!("created snapshot {}", describe_snapshot(&s));
        }
        SnapshotCall::DeleteSnapshot { snapshot_id } => {
            ctl.delete_snapshot(proto::DeleteSnapshotRequest {
                snapshot_id: snapshot_id.clone(),
                secrets: HashMap::new(),
            })
            .await?;
            println!("deleted snapshot {snapshot_id}");
        }
        SnapshotCall::ListSnapshots {
            source,
            snapshot_id,
            max_entries,
        } => {
            let mut token = String::new();
            loop {
                let page = ctl
                    .list_snapshots(proto::ListSnapshotsRequest {
                        max_entries,
                        starting_token: token,
                        source_volume_id: source.clone().unwrap_or_default(),
                        snapshot_id: snapshot_id.clone().unwrap_or_default(),
                        secrets: HashMap::new(),
                    })
                    .await?
                    .into_inner();
                for e in page.entries {
                    println!("{}", describe_snapshot(&e.snapshot.unwrap_or_default()));
                }
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_line_names_its_source_size_and_time_in_utc() {
        let mut s = proto::Snapshot {
            size_bytes: 1 << 30,
            snapshot_id: "snap-1".into(),
            source_volume_id: "pvc-a".into(),
            creation_time: Some(Default::default()),
            ready_to_use: true,
            group_snapshot_id: String::new(),
        };
        if let Some(t) = s.creation_time.as_mut() {
            t.seconds = 1_700_000_000;
        }
        assert_eq!(
            describe_snapshot(&s),
            "snap-1 source=pvc-a size=1073741824 ready=true created=2023-11-14T22:13:20Z"
        );
        let unknown = proto::Snapshot {
            creation_time: None,
            ..s
        };
        assert!(describe_snapshot(&unknown).ends_with(" created=-"));
    }

    #[test]
    fn create_names_at_most_one_source() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::cli::Cli::try_parse_from(
                ["rds-csi", "csi", "create", "pvc-b"].iter().chain(args),
            )
        };
        let both = parse(&["--from-snapshot", "snap-1", "--from-volume", "pvc-a"]);
        assert!(both.is_err(), "both sources accepted");
        assert!(parse(&["--from-volume", "pvc-a"]).is_ok());
        let none = SourceArgs::default();
        assert_eq!(none.content_source(), None);
        assert_eq!(describe_source(none.content_source().as_ref()), "");
        let snap = SourceArgs {
            from_snapshot: Some("snap-1".into()),
            from_volume: None,
        };
        assert_eq!(
            describe_source(snap.content_source().as_ref()),
            " from snapshot snap-1"
        );
        let vol = SourceArgs {
            from_snapshot: None,
            from_volume: Some("pvc-a".into()),
        };
        assert_eq!(
            describe_source(vol.content_source().as_ref()),
            " from volume pvc-a"
        );
    }
}
