//! An in-memory backend for unit tests: records calls and can be told
//! to fail.

use std::collections::BTreeMap;
use std::sync::Mutex;

use storage::{
    Backend, Capabilities, Capacity, CopySpec, Error, ErrorKind, IdPrefix, Layout, NewVolume, Nqn,
    Place, PoolInfo, Result, SnapshotSpec, Volume, VolumeId, VolumeMeta,
};

#[derive(Default)]
pub struct FakeBackend {
    pub disks: Mutex<BTreeMap<String, Volume>>,
    /// The locations of the volumes' data.
    pub files: Mutex<Vec<String>>,
    pub calls: Mutex<Vec<String>>,
    /// The next calls fail with this error kind ("unreachable", "no_space").
    pub fail_next: Mutex<Vec<&'static str>>,
    /// The next call whose record starts with the first string fails with
    /// the second's kind.
    pub fail_call: Mutex<Option<(&'static str, &'static str)>>,
    pub pool_size: u64,
    /// What `pool_info` answers (`None`: it fails).
    pub pool: Mutex<Option<PoolInfo>>,
    /// Whether it fences (admits only the hosts it is told).
    pub fencing: bool,
    /// Declares no snapshots, clones or expansion (a plain backend).
    pub plain: bool,
    /// While set, every call fails as an unreachable server's would.
    pub down: std::sync::atomic::AtomicBool,
}

/// A Btrfs pool as the RDS backend reports it.
pub fn btrfs_pool() -> PoolInfo {
    use storage::CopyMethod::*;
    PoolInfo {
        kind: "btrfs".into(),
        methods: vec![Subvolume, CopyFrom, ByteCopy],
    }
}

impl FakeBackend {
    pub fn new() -> Self {
        FakeBackend {
            pool_size: 100 << 30,
            pool: Mutex::new(Some(btrfs_pool())),
            ..Default::default()
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub fn fail_next(&self, kind: &'static str) {
        self.fail_next.lock().unwrap().push(kind);
    }

    fn enter(&self, call: String) -> Result<()> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            self.calls.lock().unwrap().push(call);
            return Err(Error::new(ErrorKind::Unavailable, "injected: server down"));
        }
        let mut on = self.fail_call.lock().unwrap();
        let matched = on.filter(|(prefix, _)| call.starts_with(prefix));
        self.calls.lock().unwrap().push(call);
        let mut f = self.fail_next.lock().unwrap();
        let kind = match matched {
            Some((_, kind)) => {
                *on = None;
                kind
            }
            None if f.is_empty() => return Ok(()),
            None => f.remove(0),
        };
        Err(match kind {
            "no_space" => no_space(),
            "timeout" => Error::new(ErrorKind::Timeout, "injected timeout"),
            _ => Error::new(ErrorKind::Unavailable, "injected: unreachable"),
        })
    }

