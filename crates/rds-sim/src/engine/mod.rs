//! The simulated RouterOS state and what each command does to it.
//!
//! [`Engine::execute`] parses one command line (`crate::cli`), resolves its
//! targets and arguments (`select`), changes the state, the backing files
//! (`crate::store`) and the kernel exports (`crate::nvmet`), and answers
//! with a [`Reply`]; what `print` and `monitor-traffic` show is `render`'s.

mod render;
mod select;
mod snapshots;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::cli::{self, Arg, Command, SyntaxError, Target, Value};
use crate::format::EOL;
use crate::nvmet::Nvmet;
use crate::store::{split_name, Store};
use crate::{Faults, PoolFs};
use render::{file_records, monitor, print_disks, print_files};
use select::{
    resolve, resolve_disks, Args, DiskSettings, Item, Matcher, ADD_ONLY_ARGS, CONNECTION_KEYS,
    FILE_KEYS, SET_ARGS,
};
pub use snapshots::DiskCopy;
use snapshots::{print_subvolumes, Subvolume};
#[cfg(test)]
use {
    render::disk_records,
    select::{parse_size, DISK_KEYS},
};

const DEFAULT_PORT: u16 = 4420;
const NQN_PREFIX: &str = "nqn.2000-02.com.mikrotik:";

/// What a command sends back. Failures go to stdout with status 0 and
/// syntax errors to stderr with status 1 (see the crate documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub status: u32,
}

impl Reply {
    pub(crate) fn ok(stdout: String) -> Reply {
        Reply {
            stdout,
            stderr: String::new(),
            status: 0,
        }
    }

    pub(crate) fn failure(message: &str) -> Reply {
        Reply::ok(format!("failure: {message}{EOL}"))
    }

    fn syntax(message: impl std::fmt::Display) -> Reply {
        Reply {
            stdout: String::new(),
            stderr: format!("{message}{EOL}"),
            status: 1,
        }
    }

    fn invalid_value(arg: &str) -> Reply {
        Reply::syntax(format!("invalid value for argument {arg}"))
    }

    fn invalid_parameter(detail: &str) -> Reply {
        Reply::failure(&format!("invalid parameter: {detail}"))
    }
}

impl From<SyntaxError> for Reply {
    fn from(e: SyntaxError) -> Reply {
        Reply::syntax(e)
    }
}

/// A file-backed disk: the engine keeps the very record
/// [`crate::SimHandle::disks`] hands out.
pub(crate) type Disk = crate::DiskInfo;

impl Disk {
    /// The `/file` name of the backing file.
    fn file_name(&self) -> &str {
        self.file_path.strip_prefix('/').unwrap_or(&self.file_path)
    }

    /// The hosts allowed to connect (empty: any host).
    fn allowed_hosts(&self) -> Vec<String> {
        host_list(&self.allow_host)
    }
}

/// The host NQNs of an `nvme-tcp-server-allow-host-name` value, as the
/// simulator reads the property: a comma-separated list (checked by
/// `select`), sorted and without repeats.
fn host_list(value: &str) -> Vec<String> {
    let mut hosts: Vec<String> = value
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug)]
pub(crate) struct State {
    pub pool: String,
    pub pool_size: u64,
    pub disks: Vec<Disk>,
    /// Keyed by name without the leading slash.
    pub files: BTreeMap<String, FileEntry>,
    /// Directories below the pool root; the root itself is implicit.
    pub dirs: BTreeSet<String>,
    pub pool_fs: PoolFs,
    pub subvolumes: Vec<Subvolume>,
    /// Bytes per second a `/disk copy` advances by.
    pub copy_rate: u64,
    next_auto_slot: u64,
}

impl State {
    fn used(&self) -> u64 {
        self.files
            .values()
            .fold(0u64, |acc, f| acc.saturating_add(f.size))
    }

    /// Space still free in the pool. Backing files count at their full size,
    /// orphans included; sparseness and copy-on-write sharing are ignored.
    fn free(&self) -> u64 {
        self.pool_size.saturating_sub(self.used())
    }

    fn add_dirs_for(&mut self, name: &str) {
        let parts: Vec<&str> = name.split('/').collect();
        for end in 2..parts.len() {
            self.dirs.insert(parts[..end].join("/"));
        }
    }
}

