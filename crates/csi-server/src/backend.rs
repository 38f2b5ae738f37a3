//! The storage backend as the CSI layer sees it.
//!
//! The controller is written against this trait, so a second target (for
//! example the Linux kernel NVMe target) can be added without touching the
//! CSI code, and unit tests run against the in-memory [`fake::FakeBackend`].

use std::future::Future;

use routeros::{
    Capacity, CopyMethod, Disk, DiskComment, NewDisk, Nqn, PoolFilesystem, Rds, RosPath, Slot,
    SlotPrefix,
};

pub type BackendResult<T> = Result<T, routeros::Error>;

/// Where a new volume's image goes: a file of its own in a directory, or
/// inside a Btrfs subvolume named after the volume on file system `fs`
/// (made first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Flat,
    Subvolume { fs: Slot },
}

/// What may be left of a volume or snapshot whose disk entry is gone: a
/// backing file `<id>.img` below `search_root`, and on a Btrfs pool a
/// subvolume named after it.
#[derive(Debug, Clone)]
pub struct Leftovers {
    pub search_root: RosPath,
    pub subvolumes: bool,
}

/// A read-only snapshot `target` of volume `source`'s subvolume on Btrfs
/// file system `fs`, with a disk over its image `file` carrying `comment`.
#[derive(Debug, Clone)]
pub struct SubvolumeSnapshot {
    pub fs: Slot,
    pub source: Slot,
    pub target: Slot,
    pub file: RosPath,
    pub comment: DiskComment,
}

/// A copy of a disk (a snapshot, a restore or a clone) as the CSI layer
/// asks for it.
#[derive(Debug, Clone)]
pub struct CopySpec {
    /// The disk copied from: a volume or a snapshot, as just looked up.
    pub source: Disk,
    pub target: Slot,
    pub method: CopyMethod,
    /// The target's image file.
    pub file: RosPath,
    /// Where the target's image goes. With [`CopyMethod::Subvolume`] the
    /// target subvolume is the snapshot itself.
    pub placement: Placement,
    /// `(size, port, nqn)`: a volume, exported; `None`: a snapshot.
    pub export: Option<(u64, u16, Nqn)>,
    pub comment: DiskComment,
}

