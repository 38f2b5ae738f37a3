//! One small record per staged volume, in the node's state directory.
//!
//! NodeUnstage, NodeGetVolumeStats and NodeExpand carry no volume context,
//! and recovery after a controller renumbering needs the target to
//! reconnect to; the record keeps both, plus the publish targets (a device
//! node is not visible in the mount table). It also tells the orphan
//! cleaner which connections are meant to be there. Records are written
//! before connecting and removed after disconnecting, under the volume's
//! guard, atomically (write aside, rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nvme::steps::mark;
use nvme::{FsType, Sys, Target};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub nqn: String,
    pub address: String,
    pub port: u16,
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: u32,
    pub staging_path: PathBuf,
    pub block: bool,
    #[serde(default)]
    pub fs_type: Option<String>,
    #[serde(default)]
    pub mount_flags: Vec<String>,
    /// This node made the filesystem (informational).
    #[serde(default)]
    pub formatted_here: bool,
    /// The volume was mounted with a filesystem while staged here: from
    /// then on it is never formatted, whatever a probe says after a
    /// reconnect.
    #[serde(default)]
    pub filesystem_seen: bool,
    /// Publish targets and whether each is read-only.
    #[serde(default)]
    pub targets: BTreeMap<PathBuf, bool>,
    /// `[namespace, name]` of the volume's PVC, from the volume context, so
    /// events raised where no context comes along (NodeGetVolumeStats
    /// recovering a stale mount) still reach the PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<(String, String)>,
}

impl VolumeRecord {
    pub fn target(&self) -> Target {
        Target {
            address: self.address.clone(),
            port: self.port,
            nqn: self.nqn.clone(),
            ctrl_loss_tmo: self.ctrl_loss_tmo,
            reconnect_delay: self.reconnect_delay,
            keep_alive_tmo: self.keep_alive_tmo,
        }
    }

    pub fn fs(&self) -> Option<FsType> {
        self.fs_type.as_deref().and_then(FsType::parse)
    }
}

/// What is in the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Record(Box<VolumeRecord>),
    /// A file named after a volume that does not parse: it still claims
    /// the volume (never disconnect on a guess).
    Unreadable {
        volume_id: String,
        error: String,
    },
}

pub struct Records<'a, S> {
    pub sys: &'a S,
    pub dir: &'a Path,
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl<S: Sys> Records<'_, S> {
    fn path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{volume_id}.json"))
    }

    pub async fn load(&self, volume_id: &str) -> std::io::Result<Option<Stored>> {
        let r = match self.sys.read_to_string(&self.path(volume_id)).await {
            Ok(text) => Ok(Some(parse(volume_id, &text))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        };
        mark("record_read");
        r
    }

    pub async fn save(&self, r: &VolumeRecord) -> std::io::Result<()> {
        self.sys.create_dir_all(self.dir).await?;
        let text = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        let written = self.sys.write_file(&self.path(&r.volume_id), &text).await;
        mark("record_write");
        written
    }

    pub async fn remove(&self, volume_id: &str) -> std::io::Result<()> {
        let r = match self.sys.remove_file(&self.path(volume_id)).await {
            Err(e) if !not_found(&e) => Err(e),
            _ => Ok(()),
        };
        mark("record_remove");
        r
    }

    /// Every stored record; a missing directory holds none.
    pub async fn list(&self) -> std::io::Result<Vec<Stored>> {
        let names = match self.sys.read_dir(self.dir).await {
            Ok(n) => n,
            Err(e) if not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for name in names {
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if let Some(s) = self.load(id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

pub fn parse(volume_id: &str, text: &str) -> Stored {
    match serde_json::from_str::<VolumeRecord>(text) {
        Ok(r) if r.volume_id == volume_id => Stored::Record(Box::new(r)),
        Ok(r) => Stored::Unreadable {
            volume_id: volume_id.to_string(),
            error: format!("the record names volume {:?}", r.volume_id),
        },
        Err(e) => Stored::Unreadable {
            volume_id: volume_id.to_string(),
            error: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn record() -> VolumeRecord {
        VolumeRecord {
            volume_id: "pvc-1".into(),
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
            address: "10.0.0.1".into(),
            port: 4420,
            ctrl_loss_tmo: 600,
            reconnect_delay: 5,
            keep_alive_tmo: 5,
            staging_path: "/var/lib/kubelet/plugins/x/globalmount".into(),
            block: false,
            fs_type: Some("ext4".into()),
            mount_flags: vec!["noatime".into()],
            formatted_here: true,
            filesystem_seen: true,
            targets: BTreeMap::from([(PathBuf::from("/var/lib/kubelet/pods/p/mount"), false)]),
            pvc: Some(("vms".into(), "disk".into())),
        }
    }

    #[test]
    fn a_record_round_trips_and_names_its_volume() {
        let r = record();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(parse("pvc-1", &text), Stored::Record(Box::new(r)));
        assert!(matches!(parse("pvc-2", &text), Stored::Unreadable { .. }));
        assert!(matches!(parse("pvc-1", "{"), Stored::Unreadable { .. }));
    }

    #[test]
    fn a_record_from_before_pvcs_were_kept_still_parses() {
        let mut r = record();
        r.pvc = None;
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("pvc\""), "{text}");
        assert_eq!(parse("pvc-1", &text), Stored::Record(Box::new(r)));
    }

    proptest! {
        #[test]
        fn record_parsing_never_panics(s in any::<String>()) {
            let _ = parse("pvc-1", &s);
        }
    }
}