#[derive(Debug)]
pub(crate) struct Engine {
    state: Mutex<State>,
    store: Store,
    /// Real NVMe/TCP exports of exported disks (directory storage only).
    nvmet: Option<Nvmet>,
}

/// What the pool is: its mount point name, size, file system and how fast
/// it copies.
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub name: String,
    pub size: u64,
    pub fs: PoolFs,
    pub copy_rate: u64,
}

impl PoolConfig {
    /// A Btrfs pool named `storage-pool` of `size` bytes.
    #[cfg(test)]
    pub(crate) fn sized(size: u64) -> PoolConfig {
        PoolConfig {
            name: "storage-pool".into(),
            size,
            fs: PoolFs::Btrfs,
            copy_rate: crate::DEFAULT_COPY_RATE,
        }
    }
}

impl Engine {
    pub(crate) fn new(
        store: Store,
        pool: PoolConfig,
        nvmet: Option<Nvmet>,
    ) -> std::io::Result<Engine> {
        let scanned = store.scan(&pool.name)?;
        let mut state = State {
            pool: pool.name,
            pool_size: pool.size,
            disks: Vec::new(),
            files: BTreeMap::new(),
            dirs: scanned.dirs.into_iter().collect(),
            pool_fs: pool.fs,
            subvolumes: Vec::new(),
            copy_rate: pool.copy_rate,
            next_auto_slot: 1,
        };
        for (name, size, modified) in scanned.files {
            state.files.insert(name, FileEntry { size, modified });
        }
        Ok(Engine {
            state: Mutex::new(state),
            store,
            nvmet,
        })
    }

    /// A panic elsewhere must not wedge the simulator for the rest of a test run.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state with running copies brought up to now.
    pub(crate) fn settled(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        self.settle_copies(&mut state);
        state
    }