    /// Adds a volume and its data, refused as a full pool or a taken ID
    /// would be.
    fn insert(&self, volume: Volume) -> Result<()> {
        if self.used() + volume.size_bytes > self.pool_size {
            return Err(no_space());
        }
        let mut disks = self.disks.lock().unwrap();
        if disks.contains_key(&volume.id) {
            return Err(Error::new(ErrorKind::AlreadyExists, volume.id.clone()));
        }
        self.files.lock().unwrap().extend(volume.location.clone());
        disks.insert(volume.id.clone(), volume);
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

    fn not_found(id: &VolumeId) -> Error {
        Error::new(ErrorKind::NotFound, id.to_string())
    }
}

fn no_space() -> Error {
    Error::new(ErrorKind::NoSpace, "failure: not enough space")
}

/// A new volume or snapshot as the fake keeps it.
fn made(id: &VolumeId, size_bytes: u64, location: String, layout: Layout) -> Volume {
    Volume {
        id: id.to_string(),
        size_bytes,
        location: Some(location),
        layout,
        nqn: None,
        port: None,
        exported: false,
        meta: VolumeMeta::default(),
        busy: None,
        allowed_hosts: None,
    }
}

impl Backend for FakeBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            snapshots: !self.plain,
            clones: !self.plain,
            expansion: !self.plain,
            fencing: self.fencing,
        }
    }

    async fn get_volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        self.enter(format!("get {id}"))?;
        Ok(self.disks.lock().unwrap().get(id.as_str()).cloned())
    }

    fn location(&self, id: &VolumeId, place: &Place) -> Result<String> {
        Ok(match place.layout {
            Layout::Flat => format!("{}/{id}.img", place.dir),
            Layout::Subvolume => {
                let pool = place.dir.trim_start_matches('/').split('/').next();
                format!("/{}/{id}/volume.img", pool.unwrap_or_default())
            }
        })
    }

    async fn create_volume(&self, spec: &NewVolume) -> Result<()> {
        self.enter(format!("create {} {}", spec.id, spec.size_bytes))?;
        let location = self.location(&spec.id, &spec.place)?;
        self.insert(Volume {
            nqn: Some(spec.export.nqn.to_string()),
            port: Some(spec.export.port),
            exported: true,
            meta: spec.meta.clone(),
            allowed_hosts: self.fencing.then(Vec::new),
            ..made(&spec.id, spec.size_bytes, location, spec.place.layout)
        })
    }

    async fn delete_volume(&self, id: &VolumeId, _known: Option<&Volume>) -> Result<()> {
        self.enter(format!("delete {id}"))?;
        if let Some(d) = self.disks.lock().unwrap().remove(id.as_str()) {
            self.files
                .lock()
                .unwrap()
                .retain(|f| Some(f) != d.location.as_ref());
        }
        Ok(())
    }

    async fn expand_volume(&self, id: &VolumeId, size_bytes: u64) -> Result<()> {
        self.enter(format!("expand {id} {size_bytes}"))?;
        match self.disks.lock().unwrap().get_mut(id.as_str()) {
            Some(d) => {
                d.size_bytes = size_bytes;
                Ok(())
            }
            None => Err(Self::not_found(id)),
        }
    }

    async fn list_volumes(&self, prefix: &IdPrefix) -> Result<Vec<Volume>> {
        self.enter("list".into())?;
        Ok(self
            .disks
            .lock()
            .unwrap()
            .values()
            .filter(|d| prefix.matches(&d.id))
            .cloned()
            .collect())
    }

    async fn capacity(&self, _pool: &str) -> Result<Capacity> {
        self.enter("capacity".into())?;
        Ok(Capacity {
            size_bytes: self.pool_size,
            free_bytes: self.pool_size - self.used(),
        })
    }

    async fn pool_info(&self, _pool: &str) -> Result<PoolInfo> {
        self.enter("pool_info".into())?;
        self.pool
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "injected: no pool"))
    }

    async fn snapshot_volume(&self, s: &SnapshotSpec) -> Result<bool> {
        self.enter(format!("snapshot_volume {} {}", s.source, s.target))?;
        let size = match self.disks.lock().unwrap().get(s.source.as_str()) {
            Some(d) if d.layout == Layout::Subvolume => d.size_bytes,
            _ => return Ok(false),
        };
        let location = format!("/{}/{}/volume.img", s.pool, s.target);
        self.insert(Volume {
            meta: s.meta.clone(),
            ..made(&s.target, size, location, Layout::Subvolume)
        })?;
        Ok(true)
    }

    async fn start_copy(&self, source: &VolumeId, target: &VolumeId) -> Result<()> {
        self.enter(format!("start_copy {source} {target}"))
    }

    async fn set_meta(&self, id: &VolumeId, meta: &VolumeMeta) -> Result<()> {
        self.enter(format!("set_meta {id}"))?;
        match self.disks.lock().unwrap().get_mut(id.as_str()) {
            Some(d) => {
                d.meta = meta.clone();
                Ok(())
            }
            None => Err(Self::not_found(id)),
        }
    }

    async fn set_allowed_hosts(&self, id: &VolumeId, hosts: &[Nqn]) -> Result<()> {
        let list: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        self.enter(format!("allow {id} [{}]", list.join(",")))?;
        match self.disks.lock().unwrap().get_mut(id.as_str()) {
            Some(d) => {
                d.allowed_hosts = Some(list);
                Ok(())
            }
            None => Err(Self::not_found(id)),
        }
    }

    async fn cut_sessions(&self, id: &VolumeId) -> Result<()> {
        self.enter(format!("cut {id}"))?;
        match self.disks.lock().unwrap().contains_key(id.as_str()) {
            true => Ok(()),
            false => Err(Self::not_found(id)),
        }
    }

    async fn copy(&self, spec: &CopySpec) -> Result<()> {
        self.enter(format!(
            "copy {} {} {}",
            spec.source.id, spec.target, spec.method
        ))?;
        let location = self.location(&spec.target, &spec.place)?;
        let size = match &spec.export {
            Some((size, _)) => *size,
            None => spec.source.size_bytes,
        };
        let mut volume = Volume {
            meta: spec.meta.clone(),
            ..made(&spec.target, size, location, spec.place.layout)
        };
        if let Some((_, e)) = &spec.export {
            volume.nqn = Some(e.nqn.to_string());
            volume.port = Some(e.port);
            volume.exported = true;
            volume.allowed_hosts = self.fencing.then(Vec::new);
        }
        self.insert(volume)
    }
}
