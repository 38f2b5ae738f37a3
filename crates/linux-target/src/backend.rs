//! The Linux target behind the driver's [`storage::Backend`] trait (the
//! `nvmet` backend): a volume or snapshot is a thin volume of the one
//! configured pool named by its ID (or, for an ID LVM cannot take as a
//! name, a name derived from it, the ID in a tag: [`crate::names::LvName`]),
//! its block device `/dev/<vg>/<lv>` is its location, the driver's
//! records are its LVM tags, and a volume is
//! exported as one subsystem admitting exactly the hosts the controller
//! names.
//!
//! Every thin volume is its own copy-on-write domain, so volumes report
//! the subvolume layout and the pool offers one copy method, a thin
//! snapshot: a snapshot is a read-only thin snapshot (not exported, not
//! activated), a restore or a clone a writable thin snapshot grown to the
//! asked size and exported. There are no byte copies. Every input is
//! validated before any command; every call is idempotent (see
//! [`LinuxTarget`]).

use std::collections::{BTreeSet, HashMap};

use storage::{
    Backend, Capabilities, Capacity, CopyMethod, CopySpec, Error as StorageError, ErrorKind,
    IdPrefix, Layout, Lineage, NewVolume, Place, PoolInfo, Result, SnapshotSpec, Volume, VolumeId,
    VolumeMeta,
};

use crate::error::{Error, E};
use crate::meta::Meta;
use crate::names::{check_size, Nqn, VolumeName};
use crate::target::{self, LinuxTarget};

/// What [`PoolInfo::kind`] says of the pool.
pub const POOL_KIND: &str = "lvm-thin";

/// The Linux target's failures in the categories every backend reports.
impl From<Error> for StorageError {
    fn from(e: Error) -> StorageError {
        StorageError::new(e.0.storage_kind(), e)
    }
}

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> StorageError {
    StorageError::new(
        ErrorKind::InvalidInput,
        crate::ValidationError::new(what, value, reason),
    )
}

/// The driver's records as LVM tags. Refused (before any command): a
/// lineage or copy source that cannot be a logical volume's name.
pub fn meta_of(m: &VolumeMeta) -> std::result::Result<Meta, crate::ValidationError> {
    let name = |id: &VolumeId| VolumeName::new(id.as_str());
    Ok(Meta {
        created: m.created,
        cluster: m.cluster.clone(),
        snapshot_of: m.snapshot.as_ref().map(|l| name(&l.source)).transpose()?,
        size: m.snapshot.as_ref().and_then(|l| l.size_bytes),
        method: m.snapshot.as_ref().map(|l| l.method),
        clone_of: None,
        copy_of: m.copy_of.as_ref().map(name).transpose()?,
        retain: m.retain,
        orphaned_since: m.orphaned_since,
    })
}

/// The driver's records read from LVM tags. A snapshot whose method is not
/// recorded (made by [`LinuxTarget::create_snapshot`]) is a thin snapshot.
pub fn volume_meta(m: &Meta) -> VolumeMeta {
    let id = |v: &VolumeName| VolumeId::new(v.as_str()).ok();
    VolumeMeta {
        created: m.created,
        cluster: m.cluster.clone(),
        snapshot: m.snapshot_of.as_ref().and_then(id).map(|source| Lineage {
            source,
            size_bytes: m.size,
            method: m.method.unwrap_or(CopyMethod::Subvolume),
        }),
        copy_of: m.copy_of.as_ref().and_then(id),
        retain: m.retain,
        orphaned_since: m.orphaned_since,
    }
}

/// A Linux host's kernel NVMe target and LVM thin pool as a backend.
#[derive(Clone)]
pub struct NvmetBackend {
    target: LinuxTarget,
}

impl NvmetBackend {
    pub fn new(target: LinuxTarget) -> Self {
        NvmetBackend { target }
    }

    pub fn target(&self) -> &LinuxTarget {
        &self.target
    }

    /// A volume ID as the target names it (every ID the driver takes; its
    /// logical volume's name is the target's business).
    fn name(&self, id: &str) -> std::result::Result<VolumeName, crate::ValidationError> {
        VolumeName::new(id)
    }

    /// An export is this target's: the NQN its prefix gives the volume and
    /// the port it listens on.
    fn check_export(&self, lv: &VolumeName, export: &storage::Export) -> Result<()> {
        let nqn = self.target.nqn(lv);
        if export.nqn.as_str() != nqn.as_str() {
            return Err(invalid(
                "nqn",
                export.nqn.as_str(),
                format!("this target exports {lv} as {nqn} (check --nqn-prefix)"),
            ));
        }
        let port = self.target.config().port.service;
        if export.port != port {
            return Err(invalid(
                "nvme port",
                &export.port.to_string(),
                format!("this target listens on port {port} only (StorageClass nvmePort)"),
            ));
        }
        Ok(())
    }