pub trait Backend: Send + Sync + 'static {
    /// `Ok(None)` only when the backend answered that the volume is absent.
    fn get_volume(&self, id: &Slot) -> impl Future<Output = BackendResult<Option<Disk>>> + Send;
    fn create_volume(
        &self,
        spec: &NewDisk,
        placement: &Placement,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Removes a volume or snapshot and its image (its backing file, or
    /// the subvolume holding it). `known` is the disk as looked up just
    /// before (or `None` if it was already gone, in which case only
    /// `leftovers` are looked for). The image goes only once a fresh lookup
    /// shows the disk entry gone.
    fn delete_volume(
        &self,
        id: &Slot,
        known: Option<&Disk>,
        leftovers: &Leftovers,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    fn expand_volume(
        &self,
        id: &Slot,
        size_bytes: u64,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    fn list_volumes(
        &self,
        prefix: &SlotPrefix,
    ) -> impl Future<Output = BackendResult<Vec<Disk>>> + Send;
    fn capacity(&self, mount_point: &Slot) -> impl Future<Output = BackendResult<Capacity>> + Send;
    /// The file system of the pool: which copy methods it can do.
    fn pool_filesystem(
        &self,
        mount_point: &Slot,
    ) -> impl Future<Output = BackendResult<PoolFilesystem>> + Send;
    /// Makes `spec.target` a copy of `spec.source`. A retry after a copy
    /// that was half made (the subvolume snapshot taken, its disk not yet
    /// added) completes it. With [`CopyMethod::ByteCopy`] the copy runs on
    /// in the background after this returns (see [`Backend::start_copy`]).
    fn copy_disk(&self, spec: &CopySpec) -> impl Future<Output = BackendResult<()>> + Send;
    /// A read-only snapshot `target` of the subvolume of volume `source`
    /// on file system `fs`, with a disk over its image `file`, without
    /// looking the volume up first: `Ok(false)` when `source` has no
    /// subvolume (a flat volume, or none at all). A retry after the
    /// subvolume was made completes the disk.
    fn snapshot_subvolume(
        &self,
        snap: &SubvolumeSnapshot,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Starts (again) a background byte copy of `source` into the existing
    /// disk `target`.
    fn start_copy(
        &self,
        source: &Slot,
        target: &Slot,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Replaces a disk's comment (clears a finished copy's mark).
    fn set_comment(
        &self,
        id: &Slot,
        comment: &DiskComment,
    ) -> impl Future<Output = BackendResult<()>> + Send;
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
) -> BackendResult<()> {
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

impl Backend for Rds {
    async fn get_volume(&self, id: &Slot) -> BackendResult<Option<Disk>> {
        self.get_disk(id).await
    }

    async fn create_volume(&self, spec: &NewDisk, placement: &Placement) -> BackendResult<()> {
        if let Placement::Subvolume { fs } = placement {
            ensure_subvolume(self, fs, &spec.slot, None, false).await?;
        }
        self.create_disk(spec).await
    }

    async fn delete_volume(
        &self,
        id: &Slot,
        known: Option<&Disk>,
        leftovers: &Leftovers,
    ) -> BackendResult<()> {
        let search_root = &leftovers.search_root;
        let file = match known {
            Some(disk) => {
                self.remove_disk_confirmed(id).await?;
                if disk.in_own_subvolume() {
                    // The image lives in the subvolume and goes with it.
                    return self.remove_subvolume(id).await;
                }
                disk.file_path.as_deref().map(RosPath::new).transpose()?
            }
            None => {
                if leftovers.subvolumes {
                    self.remove_subvolume(id).await?;
                }
                // The disk entry is gone; an earlier attempt may have failed
                // between removing the disk and removing its file. Look for a
                // leftover `<id>.img` below the root so it is not leaked.
                let wanted = format!("/{}.img", id.as_str());
                self.find_files(id.as_str())
                    .await?
                    .into_iter()
                    .find(|f| {
                        f.name.ends_with(&wanted)
                            && format!("/{}", f.name)
                                .starts_with(&format!("{}/", search_root.as_str()))
                    })
                    .map(|f| RosPath::new(&format!("/{}", f.name)))
                    .transpose()?
            }
        };
        if let Some(file) = file {
            self.remove_file(&file).await?;
        }
        Ok(())
    }

    async fn expand_volume(&self, id: &Slot, size_bytes: u64) -> BackendResult<()> {
        self.resize_disk(id, size_bytes).await
    }

    async fn list_volumes(&self, prefix: &SlotPrefix) -> BackendResult<Vec<Disk>> {
        self.list_disks(prefix).await
    }

    async fn capacity(&self, mount_point: &Slot) -> BackendResult<Capacity> {
        Rds::capacity(self, mount_point).await
    }

    async fn pool_filesystem(&self, mount_point: &Slot) -> BackendResult<PoolFilesystem> {
        Rds::pool_filesystem(self, mount_point).await
    }

    async fn copy_disk(&self, spec: &CopySpec) -> BackendResult<()> {
        let source = Slot::new(&spec.source.slot)?;
        if let (Placement::Subvolume { fs }, CopyMethod::Subvolume) = (&spec.placement, spec.method)
        {
            // A snapshot is read-only; a restore or clone is writable.
            ensure_subvolume(self, fs, &spec.target, Some(&source), spec.export.is_none()).await?;
            let export = spec
                .export
                .as_ref()
                .map(|(_, port, nqn)| (*port, nqn.clone()));
            self.adopt_file(&spec.target, &spec.file, export, &spec.comment)
                .await?;
            return match &spec.export {
                Some((size, ..)) if *size > spec.source.size_bytes => {
                    self.resize_disk(&spec.target, *size).await
                }
                _ => Ok(()),
            };
        }
        if let Placement::Subvolume { fs } = &spec.placement {
            ensure_subvolume(self, fs, &spec.target, None, false).await?;
        }
        match spec.method {
            CopyMethod::CopyFrom => {
                self.copy_from(
                    &source,
                    &spec.target,
                    &spec.file,
                    spec.export.clone(),
                    &spec.comment,
                )
                .await
            }
            CopyMethod::ByteCopy => {
                match &spec.export {
                    Some((size, port, nqn)) => {
                        self.create_disk(&NewDisk {
                            slot: spec.target.clone(),
                            file: spec.file.clone(),
                            size_bytes: *size,
                            port: *port,
                            nqn: nqn.clone(),
                            comment: spec.comment.clone(),
                        })
                        .await?
                    }
                    None => {
                        self.add_unexported_disk(
                            &spec.target,
                            &spec.file,
                            spec.source.size_bytes,
                            &spec.comment,
                        )
                        .await?
                    }
                }
                self.start_byte_copy(&source, &spec.target).await
            }
            CopyMethod::Subvolume => Err(routeros::Error::Failed(format!(
                "a subvolume snapshot of {} needs both disks in the subvolume layout",
                spec.source.slot
            ))),
        }
    }

    async fn snapshot_subvolume(&self, s: &SubvolumeSnapshot) -> BackendResult<bool> {
        match ensure_subvolume(self, &s.fs, &s.target, Some(&s.source), true).await {
            Err(routeros::Error::NotFound(_)) => return Ok(false),
            other => other?,
        }
        self.adopt_file(&s.target, &s.file, None, &s.comment)
            .await?;
        Ok(true)
    }

    async fn start_copy(&self, source: &Slot, target: &Slot) -> BackendResult<()> {
        self.start_byte_copy(source, target).await
    }

    async fn set_comment(&self, id: &Slot, comment: &DiskComment) -> BackendResult<()> {
        self.set_disk_comment(id, comment).await
    }
}

pub mod fake {
    //! An in-memory backend for unit tests: records calls and can be told
    //! to fail.
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct FakeBackend {
        pub disks: Mutex<BTreeMap<String, Disk>>,
        pub files: Mutex<Vec<String>>,
        pub calls: Mutex<Vec<String>>,
        /// The next calls fail with this error kind ("unreachable", "no_space").
        pub fail_next: Mutex<Vec<&'static str>>,
        pub pool_size: u64,
        /// What `pool_filesystem` answers.
        pub pool_fs: Mutex<Option<PoolFilesystem>>,
    }

    impl FakeBackend {
        pub fn new() -> Self {
            FakeBackend {
                pool_size: 100 << 30,
                pool_fs: Mutex::new(Some(PoolFilesystem::Btrfs)),
                ..Default::default()
            }
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        pub fn fail_next(&self, kind: &'static str) {
            self.fail_next.lock().unwrap().push(kind);
        }

        fn enter(&self, call: String) -> BackendResult<()> {
            self.calls.lock().unwrap().push(call);
            let mut f = self.fail_next.lock().unwrap();
            if f.is_empty() {
                return Ok(());
            }
            Err(match f.remove(0) {
                "no_space" => routeros::Error::NoSpace("failure: not enough space".into()),
                "timeout" => routeros::Error::Timeout(std::time::Duration::from_secs(1)),
                _ => routeros::Error::Unreachable("injected".into()),
            })
        }

        /// Adds a disk and its file, as RouterOS would refuse it.
        fn insert(&self, disk: Disk) -> BackendResult<()> {
            if self.used() + disk.size_bytes > self.pool_size {
                return Err(routeros::Error::NoSpace("failure: not enough space".into()));
            }
            let mut disks = self.disks.lock().unwrap();
            if disks.contains_key(&disk.slot) {
                return Err(routeros::Error::AlreadyExists("slot".into()));
            }
            self.files.lock().unwrap().extend(disk.file_path.clone());
            disks.insert(disk.slot.clone(), disk);
            Ok(())
        }

        fn used(&self) -> u64 {
            self.disks
                .lock()
                .unwrap()
                .values()
                .map(|d| d.size_bytes)
                .sum()
        }
    }

    impl Backend for FakeBackend {
        async fn get_volume(&self, id: &Slot) -> BackendResult<Option<Disk>> {
            self.enter(format!("get {id}"))?;
            Ok(self.disks.lock().unwrap().get(id.as_str()).cloned())
        }

        async fn create_volume(&self, spec: &NewDisk, _placement: &Placement) -> BackendResult<()> {
            self.enter(format!("create {} {}", spec.slot, spec.size_bytes))?;
            self.insert(spec.as_created())
        }

        async fn delete_volume(
            &self,
            id: &Slot,
            _known: Option<&Disk>,
            _leftovers: &Leftovers,
        ) -> BackendResult<()> {
            self.enter(format!("delete {id}"))?;
            if let Some(d) = self.disks.lock().unwrap().remove(id.as_str()) {
                self.files
                    .lock()
                    .unwrap()
                    .retain(|f| Some(f) != d.file_path.as_ref());
            }
            Ok(())
        }

        async fn expand_volume(&self, id: &Slot, size_bytes: u64) -> BackendResult<()> {
            self.enter(format!("expand {id} {size_bytes}"))?;
            match self.disks.lock().unwrap().get_mut(id.as_str()) {
                Some(d) => {
                    d.size_bytes = size_bytes;
                    Ok(())
                }
                None => Err(routeros::Error::NotFound(id.to_string())),
            }
        }

        async fn list_volumes(&self, prefix: &SlotPrefix) -> BackendResult<Vec<Disk>> {
            self.enter("list".into())?;
            Ok(self
                .disks
                .lock()
                .unwrap()
                .values()
                .filter(|d| prefix.matches(&d.slot))
                .cloned()
                .collect())
        }

        async fn capacity(&self, _mount_point: &Slot) -> BackendResult<Capacity> {
            self.enter("capacity".into())?;
            Ok(Capacity {
                size_bytes: self.pool_size,
                free_bytes: self.pool_size - self.used(),
            })
        }

        async fn pool_filesystem(&self, _mount_point: &Slot) -> BackendResult<PoolFilesystem> {
            self.enter("pool_filesystem".into())?;
            Ok(self
                .pool_fs
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(PoolFilesystem::Unknown))
        }

        async fn snapshot_subvolume(&self, s: &SubvolumeSnapshot) -> BackendResult<bool> {
            self.enter(format!("snapshot_subvolume {} {}", s.source, s.target))?;
            let size = match self.disks.lock().unwrap().get(s.source.as_str()) {
                Some(d) if d.in_own_subvolume() => d.size_bytes,
                _ => return Ok(false),
            };
            self.insert(Disk {
                slot: s.target.to_string(),
                file_path: Some(s.file.to_string()),
                size_bytes: size,
                nqn: None,
                port: None,
                exported: false,
                comment: s.comment.clone(),
                status: None,
                allowed_hosts: None,
            })?;
            Ok(true)
        }

        async fn start_copy(&self, source: &Slot, target: &Slot) -> BackendResult<()> {
            self.enter(format!("start_copy {source} {target}"))
        }

        async fn set_comment(&self, id: &Slot, comment: &DiskComment) -> BackendResult<()> {
            self.enter(format!("set_comment {id}"))?;
            match self.disks.lock().unwrap().get_mut(id.as_str()) {
                Some(d) => {
                    d.comment = comment.clone();
                    Ok(())
                }
                None => Err(routeros::Error::NotFound(id.to_string())),
            }
        }

        async fn copy_disk(&self, spec: &CopySpec) -> BackendResult<()> {
            self.enter(format!(
                "copy {} {} {}",
                spec.source.slot, spec.target, spec.method
            ))?;
            let (size, port, nqn) = match &spec.export {
                Some((size, port, nqn)) => (*size, Some(*port), Some(nqn.to_string())),
                None => (spec.source.size_bytes, None, None),
            };
            self.insert(Disk {
                slot: spec.target.to_string(),
                file_path: Some(spec.file.to_string()),
                size_bytes: size,
                nqn,
                port,
                exported: port.is_some(),
                comment: spec.comment.clone(),
                status: None,
                allowed_hosts: port.map(|_| routeros::HostAccess::Any),
            })
        }
    }
}
