//! The Linux target in the driver's terms: volumes, snapshots and clones
//! as LVM thin volumes of one pool, exported one subsystem per volume with
//! the hosts allowed to connect.
//!
//! Every operation validates its inputs before any command is built, is
//! one or two round trips, and is idempotent: a retry of an operation that
//! was cut off completes it, and doing it again when it is done is
//! success (an "already exists" of the identical thing included). What is
//! returned is always what the host reported back, never a local record.

use std::sync::Arc;

use jiff::Timestamp;
use routeros::ClusterId;
use tracing::debug;

use crate::error::{classify, Error, Result, E};
use crate::lvm::{parse_lvs, parse_pool, script, Lv, Lvm};
use crate::meta::{id_tag, parse_id, Meta};
use crate::names::{
    check_path, check_size, LvName, Nqn, NqnPrefix, PoolName, PortSpec, VgName, VolumeName,
};
use crate::nvmet::{parse_dump, Nvmet, Select, SubsystemState, DEFAULT_CONFIGFS, NSID};
use crate::shell::Shell;

/// Where and how volumes are made and exported.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub vg: VgName,
    pub pool: PoolName,
    pub port: PortSpec,
    pub nqn_prefix: NqnPrefix,
    /// Recorded on every volume made (`rds-csi.cluster=`).
    pub cluster: Option<ClusterId>,
    configfs: String,
    dev_root: String,
}

impl TargetConfig {
    pub fn new(vg: VgName, pool: PoolName, port: PortSpec) -> Self {
        TargetConfig {
            vg,
            pool,
            port,
            nqn_prefix: NqnPrefix::default(),
            cluster: None,
            configfs: DEFAULT_CONFIGFS.to_string(),
            dev_root: "/dev".to_string(),
        }
    }

    /// Another nvmet configfs root (a test's stand-in directory).
    pub fn with_configfs(mut self, root: &str) -> Result<Self> {
        check_path("configfs root", root)?;
        self.configfs = root.to_string();
        Ok(self)
    }

    /// Another directory for LVM's device nodes than `/dev` (a test's).
    pub fn with_dev_root(mut self, root: &str) -> Result<Self> {
        check_path("device root", root)?;
        self.dev_root = root.to_string();
        Ok(self)
    }

    pub fn configfs(&self) -> &str {
        &self.configfs
    }
}

/// A volume or snapshot as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its ID.
    pub name: VolumeName,
    /// Its logical volume's name: the ID, or one derived from it.
    pub lv: LvName,
    /// Exact size, rounded up by LVM to whole extents.
    pub size_bytes: u64,
    /// The driver's records; `None`: not made by the driver.
    pub meta: Option<Meta>,
    /// A thin volume of the configured pool.
    pub in_pool: bool,
    /// The logical volume it was snapshotted from, while that exists.
    pub origin: Option<String>,
    /// Its block device exists.
    pub active: bool,
}

impl Volume {
    /// The volume a logical volume is: the one its `rds-csi.id=` tag
    /// names, or else the one its name is, and only when that volume's
    /// logical volume has this name (a hand-made volume with a derived
    /// name, or with a copied tag, is no volume's).
    fn from_lv(lv: Lv, config: &TargetConfig) -> Option<Volume> {
        let name = match parse_id(&lv.tags) {
            Some(id) => id,
            None => VolumeName::new(&lv.name).ok()?,
        };
        let lv_name = LvName::of(&config.vg, &name);
        if lv_name.as_str() != lv.name {
            return None;
        }
        Some(Volume {
            name,
            lv: lv_name,
            size_bytes: lv.size_bytes,
            meta: Meta::parse(&lv.tags),
            in_pool: lv.is_thin() && lv.pool.as_deref() == Some(config.pool.as_str()),
            active: lv.is_active(),
            origin: lv.origin,
        })
    }