    /// A volume or snapshot as the CSI layer sees it, with its export as
    /// configfs shows it (`None`: not exported).
    fn volume(&self, v: target::Volume, export: Option<&target::Export>) -> Volume {
        let volume = v.is_ours() && !v.is_snapshot();
        let device = self.target.device(&v.name);
        // Exported as the driver exports: reachable on the port, the
        // namespace on this volume, only the allowed hosts admitted. Less
        // (configfs lost in a reboot, a hand-made change) reads as not
        // exported, so the next publish exports it again.
        let whole = export.filter(|e| {
            e.on_port && !e.any_host && e.device_path.as_deref() == Some(device.as_str())
        });
        Volume {
            id: v.name.to_string(),
            size_bytes: v.size_bytes,
            location: Some(device),
            layout: Layout::Subvolume,
            nqn: volume.then(|| self.target.nqn(&v.name).to_string()),
            port: volume.then_some(self.target.config().port.service),
            exported: whole.is_some(),
            meta: v.meta.as_ref().map(volume_meta).unwrap_or_default(),
            busy: None,
            allowed_hosts: whole.map(|e| e.allowed_hosts.clone()),
        }
    }
}

fn no_byte_copy() -> StorageError {
    invalid(
        "copy method",
        CopyMethod::ByteCopy.as_str(),
        "the nvmet backend makes no byte copies: snapshots and clones are thin snapshots \
         (copyMethod subvolume or copy-from)",
    )
}

