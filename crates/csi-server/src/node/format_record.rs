//! The durable record that a volume was formatted, kept outside the node.
//!
//! The node's own volume record goes away at unstage, so on another node
//! (or after an unstage) only the probe stands between a volume that reads
//! back empty after a reconnect and mkfs. This record closes that gap: the
//! node reads it before any probe and writes it after a successful mkfs
//! (or when it finds a filesystem the record does not name yet), before
//! NodeStageVolume returns. A volume the record calls formatted that
//! probes empty is refused, never formatted.
//!
//! In a cluster the record is the PV annotation [`ANNOTATION`]
//! ([`KubeFormatRecord`]). For tests and standalone use it can be a JSON
//! file ([`FileFormatRecord`]) with the same meaning. Without either, the
//! probe alone decides, as it did before the record existed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};
use nvme::{Exec, FsType, Sys};
use tracing::{info, warn};

use super::state::VolumeRecord;
use super::{Inner, NodeError, NodeResult};

/// The PV annotation: its value is the filesystem the node made (or found).
pub const ANNOTATION: &str = "rds.csi.srvlab.io/formatted";

/// How long one read or write of the record may take. Past it the stage
/// fails with UNAVAILABLE (kubelet retries): never a format on a guess.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Where a kept record lives, as the read found it; the write goes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// The PV (or the key in the file).
    pub name: String,
    /// The PV's UID at the read: the write lands on that object only.
    pub uid: Option<String>,
}

/// What the record says about a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// No record can be kept for this volume (no PV of this driver for
    /// it: a volume made by hand or by a conformance run). Says why.
    NotKept(String),
    /// Kept at `at`; `formatted` is the filesystem it names, if any.
    Kept {
        at: RecordRef,
        formatted: Option<String>,
    },
}

/// The record could not be read or written (API server down, no
/// permission, a file that does not parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Reads and writes the format record.
pub trait FormatRecord: Send + Sync {
    /// What the record says about `volume`, whose PV is named `pv`.
    fn read<'a>(
        &'a self,
        volume: &'a str,
        pv: &'a str,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>>;

    /// Records that `volume` (kept at `at`) holds a filesystem `fs`.
    fn write<'a>(
        &'a self,
        volume: &'a str,
        at: &'a RecordRef,
        fs: FsType,
    ) -> BoxFuture<'a, Result<(), RecordError>>;

    /// The record, in words for messages and events.
    fn describe(&self, at: &RecordRef, fs: &str) -> String;
}

async fn bounded<T>(
    what: String,
    f: impl std::future::Future<Output = Result<T, RecordError>>,
) -> Result<T, RecordError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(RecordError(format!("{what}: no answer within {TIMEOUT:?}"))),
    }
}

// ---------------------------------------------------------------- Kubernetes

/// A Kubernetes error in one line: the API's code, reason and message, not
/// the whole status object.
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        e => e.to_string(),
    }
}

/// The record as an annotation on the volume's PV. Needs `get` and `patch`
/// on `persistentvolumes`.
pub struct KubeFormatRecord {
    client: kube::Client,
    driver: String,
}

impl KubeFormatRecord {
    pub fn new(client: kube::Client, driver: impl Into<String>) -> Self {
        KubeFormatRecord {
            client,
            driver: driver.into(),
        }
    }

    async fn read_pv(&self, volume: &str, pv: &str) -> Result<Recorded, RecordError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let found = api
            .get_opt(pv)
            .await
            .map_err(|e| RecordError(format!("read PersistentVolume {pv}: {}", kube_error(&e))))?;
        let Some(found) = found else {
            return Ok(Recorded::NotKept(format!("no PersistentVolume named {pv}")));
        };
        let csi = found.spec.as_ref().and_then(|s| s.csi.as_ref());
        match csi {
            Some(c) if c.driver == self.driver && c.volume_handle == volume => {}
            _ => {
                return Ok(Recorded::NotKept(format!(
                    "PersistentVolume {pv} is not volume {volume} of driver {}",
                    self.driver
                )))
            }
        }
        let formatted = found
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .cloned();
        Ok(Recorded::Kept {
            at: RecordRef {
                name: pv.to_string(),
                uid: found.metadata.uid.clone(),
            },
            formatted,
        })
    }

    async fn patch(&self, at: &RecordRef, fs: FsType) -> Result<(), RecordError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        // The UID makes the patch fail on a PV deleted and made again
        // under the same name since the read (metadata.uid is immutable).
        let patch = serde_json::json!({
            "metadata": {
                "uid": at.uid,
                "annotations": { ANNOTATION: fs.as_str() },
            }
        });
        let params = PatchParams {
            field_manager: Some("rds-csi-node".into()),
            ..Default::default()
        };
        api.patch(&at.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                RecordError(format!(
                    "annotate PersistentVolume {}: {}",
                    at.name,
                    kube_error(&e)
                ))
            })?;
        Ok(())
    }
}

impl FormatRecord for KubeFormatRecord {
    fn read<'a>(
        &'a self,
        volume: &'a str,
        pv: &'a str,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(bounded(
            format!("read PersistentVolume {pv}"),
            self.read_pv(volume, pv),
        ))
    }

    fn write<'a>(
        &'a self,
        _volume: &'a str,
        at: &'a RecordRef,
        fs: FsType,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(bounded(
            format!("annotate PersistentVolume {}", at.name),
            self.patch(at, fs),
        ))
    }

    fn describe(&self, at: &RecordRef, fs: &str) -> String {
        format!(
            "the annotation {ANNOTATION}={fs} on PersistentVolume {}",
            at.name
        )
    }
}