    pub(crate) fn execute(&self, line: &str, faults: &Faults) -> Reply {
        let command = match cli::parse(line) {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let mut state = self.settled();
        let result = match command {
            Command::Empty => Ok(Reply::ok(String::new())),
            Command::DiskAdd(args) => {
                if faults.take_no_space() {
                    Ok(Reply::failure("not enough space"))
                } else {
                    self.disk_add(&mut state, &args)
                }
            }
            Command::DiskSet { target, args } => self.disk_set(&mut state, target, &args),
            Command::DiskRemove(target) => {
                if faults.take_ignore_disk_remove() {
                    Ok(Reply::ok(String::new()))
                } else {
                    self.disk_remove(&mut state, target)
                }
            }
            Command::DiskPrint(print) => print_disks(&state, &print),
            Command::DiskMonitorTraffic { target, once } => monitor(&state, target, once),
            Command::FilePrint(print) => print_files(&state, &print),
            Command::FileRemove(target) => self.file_remove(&mut state, target),
            Command::DiskCopy(args) => self.disk_copy(&mut state, &args),
            Command::SubvolumeAdd(args) => self.subvolume_add(&mut state, &args),
            Command::SubvolumePrint(print) => print_subvolumes(&state, &print),
            Command::SubvolumeRemove(target) => self.subvolume_remove(&mut state, target),
            Command::NvmeConnectionPrint(print) => Matcher::compile(&print.conds, CONNECTION_KEYS)
                .map(|_| {
                    Reply::ok(if print.count_only {
                        format!("0{EOL}")
                    } else {
                        String::new()
                    })
                }),
        };
        result.unwrap_or_else(|r| r)
    }

    /// Creates the backing file of `name` in the table and on disk.
    pub(crate) fn add_file(&self, name: &str, size: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        let name = name.strip_prefix('/').unwrap_or(name).to_string();
        let pool = state.pool.clone();
        if check_new_file(&state, &name).is_err() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name} is not a new file name inside {pool}"),
            ));
        }
        self.store.create_sparse(&pool, &name, size)?;
        state.add_dirs_for(&name);
        state.files.insert(
            name,
            FileEntry {
                size,
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    fn disk_add(&self, state: &mut State, args: &[Arg]) -> Result<Reply, Reply> {
        let a = Args::new(args, &[ADD_ONLY_ARGS, SET_ARGS])?;
        let comment = a.text("comment")?.unwrap_or("").to_string();
        match a.text("type")? {
            Some("file") => {}
            Some(_) => return Err(Reply::invalid_parameter("only type=file is supported")),
            None => return Err(Reply::invalid_parameter("type is required")),
        }
        let path = a
            .text("file-path")?
            .ok_or_else(|| Reply::invalid_parameter("file-path is required"))?;
        let settings = a.disk_settings()?;
        let size = settings.size;
        let export = settings.export.unwrap_or(false);
        let (port, nqn) = (settings.port, settings.nqn);
        let allow_host = settings.allow_host.unwrap_or("");
        let slot = match a.text("slot")? {
            Some("") => return Err(Reply::invalid_value("slot")),
            Some(s) => s.to_string(),
            None => auto_slot(state),
        };
        if nqn == Some("") {
            return Err(Reply::invalid_value("nvme-tcp-server-nqn"));
        }
        let source = match a.value("copy-from") {
            None => None,
            Some(Value::Text(name)) => Some(Target::Items(vec![name.clone()])),
            Some(Value::Find(conds)) => Some(Target::Find(conds.clone())),
        };

        let name = path.strip_prefix('/').unwrap_or(path).to_string();
        if state.disks.iter().any(|d| d.slot == slot) || slot == state.pool {
            return Err(Reply::failure("slot already exists"));
        }
        // A disk over a file that is already there (one inside a subvolume
        // snapshot) keeps the file and its data: RouterOS's behaviour here
        // is unverified, and this is what the driver's subvolume method
        // relies on. A size or a source would make it a new file.
        let adopt = size.is_none() && source.is_none() && state.files.contains_key(&name);
        if adopt {
            if state.disks.iter().any(|d| d.file_name() == name) {
                return Err(Reply::failure("file is in use"));
            }
        } else {
            check_new_file(state, &name)?;
            if state.read_only_subvolume_of(&name).is_some() {
                return Err(Reply::failure("read-only file system"));
            }
        }

        let source = match source {
            None => None,
            Some(target) => {
                let items = resolve_disks(state, &target)?;
                match items.as_slice() {
                    [] => return Err(Reply::failure("no such item")),
                    [Item::Disk(i)] => Some(*i),
                    [_] => return Err(Reply::failure("can not copy from this disk")),
                    _ => return Err(Reply::failure("copy-from matches more than one disk")),
                }
            }
        };
        let size = match (size, source) {
            (Some(size), Some(src)) if size < state.disks[src].size => {
                return Err(Reply::failure("file-size is smaller than the source"))
            }
            (Some(size), _) => size,
            (None, Some(src)) => state.disks[src].size,
            (None, None) if adopt => state.files.get(&name).map_or(0, |f| f.size),
            (None, None) => return Err(Reply::invalid_parameter("file-size is required")),
        };
        if !adopt && size > state.free() {
            return Err(Reply::failure("not enough space"));
        }

        let pool = state.pool.clone();
        let io = match source {
            _ if adopt => Ok(()),
            Some(src) => {
                let src_name = state.disks[src].file_name().to_string();
                self.store.copy(&pool, &src_name, &name, size)
            }
            None => self.store.create_sparse(&pool, &name, size),
        };
        io.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Reply::failure("file already exists"),
            _ => Reply::failure(&format!("could not create file: {e}")),
        })?;

        let (port, nqn) = if export {
            (
                Some(port.unwrap_or(DEFAULT_PORT)),
                Some(nqn.map_or_else(|| format!("{NQN_PREFIX}{slot}"), str::to_string)),
            )
        } else {
            (port, nqn.map(str::to_string))
        };
        let hosts = host_list(allow_host);
        if let (true, Some(port), Some(nqn)) = (export, port, &nqn) {
            if let Err(reply) = self.export(&pool, &name, nqn, port, &hosts) {
                if !adopt {
                    let _ = self.store.remove_file(&pool, &name);
                }
                return Err(reply);
            }
        }

        let now = SystemTime::now();
        if !adopt {
            state.add_dirs_for(&name);
            state.files.insert(
                name.clone(),
                FileEntry {
                    size,
                    modified: now,
                },
            );
        }
        state.disks.push(Disk {
            slot,
            file_path: format!("/{name}"),
            size,
            export,
            port,
            nqn,
            allow_host: allow_host.to_string(),
            created: now,
            comment,
            copy: None,
            export_cuts: 0,
        });
        Ok(Reply::ok(String::new()))
    }

    fn disk_set(
        &self,
        state: &mut State,
        target: Option<Target>,
        args: &[Arg],
    ) -> Result<Reply, Reply> {
        let DiskSettings {
            comment,
            size,
            export,
            port,
            nqn,
            allow_host,
        } = Args::new(args, &[SET_ARGS])?.disk_settings()?;
        let target = target.ok_or_else(|| Reply::invalid_parameter("numbers is required"))?;
        let items = resolve_disks(state, &target)?;
        let mut indexes = Vec::new();
        for item in items {
            match item {
                Item::Disk(i) => indexes.push(i),
                _ => return Err(Reply::failure("can not change this disk")),
            }
        }
        if let Some(size) = size {
            let mut growth = 0u64;
            for &i in &indexes {
                if state
                    .read_only_subvolume_of(state.disks[i].file_name())
                    .is_some()
                {
                    return Err(Reply::failure("read-only file system"));
                }
                let current = state.disks[i].size;
                if size < current {
                    return Err(Reply::failure("can not shrink file"));
                }
                growth = growth.saturating_add(size - current);
            }
            if growth > state.free() {
                return Err(Reply::failure("not enough space"));
            }
        }
        let pool = state.pool.clone();
        let now = SystemTime::now();
        for i in indexes {
            if let Some(size) = size {
                let name = state.disks[i].file_name().to_string();
                let old_size = state.disks[i].size;
                if size != old_size {
                    self.store
                        .resize(&pool, &name, size)
                        .map_err(|e| Reply::failure(&format!("could not resize file: {e}")))?;
                    if let Err(reply) = self.revalidate(&state.disks[i]) {
                        // Nothing can have been written past the old end
                        // yet: shrinking back restores the previous state.
                        let _ = self.store.resize(&pool, &name, old_size);
                        return Err(reply);
                    }
                }
                state.disks[i].size = size;
                if let Some(f) = state.files.get_mut(&name) {
                    f.size = size;
                    f.modified = now;
                }
            }
            let mut disk = state.disks[i].clone();
            if let Some(export) = export {
                if disk.export && !export {
                    disk.export_cuts += 1;
                }
                disk.export = export;
                if export {
                    disk.port.get_or_insert(DEFAULT_PORT);
                    if disk.nqn.is_none() {
                        disk.nqn = Some(format!("{NQN_PREFIX}{}", disk.slot));
                    }
                }
            }
            if let Some(port) = port {
                disk.port = Some(port);
            }
            if let Some(nqn) = nqn {
                disk.nqn = Some(nqn.to_string());
            }
            if let Some(h) = allow_host {
                disk.allow_host = h.to_string();
            }
            if let Some(c) = comment {
                disk.comment = c.to_string();
            }
            self.reexport(&pool, &state.disks[i], &disk)?;
            state.disks[i] = disk;
        }
        Ok(Reply::ok(String::new()))
    }

    /// Creates the kernel target export of a disk, open to `hosts` (empty:
    /// any host), if the simulator makes real exports.
    fn export(
        &self,
        pool: &str,
        name: &str,
        nqn: &str,
        port: u16,
        hosts: &[String],
    ) -> Result<(), Reply> {
        let Some(nvmet) = &self.nvmet else {
            return Ok(());
        };
        let path = self
            .store
            .path(pool, name)
            .ok_or_else(|| Reply::failure("nvme-tcp export needs file storage"))?;
        nvmet
            .export(nqn, port, &path, hosts)
            .map_err(|e| Reply::failure(&format!("could not export over nvme-tcp: {e}")))
    }

    /// `(nqn, port)` of a disk that is exported for real.
    fn exported(&self, disk: &Disk) -> Option<(String, u16)> {
        match (&self.nvmet, disk.export, &disk.nqn, disk.port) {
            (Some(_), true, Some(nqn), Some(port)) => Some((nqn.clone(), port)),
            _ => None,
        }
    }

    fn unexport(&self, disk: &Disk) -> Result<(), Reply> {
        self.on_export(disk, "remove", Nvmet::unexport)
    }

    fn revalidate(&self, disk: &Disk) -> Result<(), Reply> {
        self.on_export(disk, "resize", Nvmet::revalidate)
    }

    /// Runs `op` on the kernel export of `disk`, if it has one; `doing`
    /// names the step in the failure.
    fn on_export(
        &self,
        disk: &Disk,
        doing: &str,
        op: impl FnOnce(&Nvmet, &str) -> std::io::Result<()>,
    ) -> Result<(), Reply> {
        match (&self.nvmet, self.exported(disk)) {
            (Some(nvmet), Some((nqn, _))) => op(nvmet, &nqn)
                .map_err(|e| Reply::failure(&format!("could not {doing} nvme-tcp export: {e}"))),
            _ => Ok(()),
        }
    }

    /// Moves a disk's export from `old` settings to `new` ones (export on or
    /// off, another port or NQN: live sessions drop). Another allow-list
    /// alone only changes who may connect from now on: sessions stay. On
    /// failure the old export is put back.
    fn reexport(&self, pool: &str, old: &Disk, new: &Disk) -> Result<(), Reply> {
        let (before, after) = (self.exported(old), self.exported(new));
        let hosts = new.allowed_hosts();
        if before == after {
            return match (&self.nvmet, &after) {
                (Some(nvmet), Some((nqn, _))) if old.allowed_hosts() != hosts => {
                    nvmet.set_hosts(nqn, &hosts).map_err(|e| {
                        Reply::failure(&format!("could not change nvme-tcp allowed hosts: {e}"))
                    })
                }
                _ => Ok(()),
            };
        }
        self.unexport(old)?;
        if let Some((nqn, port)) = &after {
            if let Err(reply) = self.export(pool, new.file_name(), nqn, *port, &hosts) {
                if let Some((nqn, port)) = &before {
                    let _ = self.export(pool, old.file_name(), nqn, *port, &old.allowed_hosts());
                }
                return Err(reply);
            }
        }
        Ok(())
    }

    fn disk_remove(&self, state: &mut State, target: Option<Target>) -> Result<Reply, Reply> {
        let target = target.ok_or_else(|| Reply::invalid_parameter("numbers is required"))?;
        let items = resolve_disks(state, &target)?;
        if items.contains(&Item::Pool) {
            return Err(Reply::failure("can not remove this disk"));
        }
        for item in &items {
            let Item::Disk(i) = item else { continue };
            let slot = &state.disks[*i].slot;
            let copying_from = |d: &Disk| d.copy.as_ref().is_some_and(|c| &c.source == slot);
            if state.disks.iter().any(copying_from) {
                return Err(Reply::failure("disk is in use"));
            }
        }
        let pool = state.pool.clone();
        let mut torn_down: Vec<&Disk> = Vec::new();
        for item in &items {
            let Item::Disk(i) = item else { continue };
            let disk = &state.disks[*i];
            if let Err(reply) = self.unexport(disk) {
                // All or nothing: put back the exports already removed.
                for d in torn_down {
                    if let Some((nqn, port)) = self.exported(d) {
                        let _ = self.export(&pool, d.file_name(), &nqn, port, &d.allowed_hosts());
                    }
                }
                return Err(reply);
            }
            torn_down.push(disk);
        }
        let mut index = 0;
        state.disks.retain(|_| {
            let keep = !items.contains(&Item::Disk(index));
            index += 1;
            keep
        });
        Ok(Reply::ok(String::new()))
    }

    /// Removes every real export, as a target going away does.
    pub(crate) fn unexport_all(&self) {
        let state = self.lock();
        for disk in &state.disks {
            if let Err(r) = self.unexport(disk) {
                tracing::warn!(slot = %disk.slot, reply = %r.stdout.trim_end(), "rds-sim: could not remove an export at shutdown");
            }
        }
    }

    /// Takes the real TCP port `port` down: every export on it becomes
    /// unreachable until [`Engine::nvmet_port_up`]. Returns the port entries
    /// removed.
    pub(crate) fn nvmet_port_down(&self, port: u16) -> std::io::Result<usize> {
        let _state = self.lock();
        match &self.nvmet {
            Some(n) => n.port_down(port),
            None => Ok(0),
        }
    }

    /// Brings the real TCP port `port` back with the exports that use it.
    pub(crate) fn nvmet_port_up(&self, port: u16) -> std::io::Result<()> {
        let state = self.lock();
        let Some(n) = &self.nvmet else {
            return Ok(());
        };
        let nqns: Vec<String> = state
            .disks
            .iter()
            .filter_map(|d| self.exported(d))
            .filter(|(_, p)| *p == port)
            .map(|(nqn, _)| nqn)
            .collect();
        n.port_up(port, &nqns)
    }

    fn file_remove(&self, state: &mut State, target: Option<Target>) -> Result<Reply, Reply> {
        let target = target.ok_or_else(|| Reply::invalid_parameter("numbers is required"))?;
        let items = resolve(&file_records(state), &target, FILE_KEYS, |_, name| {
            let name = name.strip_prefix('/').unwrap_or(name);
            if name == state.pool {
                Some(Item::Root)
            } else if state.files.contains_key(name) {
                Some(Item::File(name.to_string()))
            } else if state.dirs.contains(name) {
                Some(Item::Dir(name.to_string()))
            } else {
                None
            }
        })?;
        for item in &items {
            match item {
                Item::Root => return Err(Reply::failure("can not remove mount point")),
                Item::Dir(name) if state.is_subvolume_dir(name) => {
                    return Err(Reply::failure("can not remove subvolume"));
                }
                Item::File(name) | Item::Dir(name)
                    if state.read_only_subvolume_of(name).is_some() =>
                {
                    return Err(Reply::failure("read-only file system"));
                }
                Item::File(name) if state.disks.iter().any(|d| d.file_name() == name) => {
                    return Err(Reply::failure("file is in use"));
                }
                Item::Dir(name) => {
                    let prefix = format!("{name}/");
                    let removed_too = |n: &String| items.contains(&Item::File(n.clone()));
                    let busy = state
                        .files
                        .keys()
                        .any(|f| f.starts_with(&prefix) && !removed_too(f))
                        || state.dirs.iter().any(|d| {
                            d.starts_with(&prefix) && !items.contains(&Item::Dir(d.clone()))
                        });
                    if busy {
                        return Err(Reply::failure("directory is not empty"));
                    }
                }
                _ => {}
            }
        }
        let pool = state.pool.clone();
        for item in &items {
            if let Item::File(name) = item {
                self.store
                    .remove_file(&pool, name)
                    .map_err(|e| Reply::failure(&format!("could not remove file: {e}")))?;
                state.files.remove(name);
            }
        }
        // Deepest first, so a directory is empty by the time it is removed.
        let mut dirs: Vec<&String> = items
            .iter()
            .filter_map(|i| match i {
                Item::Dir(d) => Some(d),
                _ => None,
            })
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for dir in dirs {
            self.store
                .remove_dir(&pool, dir)
                .map_err(|e| Reply::failure(&format!("could not remove directory: {e}")))?;
            state.dirs.remove(dir);
        }
        Ok(Reply::ok(String::new()))
    }
}

fn auto_slot(state: &mut State) -> String {
    loop {
        let slot = format!("file{}", state.next_auto_slot);
        state.next_auto_slot += 1;
        if !state.disks.iter().any(|d| d.slot == slot) {
            return slot;
        }
    }
}

/// A new backing file must sit inside the pool, below its root, and not
/// collide with a file or directory, nor have a file where a directory
/// should be.
fn check_new_file(state: &State, name: &str) -> Result<(), Reply> {
    let outside = || {
        Reply::invalid_parameter(&format!(
            "file-path must name a file inside /{}",
            state.pool
        ))
    };
    let parts = split_name(name).ok_or_else(outside)?;
    if parts.len() < 2 || parts[0] != state.pool {
        return Err(outside());
    }
    if state.files.contains_key(name) || state.dirs.contains(name) {
        return Err(Reply::failure("file already exists"));
    }
    for end in 2..parts.len() {
        if state.files.contains_key(&parts[..end].join("/")) {
            return Err(Reply::failure("file already exists"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod nvmet_tests;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod snapshot_tests;
