//! The storage server as the CSI layer sees it.
//!
//! The controller is written against [`Backend`] alone: volumes and
//! snapshots by ID, sizes, NVMe exports (NQN and port), the driver's
//! records ([`VolumeMeta`]), pool capacity, and what the backend can do
//! ([`Capabilities`]). Each backend maps these onto its server (the RDS:
//! RouterOS disks, files and Btrfs subvolumes) and reports failures in the
//! categories of [`ErrorKind`], which the CSI layer turns into codes.

use std::fmt;
use std::future::Future;

use crate::meta::{CopyMethod, VolumeMeta};
use crate::names::{IdPrefix, Nqn, ValidationError, VolumeId};

/// The first characters of every snapshot's ID, this driver's and the Go
/// driver's; no volume ID starts with them.
pub const SNAPSHOT_ID_PREFIX: &str = "snap-";

/// Why a backend call failed, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered that the thing is absent.
    NotFound,
    /// Not enough space in the pool.
    NoSpace,
    AlreadyExists,
    /// In use (a snapshot's source, an exported volume).
    InUse,
    /// Refused before any command left the process.
    InvalidInput,
    /// The server cannot be used right now: unreachable, refusing the
    /// driver's credentials, or presenting another host key.
    Unavailable,
    /// No answer in time: the outcome is unknown.
    Timeout,
    /// The server refused a command the driver had validated, or answered
    /// something the driver cannot read: a driver bug or an unsupported
    /// server version, not the caller's fault.
    Internal,
}

/// A failed backend call: its [`ErrorKind`] and the backend's own error,
/// whose message (and cause chain) it shows unchanged.
pub struct Error {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    pub fn new(
        kind: ErrorKind,
        inner: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            kind,
            inner: inner.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    /// The backend's own error, when it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.kind, self.inner)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Shows the backend's error in place of this one: its causes follow.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Error {
        Error::new(ErrorKind::InvalidInput, e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How a volume's data is laid out, which decides how it can be copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// One image among others in a directory: the Go driver's layout.
    #[default]
    Flat,
    /// A snapshot domain of its own (on the RDS a Btrfs subvolume per
    /// volume): snapshots and clones are instant.
    Subvolume,
}

impl Layout {
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "flat" => Some(Layout::Flat),
            "subvolume" => Some(Layout::Subvolume),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::Subvolume => "subvolume",
        }
    }
}

/// A volume or snapshot as the backend reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub size_bytes: u64,
    /// Where the backend keeps the data, in its own words (on the RDS the
    /// image file's path); compared, never interpreted, by the CSI layer.
    pub location: Option<String>,
    pub layout: Layout,
    pub nqn: Option<String>,
    pub port: Option<u16>,
    /// Whether the volume is exported over NVMe/TCP (a snapshot is not).
    pub exported: bool,
    /// The driver's records; empty for a volume made by hand or by another
    /// driver.
    pub meta: VolumeMeta,
    /// What the backend says the volume is busy with (a byte copy running
    /// into it, with its progress); `None` when it is settled.
    pub busy: Option<String>,
    /// The host NQNs that may connect, when the backend restricts them
    /// (`Some(empty)`: no host); `None`: any host may, or the backend does
    /// not say.
    pub allowed_hosts: Option<Vec<String>>,
}

impl Volume {
    /// A snapshot (this driver's, with its lineage, or the Go driver's, by
    /// its ID), never a volume: nothing that sweeps volumes may touch it.
    pub fn is_snapshot(&self) -> bool {
        self.meta.snapshot.is_some() || self.id.starts_with(SNAPSHOT_ID_PREFIX)
    }
}

/// Where a new volume or snapshot goes: a directory the backend
/// understands (on the RDS the StorageClass's `volumePath`) and a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub dir: String,
    pub layout: Layout,
}

/// How a volume is exported over NVMe/TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub nqn: Nqn,
    pub port: u16,
}

/// A new exported volume.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub id: VolumeId,
    pub size_bytes: u64,
    pub export: Export,
    pub place: Place,
    /// Recorded with the volume as it is made.
    pub meta: VolumeMeta,
}

/// A copy of a volume or snapshot (a snapshot, a restore or a clone).
#[derive(Debug, Clone)]
pub struct CopySpec {
    /// What is copied: a volume or a snapshot, as just looked up.
    pub source: Volume,
    pub target: VolumeId,
    pub method: CopyMethod,
    pub place: Place,
    /// `Some((size, export))`: a volume of that size, exported; `None`: a
    /// snapshot, of the source's size and not exported.
    pub export: Option<(u64, Export)>,
    pub meta: VolumeMeta,
}

/// A read-only snapshot `target` of volume `source` in pool `pool`, taken
/// by the backend without looking the volume up first.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub pool: String,
    pub source: VolumeId,
    pub target: VolumeId,
    pub meta: VolumeMeta,
}