// ---------------------------------------------------------------- file

/// The record as a JSON object `{"<volume ID>": "<filesystem>"}` in one
/// file, for tests and standalone use (`--format-record-file`): a node
/// without Kubernetes keeps the same rules. Entries are never removed
/// (DeleteVolume does not reach the node), so a volume ID used again after
/// a delete is refused: use fresh IDs.
pub struct FileFormatRecord {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl FileFormatRecord {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileFormatRecord {
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    async fn load(&self) -> Result<BTreeMap<String, String>, RecordError> {
        match tokio::fs::read(&self.path).await {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                RecordError(format!(
                    "{} is not a JSON object of strings: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(RecordError(format!("read {}: {e}", self.path.display()))),
        }
    }

    async fn store(&self, map: &BTreeMap<String, String>) -> Result<(), RecordError> {
        let io = |e: std::io::Error| RecordError(format!("write {}: {e}", self.path.display()));
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(map).map_err(|e| RecordError(e.to_string()))?;
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        tokio::io::AsyncWriteExt::write_all(&mut f, &text)
            .await
            .map_err(io)?;
        f.sync_all().await.map_err(io)?;
        tokio::fs::rename(&tmp, &self.path).await.map_err(io)
    }
}

impl FormatRecord for FileFormatRecord {
    fn read<'a>(
        &'a self,
        volume: &'a str,
        _pv: &'a str,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async move {
            let _held = self.lock.lock().await;
            let map = self.load().await?;
            Ok(Recorded::Kept {
                at: RecordRef {
                    name: volume.to_string(),
                    uid: None,
                },
                formatted: map.get(volume).cloned(),
            })
        })
    }

    fn write<'a>(
        &'a self,
        volume: &'a str,
        _at: &'a RecordRef,
        fs: FsType,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move {
            let _held = self.lock.lock().await;
            let mut map = self.load().await?;
            map.insert(volume.to_string(), fs.as_str().to_string());
            self.store(&map).await
        })
    }

    fn describe(&self, at: &RecordRef, fs: &str) -> String {
        format!(
            "the format record in {} ({}={fs})",
            self.path.display(),
            at.name
        )
    }
}

// ---------------------------------------------------------------- in stage

impl<E: Exec, S: Sys> Inner<E, S> {
    /// What the durable format record says about the volume, read before
    /// the probe (an API call must never sit between the device's last
    /// identity check and mkfs). `None`: no record is kept (no Kubernetes,
    /// or no PV for this volume) and the probe alone decides. A record that
    /// cannot be read fails the stage with UNAVAILABLE before anything
    /// touches the device: no format on a guess.
    pub(super) async fn read_format_record(
        &self,
        rec: &VolumeRecord,
    ) -> NodeResult<Option<(Arc<dyn FormatRecord>, RecordRef, Option<String>)>> {
        let Some(r) = self.format_record.clone() else {
            return Ok(None);
        };
        // The external-provisioner names the PV after the volume.
        let id = &rec.volume_id;
        match r.read(id, id).await {
            Ok(Recorded::Kept { at, formatted }) => Ok(Some((r, at, formatted))),
            Ok(Recorded::NotKept(why)) => {
                warn!(volume = %id, why, "no durable format record for this volume; the probe alone decides whether it may be formatted");
                Ok(None)
            }
            Err(error) => Err(NodeError::FormatRecordUnread {
                volume: id.clone(),
                error,
            }),
        }
    }

    /// Records that the volume holds a filesystem, before the stage
    /// returns. If this fails after a mkfs, the stage fails (UNAVAILABLE);
    /// the retry finds the filesystem and writes the record then.
    pub(super) async fn write_format_record(
        &self,
        rec: &VolumeRecord,
        record: &dyn FormatRecord,
        at: &RecordRef,
        fs: FsType,
        prepared: nvme::Prepared,
    ) -> NodeResult<()> {
        let id = &rec.volume_id;
        match record.write(id, at, fs).await {
            Ok(()) => {
                info!(volume = %id, record = %record.describe(at, fs.as_str()), "recorded that the volume is formatted");
                Ok(())
            }
            Err(error) => Err(NodeError::FormatRecordUnwritten {
                volume: id.clone(),
                fs,
                made_now: prepared == nvme::Prepared::Formatted,
                record: record.describe(at, fs.as_str()),
                error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_record_keeps_what_was_written_across_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("formatted.json");
        let r = FileFormatRecord::new(&path);
        let Recorded::Kept { at, formatted } = r.read("pvc-1", "pvc-1").await.unwrap() else {
            panic!("a file keeps every volume")
        };
        assert_eq!(formatted, None, "a missing file records nothing yet");
        r.write("pvc-1", &at, FsType::Xfs).await.unwrap();
        let again = FileFormatRecord::new(&path);
        assert!(matches!(
            again.read("pvc-1", "pvc-1").await.unwrap(),
            Recorded::Kept { formatted: Some(f), .. } if f == "xfs"
        ));
        assert!(matches!(
            again.read("pvc-2", "pvc-2").await.unwrap(),
            Recorded::Kept {
                formatted: None,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_file_record_that_does_not_parse_is_an_error_not_an_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("formatted.json");
        std::fs::write(&path, "{\"pvc-1\": ").unwrap();
        let r = FileFormatRecord::new(&path);
        let e = r.read("pvc-1", "pvc-1").await.unwrap_err();
        assert!(e.0.contains("formatted.json"), "{e}");
        let at = RecordRef {
            name: "pvc-1".into(),
            uid: None,
        };
        r.write("pvc-1", &at, FsType::Ext4).await.unwrap_err();
    }
}
