//! The storage backend as the CSI layer sees it.
//!
//! The controller is written against this trait, so a second target (for
//! example the Linux kernel NVMe target) can be added without touching the
//! CSI code, and unit tests run against the in-memory [`fake::FakeBackend`].

use std::future::Future;

use routeros::{Capacity, Disk, NewDisk, Rds, RosPath, Slot, SlotPrefix};

pub type BackendResult<T> = Result<T, routeros::Error>;

pub trait Backend: Send + Sync + 'static {
    /// `Ok(None)` only when the backend answered that the volume is absent.
    fn get_volume(&self, id: &Slot) -> impl Future<Output = BackendResult<Option<Disk>>> + Send;
    fn create_volume(&self, spec: &NewDisk) -> impl Future<Output = BackendResult<()>> + Send;
    /// Removes the volume and its backing file. `known` is the volume as
    /// looked up just before (or `None` if it was already gone, in which
    /// case only a leftover backing file is removed). The file goes only
    /// once a fresh lookup shows the volume entry gone.
    fn delete_volume(
        &self,
        id: &Slot,
        known: Option<&Disk>,
        search_root: &RosPath,
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
}

impl Backend for Rds {
    async fn get_volume(&self, id: &Slot) -> BackendResult<Option<Disk>> {
        self.get_disk(id).await
    }

    async fn create_volume(&self, spec: &NewDisk) -> BackendResult<()> {
        self.create_disk(spec).await
    }

    async fn delete_volume(
        &self,
        id: &Slot,
        known: Option<&Disk>,
        search_root: &RosPath,
    ) -> BackendResult<()> {
        let file = match known {
            Some(disk) => {
                self.remove_disk_confirmed(id).await?;
                disk.file_path.as_deref().map(RosPath::new).transpose()?
            }
            None => {
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
    }

    impl FakeBackend {
        pub fn new() -> Self {
            FakeBackend {
                pool_size: 100 << 30,
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

        async fn create_volume(&self, spec: &NewDisk) -> BackendResult<()> {
            self.enter(format!("create {} {}", spec.slot, spec.size_bytes))?;
            if self.used() + spec.size_bytes > self.pool_size {
                return Err(routeros::Error::NoSpace("failure: not enough space".into()));
            }
            let mut disks = self.disks.lock().unwrap();
            if disks.contains_key(spec.slot.as_str()) {
                return Err(routeros::Error::AlreadyExists("slot".into()));
            }
            disks.insert(spec.slot.to_string(), spec.as_created());
            self.files.lock().unwrap().push(spec.file.to_string());
            Ok(())
        }

        async fn delete_volume(
            &self,
            id: &Slot,
            _known: Option<&Disk>,
            _root: &RosPath,
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
    }
}
