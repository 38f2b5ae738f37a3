//! The RDS behind the [`Backend`] trait: volumes are RouterOS disks over
//! image files, in a directory of their own (`<volumePath>/<id>.img`, the
//! Go driver's layout) or each in a Btrfs subvolume named after it
//! (`/<pool>/<id>/volume.img`); snapshots are disks over a copy of the
//! image, not exported; the driver's records are the disk's comment.

use std::sync::OnceLock;

use routeros::{
    Disk, HostAccess, HostNqn, NewDisk, PoolFilesystem, Rds, RosPath, Slot, SUBVOLUME_IMAGE,
};
use storage::{
    Backend, Capabilities, Capacity, CopyMethod, CopySpec, Error, ErrorKind, IdPrefix, Layout,
    NewVolume, Nqn, Place, PoolInfo, Result, SnapshotSpec, Volume, VolumeId, VolumeMeta,
};

/// One RDS: its client, and the directory below which every volume and
/// snapshot image lies (where leftovers of a half-done delete are looked
/// for).
pub struct RdsBackend {
    rds: Rds,
    root: RosPath,
    /// The root's pool file system, read the first time a delete needs it.
    pool_fs: OnceLock<PoolFilesystem>,
    /// Whether volumes are fenced through the disks' host allow-list
    /// (`nvme-tcp-server-allow-host-name`, whose semantics on real
    /// hardware are unverified: opt-in).
    fencing: bool,
}

impl RdsBackend {
    pub fn new(rds: Rds, root: RosPath) -> Self {
        RdsBackend {
            rds,
            root,
            pool_fs: OnceLock::new(),
            fencing: false,
        }
    }

    /// Fences volumes through the disks' host allow-list.
    pub fn with_fencing(mut self, on: bool) -> Self {
        self.fencing = on;
        self
    }

    /// The RouterOS client, for what only the RDS offers.
    pub fn rds(&self) -> &Rds {
        &self.rds
    }

    fn pool_slot(&self) -> Slot {
        Slot::new(self.root.mount_point()).expect("a validated root has a mount point")
    }

    async fn pool_fs(&self) -> Result<PoolFilesystem> {
        if let Some(fs) = self.pool_fs.get() {
            return Ok(fs.clone());
        }
        let fs = self.rds.pool_filesystem(&self.pool_slot()).await?;
        Ok(self.pool_fs.get_or_init(|| fs).clone())
    }

    /// The image file and, in the subvolume layout, the file system the
    /// subvolume is made on.
    fn image(&self, id: &VolumeId, place: &Place) -> Result<(RosPath, Option<Slot>)> {
        let dir = RosPath::new(&place.dir)?;
        Ok(match place.layout {
            Layout::Flat => (dir.join(&format!("{id}.img"))?, None),
            Layout::Subvolume => {
                let fs = Slot::new(dir.mount_point())?;
                (
                    RosPath::new(&format!("/{fs}/{id}/{SUBVOLUME_IMAGE}"))?,
                    Some(fs),
                )
            }
        })
    }
}

impl RdsBackend {
    /// With fencing, a new exported disk admits no host until it is
    /// published (RouterOS's default, an empty list, admits any).
    async fn admit_nobody(&self, id: &Slot) -> Result<()> {
        if self.fencing {
            self.rds.set_allowed_hosts(id, &[]).await?;
        }
        Ok(())
    }

    /// Makes the copy [`Backend::copy`] asks for.
    async fn copy_disk(&self, spec: &CopySpec) -> Result<()> {
        let rds = &self.rds;
        let source = Slot::new(&spec.source.id)?;
        let (file, fs) = self.image(&spec.target, &spec.place)?;
        if let (Some(fs), CopyMethod::Subvolume) = (&fs, spec.method) {
            // A snapshot is read-only; a restore or clone is writable.
            ensure_subvolume(rds, fs, &spec.target, Some(&source), spec.export.is_none()).await?;
            let export = spec.export.as_ref().map(|(_, e)| (e.port, e.nqn.clone()));
            rds.adopt_file(&spec.target, &file, export, &spec.meta)
                .await?;
            return match &spec.export {
                Some((size, _)) if *size > spec.source.size_bytes => {
                    Ok(rds.resize_disk(&spec.target, *size).await?)
                }
                _ => Ok(()),
            };
        }
        if let Some(fs) = &fs {
            ensure_subvolume(rds, fs, &spec.target, None, false).await?;
        }
        let export = spec
            .export
            .as_ref()
            .map(|(size, e)| (*size, e.port, e.nqn.clone()));
        match spec.method {
            CopyMethod::CopyFrom => Ok(rds
                .copy_from(&source, &spec.target, &file, export, &spec.meta)
                .await?),
            CopyMethod::ByteCopy => {
                match export {
                    Some((size_bytes, port, nqn)) => {
                        rds.create_disk(&NewDisk {
                            slot: spec.target.clone(),
                            file,
                            size_bytes,
                            port,
                            nqn,
                            comment: spec.meta.clone(),
                        })
                        .await?
                    }
                    None => {
                        rds.add_unexported_disk(
                            &spec.target,
                            &file,
                            spec.source.size_bytes,
                            &spec.meta,
                        )
                        .await?
                    }
                }
                Ok(rds.start_byte_copy(&source, &spec.target).await?)
            }
            CopyMethod::Subvolume => Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "a subvolume snapshot of {} needs both disks in the subvolume layout",
                    spec.source.id
                ),
            )),
        }
    }
}