/// Pool capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub size_bytes: u64,
    pub free_bytes: u64,
}

/// What a pool can do: its kind as the backend names it (`btrfs`, `xfs`,
/// `ext4`, `unknown`) and the copy methods it allows, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub kind: String,
    pub methods: Vec<CopyMethod>,
}

impl PoolInfo {
    /// Whether volumes may have a snapshot domain of their own.
    pub fn allows(&self, layout: Layout) -> bool {
        match layout {
            Layout::Flat => true,
            Layout::Subvolume => self.methods.contains(&CopyMethod::Subvolume),
        }
    }
}

/// What a backend can do; the CSI capabilities the controller offers
/// follow from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// CreateSnapshot, DeleteSnapshot, ListSnapshots.
    pub snapshots: bool,
    /// CreateVolume from a volume.
    pub clones: bool,
    /// ControllerExpandVolume.
    pub expansion: bool,
    /// The backend admits only the hosts ControllerPublish names and can
    /// cut the sessions of hosts it no longer admits
    /// ([`Backend::set_allowed_hosts`], [`Backend::cut_sessions`]).
    pub fencing: bool,
}

fn no_fencing() -> Error {
    Error::new(
        ErrorKind::Internal,
        "this backend does not restrict which hosts may connect",
    )
}

pub trait Backend: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
    /// `Ok(None)` only when the backend answered that the volume is absent.
    fn get_volume(&self, id: &VolumeId) -> impl Future<Output = Result<Option<Volume>>> + Send;
    /// Where a volume or snapshot `id` placed at `place` keeps its data, in
    /// the words of [`Volume::location`]. Pure: asks the server nothing.
    fn location(&self, id: &VolumeId, place: &Place) -> Result<String>;
    /// Makes and exports a volume. With [`Capabilities::fencing`] it
    /// admits no host until [`Backend::set_allowed_hosts`] names some.
    fn create_volume(&self, spec: &NewVolume) -> impl Future<Output = Result<()>> + Send;
    /// Removes a volume or snapshot and its data. `known` is the volume as
    /// looked up just before, or `None` if it was already gone, in which
    /// case only what an earlier attempt may have left is looked for. The
    /// data goes only once a fresh lookup shows the volume gone.
    fn delete_volume(
        &self,
        id: &VolumeId,
        known: Option<&Volume>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn expand_volume(
        &self,
        id: &VolumeId,
        size_bytes: u64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every volume and snapshot whose ID starts with `prefix`.
    fn list_volumes(&self, prefix: &IdPrefix) -> impl Future<Output = Result<Vec<Volume>>> + Send;
    fn capacity(&self, pool: &str) -> impl Future<Output = Result<Capacity>> + Send;
    /// What pool `pool` can do: which copy methods and layouts it allows.
    fn pool_info(&self, pool: &str) -> impl Future<Output = Result<PoolInfo>> + Send;
    /// Makes `spec.target` a copy of `spec.source`. A retry after a copy
    /// that was half made completes it. With [`CopyMethod::ByteCopy`] the
    /// copy runs on in the background after this returns (see
    /// [`Backend::start_copy`]). An exported copy admits no host with
    /// [`Capabilities::fencing`], as [`Backend::create_volume`].
    fn copy(&self, spec: &CopySpec) -> impl Future<Output = Result<()>> + Send;
    /// A read-only snapshot without looking the volume up first:
    /// `Ok(false)` when the volume's layout does not allow it (or there is
    /// no such volume). A retry completes a half-made snapshot.
    fn snapshot_volume(&self, spec: &SnapshotSpec) -> impl Future<Output = Result<bool>> + Send;
    /// Starts (again) a background byte copy of `source` into the existing
    /// `target`.
    fn start_copy(
        &self,
        source: &VolumeId,
        target: &VolumeId,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Replaces the driver's records of a volume (clears a finished copy's
    /// mark).
    fn set_meta(&self, id: &VolumeId, meta: &VolumeMeta)
        -> impl Future<Output = Result<()>> + Send;
    /// Admits exactly `hosts` (empty: no host) to volume `id`'s export
    /// from now on. Sessions already open stay open (see
    /// [`Backend::cut_sessions`]). Only with [`Capabilities::fencing`].
    fn set_allowed_hosts(
        &self,
        _id: &VolumeId,
        _hosts: &[Nqn],
    ) -> impl Future<Output = Result<()>> + Send {
        async { Err(no_fencing()) }
    }
    /// Drops every open session to volume `id`'s export; the hosts still
    /// admitted reconnect on their own. Only with
    /// [`Capabilities::fencing`].
    fn cut_sessions(&self, _id: &VolumeId) -> impl Future<Output = Result<()>> + Send {
        async { Err(no_fencing()) }
    }
}