    /// The driver's snapshot (not a volume to export or sweep).
    pub fn is_snapshot(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.snapshot_of.is_some())
    }

    pub fn is_ours(&self) -> bool {
        self.in_pool && self.meta.is_some()
    }
}

/// The thin pool's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub size_bytes: u64,
    /// Data space not yet written. Thin volumes may together be larger.
    pub free_bytes: u64,
    /// Percent of the pool's metadata in use (full metadata stops it).
    pub metadata_percent: f64,
}

/// A volume's export as configfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub nqn: String,
    /// Host NQNs allowed to connect, sorted.
    pub allowed_hosts: Vec<String>,
    /// `attr_allow_any_host` is not `0`: any host may connect. The driver
    /// never sets it; seeing it means someone else did.
    pub any_host: bool,
    /// Namespace 1's device while it is enabled.
    pub device_path: Option<String>,
    /// Linked to the configured port: reachable.
    pub on_port: bool,
}

impl Export {
    fn from_state(s: SubsystemState, port: &PortSpec) -> Export {
        let device_path = s
            .namespaces
            .iter()
            .find(|n| n.nsid == NSID.to_string() && n.enabled)
            .map(|n| n.device_path.clone());
        Export {
            allowed_hosts: s.hosts,
            any_host: s.allow_any_host != Some(false),
            device_path,
            on_port: s.ports.iter().any(|p| *p == port.id.to_string()),
            nqn: s.nqn,
        }
    }
}

/// A Linux host as NVMe/TCP target.
#[derive(Clone)]
pub struct LinuxTarget {
    shell: Arc<dyn Shell>,
    config: TargetConfig,
    lvm: Lvm,
    nvmet: Nvmet,
}

impl LinuxTarget {
    pub fn new(shell: Arc<dyn Shell>, config: TargetConfig) -> Self {
        let lvm = Lvm {
            vg: config.vg.clone(),
            pool: config.pool.clone(),
            dev_root: config.dev_root.clone(),
        };
        let nvmet = Nvmet {
            root: config.configfs.clone(),
            port: config.port,
        };
        LinuxTarget {
            shell,
            config,
            lvm,
            nvmet,
        }
    }

    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// The logical volume of a volume.
    pub fn lv(&self, volume: &VolumeName) -> LvName {
        LvName::of(&self.config.vg, volume)
    }

    /// The block device of a volume (`/dev/<vg>/<lv>`).
    pub fn device(&self, volume: &VolumeName) -> String {
        self.lvm.device(&self.lv(volume))
    }

    /// The tags a new volume gets: `meta`'s, and its ID when its logical
    /// volume's name is derived.
    fn tags(&self, volume: &VolumeName, meta: &Meta) -> Vec<String> {
        let mut tags = meta.tags();
        if self.lv(volume).is_derived() {
            tags.push(id_tag(volume));
        }
        tags
    }

    /// The NQN a volume is exported as.
    pub fn nqn(&self, volume: &VolumeName) -> Nqn {
        self.config.nqn_prefix.nqn(volume)
    }

    /// Runs a script and returns its stdout, or its classified failure.
    async fn run(&self, name: &'static str, script: &str) -> Result<String> {
        let out = self.shell.run(name, script).await?;
        let result = classify(&out).map(|()| out.stdout);
        if let Err(e) = &result {
            debug!(command = name, error = %e, "target host command failed");
        }
        result
    }

    /// Runs `act` then reads the volume back, in one round trip.
    async fn act_and_get(
        &self,
        name: &'static str,
        act: &[&str],
        lv: &VolumeName,
    ) -> Result<Volume> {
        let get = self.lvm.get(&self.lv(lv));
        // The acts' own chatter goes to stderr so stdout is the report.
        let acts: Vec<String> = act.iter().map(|a| format!("{a} >&2")).collect();
        let mut cmds: Vec<&str> = acts.iter().map(String::as_str).collect();
        cmds.push(&get);
        let out = self.run(name, &script(&cmds)).await?;
        self.one_volume(&out, lv)?.ok_or_else(|| {
            Error(E::Protocol(format!(
                "{lv} was not listed right after it was changed"
            )))
        })
    }