/// A disk as the CSI layer sees it.
pub fn volume_of(disk: Disk) -> Volume {
    let layout = if disk.in_own_subvolume() {
        Layout::Subvolume
    } else {
        Layout::Flat
    };
    Volume {
        id: disk.slot,
        size_bytes: disk.size_bytes,
        location: disk.file_path,
        layout,
        nqn: disk.nqn,
        port: disk.port,
        exported: disk.exported,
        meta: disk.comment,
        busy: disk.status,
        allowed_hosts: match disk.allowed_hosts {
            None | Some(HostAccess::Any) => None,
            Some(HostAccess::Only(hosts)) => Some(hosts.into_iter().collect()),
        },
    }
}

/// The subvolume a placement puts `name` in, made empty (or a snapshot of
/// `parent`) unless a retry finds it there already, as a snapshot of the
/// same parent.
async fn ensure_subvolume(
    rds: &Rds,
    fs: &Slot,
    name: &Slot,
    parent: Option<&Slot>,
    read_only: bool,
) -> routeros::Result<()> {
    match rds.create_subvolume(fs, name, parent, read_only).await {
        Err(routeros::Error::AlreadyExists(what)) => match rds.get_subvolume(name).await? {
            Some(s) if s.parent.as_deref() == parent.map(Slot::as_str) || s.parent.is_none() => {
                Ok(())
            }
            _ => Err(routeros::Error::AlreadyExists(what)),
        },
        other => other,
    }
}