impl Backend for NvmetBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            clones: true,
            expansion: true,
            fencing: true,
        }
    }

    /// A logical volume of that name the driver did not make in its pool
    /// is refused (ALREADY_EXISTS), never reported as a volume: nothing
    /// the driver does (export it, hand it to a node, delete it) may
    /// reach it.
    async fn get_volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        let lv = self.name(id.as_str())?;
        let Some(v) = self.target.get_volume(&lv).await? else {
            return Ok(None);
        };
        if !v.is_ours() {
            return Err(Error(E::AlreadyExists(format!(
                "{lv} exists on the target host but is not a volume this driver made in pool {}; \
                 leaving it alone",
                self.target.config().pool
            )))
            .into());
        }
        let export = if !v.is_snapshot() {
            self.target.export_state(&lv).await?
        } else {
            None
        };
        Ok(Some(self.volume(v, export.as_ref())))
    }

    fn location(&self, id: &VolumeId, _place: &Place) -> Result<String> {
        Ok(self.target.device(&self.name(id.as_str())?))
    }

    /// Makes the thin volume and exports it admitting no host: the
    /// controller admits the nodes it publishes to.
    async fn create_volume(&self, spec: &NewVolume) -> Result<()> {
        let lv = self.name(spec.id.as_str())?;
        check_size(spec.size_bytes)?;
        self.check_export(&lv, &spec.export)?;
        let meta = meta_of(&spec.meta)?;
        self.target
            .create_volume_with(&lv, spec.size_bytes, meta)
            .await?;
        self.target.export_exactly(&lv, &[]).await?;
        Ok(())
    }

    async fn delete_volume(&self, id: &VolumeId, _known: Option<&Volume>) -> Result<()> {
        let lv = self.name(id.as_str())?;
        Ok(self.target.delete_volume(&lv).await?)
    }

    async fn expand_volume(&self, id: &VolumeId, size_bytes: u64) -> Result<()> {
        let lv = self.name(id.as_str())?;
        self.target.expand_volume(&lv, size_bytes).await?;
        Ok(())
    }

    async fn list_volumes(&self, prefix: &IdPrefix) -> Result<Vec<Volume>> {
        let volumes: Vec<target::Volume> = self
            .target
            .list_volumes()
            .await?
            .into_iter()
            .filter(|v| prefix.matches(v.name.as_str()))
            .collect();
        let mut exports = HashMap::new();
        if volumes.iter().any(|v| !v.is_snapshot()) {
            for e in self.target.list_exports().await? {
                exports.insert(e.nqn.clone(), e);
            }
        }
        Ok(volumes
            .into_iter()
            .map(|v| {
                let nqn = self.target.nqn(&v.name);
                let export = exports.get(nqn.as_str()).filter(|_| !v.is_snapshot());
                self.volume(v, export)
            })
            .collect())
    }

    /// The configured thin pool's (`pool` names an RDS pool: unused).
    async fn capacity(&self, _pool: &str) -> Result<Capacity> {
        let c = self.target.capacity().await?;
        Ok(Capacity {
            size_bytes: c.size_bytes,
            free_bytes: c.free_bytes,
        })
    }

    /// Reads the thin pool (so a missing or misnamed pool shows at start)
    /// and offers thin snapshots, the one copy method.
    async fn pool_info(&self, _pool: &str) -> Result<PoolInfo> {
        self.target.capacity().await?;
        Ok(PoolInfo {
            kind: POOL_KIND.to_string(),
            methods: vec![CopyMethod::Subvolume],
        })
    }

    async fn copy(&self, spec: &CopySpec) -> Result<()> {
        let lv = self.name(spec.target.as_str())?;
        let source = self.name(&spec.source.id)?;
        if spec.method == CopyMethod::ByteCopy {
            return Err(no_byte_copy());
        }
        let meta = meta_of(&spec.meta)?;
        match &spec.export {
            None => {
                self.target.create_snapshot_with(&lv, &source, meta).await?;
            }
            Some((size, export)) => {
                check_size(*size)?;
                self.check_export(&lv, export)?;
                self.target
                    .clone_volume_with(&lv, &source, *size, meta)
                    .await?;
                self.target.export_exactly(&lv, &[]).await?;
            }
        }
        Ok(())
    }

    async fn snapshot_volume(&self, spec: &SnapshotSpec) -> Result<bool> {
        let lv = self.name(spec.target.as_str())?;
        let source = self.name(spec.source.as_str())?;
        let meta = meta_of(&spec.meta)?;
        match self.target.create_snapshot_with(&lv, &source, meta).await {
            Ok(_) => Ok(true),
            Err(Error(E::NotFound(_))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn start_copy(&self, _source: &VolumeId, _target: &VolumeId) -> Result<()> {
        Err(no_byte_copy())
    }

    async fn set_meta(&self, id: &VolumeId, meta: &VolumeMeta) -> Result<()> {
        let lv = self.name(id.as_str())?;
        let meta = meta_of(meta)?;
        Ok(self.target.set_records(&lv, &meta).await?)
    }

    /// Exports the volume (again, if configfs lost it) admitting exactly
    /// `hosts`.
    async fn set_allowed_hosts(&self, id: &VolumeId, hosts: &[storage::Nqn]) -> Result<()> {
        let lv = self.name(id.as_str())?;
        let hosts: BTreeSet<Nqn> = hosts
            .iter()
            .map(|h| Nqn::new(h.as_str()))
            .collect::<std::result::Result<_, _>>()?;
        let hosts: Vec<Nqn> = hosts.into_iter().collect();
        self.target.export_exactly(&lv, &hosts).await?;
        Ok(())
    }

    /// Unlinks the subsystem from its port and links it back: the kernel
    /// drops every session of the volume, every host's.
    async fn cut_sessions(&self, id: &VolumeId) -> Result<()> {
        let lv = self.name(id.as_str())?;
        self.target.revoke(&lv, &[], true).await?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;

#[cfg(test)]
mod mapping_tests {
    use proptest::prelude::*;

    use super::tests::{backend, new_volume};
    use super::*;
    use crate::shell::{fail, FakeShell};

    #[tokio::test]
    async fn errors_map_to_the_backend_kinds() {
        let cases: Vec<(E, ErrorKind)> = vec![
            (E::NotFound("x".into()), ErrorKind::NotFound),
            (E::NoSpace("x".into()), ErrorKind::NoSpace),
            (E::AlreadyExists("x".into()), ErrorKind::AlreadyExists),
            (E::InUse("x".into()), ErrorKind::InUse),
            (E::Unreachable("x".into()), ErrorKind::Unavailable),
            (E::AuthFailed { user: "u".into() }, ErrorKind::Unavailable),
            (
                E::HostKeyMismatch {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                ErrorKind::Unavailable,
            ),
            (E::Key("x".into()), ErrorKind::Unavailable),
            (
                E::Timeout(std::time::Duration::from_secs(1)),
                ErrorKind::Timeout,
            ),
            (E::Invalid("x".into()), ErrorKind::Internal),
            (E::Failed("x".into()), ErrorKind::Internal),
            (E::Protocol("x".into()), ErrorKind::Internal),
        ];
        for (e, kind) in cases {
            let err = Error(e);
            let shown = err.to_string();
            let err: storage::Error = err.into();
            assert_eq!(err.kind(), kind, "{shown}");
            assert_eq!(err.to_string(), shown, "the message is the target's own");
        }
        for (e, kind) in [
            (E::NoSpace("full".into()), ErrorKind::NoSpace),
            (
                E::Timeout(std::time::Duration::from_secs(1)),
                ErrorKind::Timeout,
            ),
        ] {
            let shell = FakeShell::new(move |_, _| match &e {
                E::Timeout(d) => Err(Error(E::Timeout(*d))),
                _ => Ok(fail(
                    5,
                    "  Volume group \"vg0\" has insufficient free space",
                )),
            });
            let e = backend(&shell)
                .create_volume(&new_volume("pvc-1"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    proptest! {
        #[test]
        fn every_record_round_trips_through_lvm_tags(m in storage::meta::strategies::metas(
            "[a-z0-9][a-z0-9.-]{0,40}".prop_filter("LVM reserves it", |s| VolumeName::new(s).is_ok())
        )) {
            let tags = meta_of(&m).unwrap().tags();
            for t in &tags {
                prop_assert!(crate::meta::is_lvm_tag(t), "{}", t);
            }
            // lvs prints tags sorted.
            let mut sorted = tags.clone();
            sorted.sort();
            let read = Meta::parse(&sorted.join(",")).unwrap();
            prop_assert_eq!(volume_meta(&read), m);
        }
    }
}