    fn one_volume(&self, json: &str, lv: &VolumeName) -> Result<Option<Volume>> {
        Ok(parse_lvs(json)
            .map_err(|s| Error(E::Protocol(s)))?
            .into_iter()
            .filter_map(|l| Volume::from_lv(l, &self.config))
            .find(|v| v.name == *lv))
    }

    fn new_meta(&self) -> Meta {
        Meta::created(Timestamp::now(), self.config.cluster.clone())
    }

    /// Looks a volume or snapshot up by name; `None` only when the host
    /// answered that there is no such logical volume.
    pub async fn get_volume(&self, lv: &VolumeName) -> Result<Option<Volume>> {
        match self
            .run("lvs_get", &script(&[&self.lvm.get(&self.lv(lv))]))
            .await
        {
            Ok(out) => self.one_volume(&out, lv),
            Err(Error(E::NotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The driver's volumes and snapshots in the pool.
    pub async fn list_volumes(&self) -> Result<Vec<Volume>> {
        let out = self.run("lvs_list", &script(&[&self.lvm.list()])).await?;
        Ok(parse_lvs(&out)
            .map_err(|s| Error(E::Protocol(s)))?
            .into_iter()
            .filter_map(|l| Volume::from_lv(l, &self.config))
            .filter(Volume::is_ours)
            .collect())
    }

    /// The pool's capacity.
    pub async fn capacity(&self) -> Result<Capacity> {
        let out = self
            .run("lvs_pool", &script(&[&self.lvm.pool_usage()]))
            .await?;
        let u = parse_pool(&out).map_err(|s| Error(E::Protocol(s)))?;
        Ok(Capacity {
            size_bytes: u.size_bytes,
            free_bytes: u.free_bytes(),
            metadata_percent: u.metadata_percent,
        })
    }

    /// Makes a thin volume of at least `size_bytes`. An existing volume of
    /// that name is success when it is the driver's plain volume in the
    /// pool and at least that big, "already exists" otherwise.
    pub async fn create_volume(&self, lv: &VolumeName, size_bytes: u64) -> Result<Volume> {
        self.create_volume_with(lv, size_bytes, self.new_meta())
            .await
    }

    /// [`LinuxTarget::create_volume`] recording `meta` (without snapshot
    /// or clone sources: a plain volume has none).
    pub async fn create_volume_with(
        &self,
        lv: &VolumeName,
        size_bytes: u64,
        meta: Meta,
    ) -> Result<Volume> {
        check_size(size_bytes)?;
        let meta = Meta {
            snapshot_of: None,
            size: None,
            method: None,
            clone_of: None,
            ..meta
        };
        let create = self
            .lvm
            .create(&self.lv(lv), size_bytes, &self.tags(lv, &meta));
        match self.act_and_get("lvcreate_thin", &[&create], lv).await {
            Err(Error(E::AlreadyExists(why))) => {
                let existing = self.existing(lv, why).await?;
                let plain = existing
                    .meta
                    .as_ref()
                    .is_some_and(|m| m.snapshot_of.is_none() && m.clone_of.is_none());
                if existing.is_ours() && plain && existing.size_bytes >= size_bytes {
                    Ok(existing)
                } else {
                    Err(conflict(&existing, "a volume of that size"))
                }
            }
            other => other,
        }
    }

    /// The volume an "already exists" was about.
    async fn existing(&self, lv: &VolumeName, why: String) -> Result<Volume> {
        self.get_volume(lv)
            .await?
            .ok_or(Error(E::AlreadyExists(why)))
    }

    /// Grows a volume to at least `size_bytes`; returns its size. Never
    /// shrinks: a volume already that big is left as it is.
    pub async fn expand_volume(&self, lv: &VolumeName, size_bytes: u64) -> Result<u64> {
        check_size(size_bytes)?;
        let v = self
            .get_volume(lv)
            .await?
            .filter(Volume::is_ours)
            .ok_or_else(|| {
                Error(E::NotFound(format!(
                    "no volume {lv} of this driver in the pool"
                )))
            })?;
        if v.size_bytes >= size_bytes {
            return Ok(v.size_bytes);
        }
        let grown = self
            .act_and_get(
                "lvextend",
                &[&self.lvm.extend(&self.lv(lv), size_bytes)],
                lv,
            )
            .await?;
        Ok(grown.size_bytes)
    }

    /// Takes a thin snapshot of `source`. An existing snapshot of that
    /// name is success when it is the driver's snapshot of `source`.
    pub async fn create_snapshot(&self, snap: &VolumeName, source: &VolumeName) -> Result<Volume> {
        self.create_snapshot_with(snap, source, self.new_meta())
            .await
    }

    /// [`LinuxTarget::create_snapshot`] recording `meta` (its
    /// `snapshot_of` set to `source`).
    pub async fn create_snapshot_with(
        &self,
        snap: &VolumeName,
        source: &VolumeName,
        meta: Meta,
    ) -> Result<Volume> {
        let meta = Meta {
            snapshot_of: Some(source.clone()),
            ..meta
        };
        let create = self
            .lvm
            .snapshot(&self.lv(source), &self.lv(snap), &self.tags(snap, &meta));
        match self
            .act_and_get("lvcreate_snapshot", &[&create], snap)
            .await
        {
            Err(Error(E::AlreadyExists(why))) => {
                let existing = self.existing(snap, why).await?;
                let same =
                    existing.meta.as_ref().and_then(|m| m.snapshot_of.as_ref()) == Some(source);
                if existing.is_ours() && same {
                    Ok(existing)
                } else {
                    Err(conflict(&existing, &format!("a snapshot of {source}")))
                }
            }
            other => other,
        }
    }

    /// Makes a writable, active volume of at least `size_bytes` from a
    /// snapshot or another volume (a thin snapshot of it, grown if asked
    /// bigger). An existing one made from `source` is completed (activated,
    /// grown) and returned.
    pub async fn clone_volume(
        &self,
        lv: &VolumeName,
        source: &VolumeName,
        size_bytes: u64,
    ) -> Result<Volume> {
        self.clone_volume_with(lv, source, size_bytes, self.new_meta())
            .await
    }

    /// [`LinuxTarget::clone_volume`] recording `meta` (its `clone_of` set
    /// to `source`; no snapshot lineage: a clone is a volume).
    pub async fn clone_volume_with(
        &self,
        lv: &VolumeName,
        source: &VolumeName,
        size_bytes: u64,
        meta: Meta,
    ) -> Result<Volume> {
        check_size(size_bytes)?;
        let meta = Meta {
            clone_of: Some(source.clone()),
            snapshot_of: None,
            size: None,
            method: None,
            ..meta
        };
        let create = self
            .lvm
            .clone_of(&self.lv(source), &self.lv(lv), &self.tags(lv, &meta));
        let made = match self.act_and_get("lvcreate_clone", &[&create], lv).await {
            Err(Error(E::AlreadyExists(why))) => {
                let existing = self.existing(lv, why).await?;
                let same = existing.meta.as_ref().and_then(|m| m.clone_of.as_ref()) == Some(source);
                if !(existing.is_ours() && same) {
                    return Err(conflict(&existing, &format!("a volume made from {source}")));
                }
                existing
            }
            other => other?,
        };
        let mut finish = Vec::new();
        if !made.active {
            finish.push(self.lvm.activate(&made.lv));
        }
        if made.size_bytes < size_bytes {
            finish.push(self.lvm.extend(&made.lv, size_bytes));
        }
        if finish.is_empty() {
            return Ok(made);
        }
        let steps: Vec<&str> = finish.iter().map(String::as_str).collect();
        self.act_and_get("lvchange_clone", &steps, lv).await
    }

    /// Records the orphan sweep's marks, leaving every other record alone.
    pub async fn set_marks(
        &self,
        lv: &VolumeName,
        retain: bool,
        orphaned_since: Option<Timestamp>,
    ) -> Result<()> {
        let name = self.lv(lv);
        let out = self
            .run("lvs_get", &script(&[&self.lvm.get(&name)]))
            .await?;
        let lvs = parse_lvs(&out).map_err(|s| Error(E::Protocol(s)))?;
        let current = lvs
            .iter()
            .find(|l| l.name == name.as_str() && Meta::parse(&l.tags).is_some())
            .ok_or_else(|| Error(E::NotFound(format!("no volume {lv} of this driver"))))?;
        let want = Meta {
            retain,
            orphaned_since,
            ..Meta::default()
        };
        let (remove, add) = want.mark_changes(&current.tags);
        match self.lvm.retag(&name, &remove, &add) {
            Some(cmd) => self.run("lvchange_tags", &script(&[&cmd])).await.map(drop),
            None => Ok(()),
        }
    }

    /// Replaces the driver's records of a volume with `meta` (a clone's
    /// source is kept when `meta` names none), leaving tags that are not
    /// the driver's alone.
    pub async fn set_records(&self, lv: &VolumeName, meta: &Meta) -> Result<()> {
        let name = self.lv(lv);
        let out = self
            .run("lvs_get", &script(&[&self.lvm.get(&name)]))
            .await?;
        let lvs = parse_lvs(&out).map_err(|s| Error(E::Protocol(s)))?;
        let (current, had) = lvs
            .iter()
            .find(|l| l.name == name.as_str())
            .and_then(|l| Some((l, Meta::parse(&l.tags)?)))
            .ok_or_else(|| Error(E::NotFound(format!("no volume {lv} of this driver"))))?;
        let want = Meta {
            clone_of: meta.clone_of.clone().or(had.clone_of),
            ..meta.clone()
        };
        let (remove, add) = want.changes(&current.tags);
        match self.lvm.retag(&name, &remove, &add) {
            Some(cmd) => self.run("lvchange_tags", &script(&[&cmd])).await.map(drop),
            None => Ok(()),
        }
    }

    /// Unexports and removes a volume or snapshot. Gone already is
    /// success; a logical volume of that name the driver did not make is
    /// refused, never removed.
    pub async fn delete_volume(&self, lv: &VolumeName) -> Result<()> {
        let Some(v) = self.get_volume(lv).await? else {
            return Ok(());
        };
        if !v.is_ours() {
            return Err(Error(E::Failed(format!(
                "{lv} is not a volume this driver made in pool {}; not removing it",
                self.config.pool
            ))));
        }
        let unexport = self.nvmet.unexport(&self.nqn(lv));
        let remove = script(&[&self.lvm.remove(&v.lv)]);
        match self.run("delete", &format!("{unexport}{remove}")).await {
            Err(Error(E::NotFound(_))) => Ok(()),
            other => other.map(drop),
        }
    }
}

fn conflict(existing: &Volume, wanted: &str) -> Error {
    let what = match &existing.meta {
        None => "not made by this driver".to_string(),
        Some(_) if !existing.in_pool => "not a thin volume of the pool".to_string(),
        Some(m) => match (&m.snapshot_of, &m.clone_of) {
            (Some(s), _) => format!("a snapshot of {s}"),
            (None, Some(c)) => format!("made from {c}, {} bytes", existing.size_bytes),
            (None, None) => format!("a volume of {} bytes", existing.size_bytes),
        },
    };
    Error(E::AlreadyExists(format!(
        "{} exists and is {what}, not {wanted}",
        existing.name
    )))
}

#[path = "target_export.rs"]
mod export;