impl Backend for RdsBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            clones: true,
            expansion: true,
            fencing: self.fencing,
        }
    }

    async fn get_volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        Ok(self.rds.get_disk(id).await?.map(volume_of))
    }

    fn location(&self, id: &VolumeId, place: &Place) -> Result<String> {
        Ok(self.image(id, place)?.0.to_string())
    }

    async fn create_volume(&self, spec: &NewVolume) -> Result<()> {
        let (file, fs) = self.image(&spec.id, &spec.place)?;
        if let Some(fs) = fs {
            ensure_subvolume(&self.rds, &fs, &spec.id, None, false).await?;
        }
        self.rds
            .create_disk(&NewDisk {
                slot: spec.id.clone(),
                file,
                size_bytes: spec.size_bytes,
                port: spec.export.port,
                nqn: spec.export.nqn.clone(),
                comment: spec.meta.clone(),
            })
            .await?;
        self.admit_nobody(&spec.id).await
    }

    async fn delete_volume(&self, id: &VolumeId, known: Option<&Volume>) -> Result<()> {
        let rds = &self.rds;
        let file = match known {
            Some(volume) => {
                rds.remove_disk_confirmed(id).await?;
                if volume.layout == Layout::Subvolume {
                    // The image lives in the subvolume and goes with it.
                    return Ok(rds.remove_subvolume(id).await?);
                }
                volume.location.as_deref().map(RosPath::new).transpose()?
            }
            None => {
                if self.pool_fs().await? == PoolFilesystem::Btrfs {
                    rds.remove_subvolume(id).await?;
                }
                // The disk entry is gone; an earlier attempt may have failed
                // between removing the disk and removing its file. Look for a
                // leftover `<id>.img` below the root so it is not leaked.
                let wanted = format!("/{}.img", id.as_str());
                let root = format!("{}/", self.root.as_str());
                rds.find_files(id.as_str())
                    .await?
                    .into_iter()
                    .find(|f| {
                        f.name.ends_with(&wanted) && format!("/{}", f.name).starts_with(&root)
                    })
                    .map(|f| RosPath::new(&format!("/{}", f.name)))
                    .transpose()?
            }
        };
        if let Some(file) = file {
            rds.remove_file(&file).await?;
        }
        Ok(())
    }

    async fn expand_volume(&self, id: &VolumeId, size_bytes: u64) -> Result<()> {
        Ok(self.rds.resize_disk(id, size_bytes).await?)
    }

    async fn list_volumes(&self, prefix: &IdPrefix) -> Result<Vec<Volume>> {
        let disks = self.rds.list_disks(prefix).await?;
        Ok(disks.into_iter().map(volume_of).collect())
    }

    async fn capacity(&self, pool: &str) -> Result<Capacity> {
        let c = self.rds.capacity(&Slot::new(pool)?).await?;
        Ok(Capacity {
            size_bytes: c.size_bytes,
            free_bytes: c.free_bytes,
        })
    }

    async fn pool_info(&self, pool: &str) -> Result<PoolInfo> {
        let fs = self.rds.pool_filesystem(&Slot::new(pool)?).await?;
        Ok(PoolInfo {
            kind: format!("{fs:?}").to_lowercase(),
            methods: fs.methods(),
        })
    }

    async fn copy(&self, spec: &CopySpec) -> Result<()> {
        self.copy_disk(spec).await?;
        match spec.export {
            Some(_) => self.admit_nobody(&spec.target).await,
            None => Ok(()),
        }
    }

    async fn snapshot_volume(&self, s: &SnapshotSpec) -> Result<bool> {
        let fs = Slot::new(&s.pool)?;
        match ensure_subvolume(&self.rds, &fs, &s.target, Some(&s.source), true).await {
            Err(routeros::Error::NotFound(_)) => return Ok(false),
            other => other?,
        }
        let file = RosPath::new(&format!("/{fs}/{}/{SUBVOLUME_IMAGE}", s.target))?;
        self.rds.adopt_file(&s.target, &file, None, &s.meta).await?;
        Ok(true)
    }

    async fn start_copy(&self, source: &VolumeId, target: &VolumeId) -> Result<()> {
        Ok(self.rds.start_byte_copy(source, target).await?)
    }

    async fn set_meta(&self, id: &VolumeId, meta: &VolumeMeta) -> Result<()> {
        Ok(self.rds.set_disk_comment(id, meta).await?)
    }

    async fn set_allowed_hosts(&self, id: &VolumeId, hosts: &[Nqn]) -> Result<()> {
        let hosts = hosts
            .iter()
            .map(|h| HostNqn::new(h.as_str()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(self.rds.set_allowed_hosts(id, &hosts).await?)
    }

    async fn cut_sessions(&self, id: &VolumeId) -> Result<()> {
        Ok(self.rds.cut_sessions(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str) -> Disk {
        Disk {
            slot: "pvc-1".into(),
            file_path: Some(path.into()),
            size_bytes: 1 << 30,
            nqn: None,
            port: None,
            exported: false,
            comment: VolumeMeta::default(),
            status: None,
            allowed_hosts: None,
        }
    }

    #[test]
    fn the_layout_of_a_disk_follows_from_where_its_image_is() {
        let layout = |path| volume_of(disk(path)).layout;
        assert_eq!(layout("/storage-pool/metal-csi/pvc-1.img"), Layout::Flat);
        assert_eq!(layout("/storage-pool/pvc-1/volume.img"), Layout::Subvolume);
        // Another volume's subvolume is not this one's.
        assert_eq!(layout("/storage-pool/pvc-2/volume.img"), Layout::Flat);
    }

    #[test]
    fn images_go_in_the_directory_or_in_a_subvolume_named_after_the_volume() {
        let root = RosPath::new("/storage-pool/metal-csi").unwrap();
        let id = VolumeId::new("pvc-1").unwrap();
        let place = |layout| Place {
            dir: "/storage-pool/metal-csi/vms".into(),
            layout,
        };
        // The client is never used: the image is pure.
        let key = testkit::sim::client_key();
        let rds = Rds::new(routeros::Client::new(
            routeros::ClientConfig::new(
                "127.0.0.1:1",
                "u",
                routeros::HostKeyPolicy::InsecureAcceptAny,
            ),
            key,
            None,
        ));
        let backend = RdsBackend::new(rds, root);
        assert_eq!(
            backend.location(&id, &place(Layout::Flat)).unwrap(),
            "/storage-pool/metal-csi/vms/pvc-1.img"
        );
        assert_eq!(
            backend.location(&id, &place(Layout::Subvolume)).unwrap(),
            "/storage-pool/pvc-1/volume.img"
        );
        let bad = Place {
            dir: "relative/dir".into(),
            layout: Layout::Flat,
        };
        assert_eq!(
            backend.location(&id, &bad).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
