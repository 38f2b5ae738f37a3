//! The simulated RouterOS state and what each command does to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use regex::{Regex, RegexBuilder};

use crate::cli::{self, Arg, Command, Cond, Op, Print, SyntaxError, Target, Value};
use crate::format::{self, FieldValue, Record, EOL};
use crate::nvmet::Nvmet;
use crate::store::{split_name, Store};
use crate::Faults;

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

#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub slot: String,
    /// With the leading slash, as RouterOS prints `file-path`.
    pub file_path: String,
    pub size: u64,
    pub export: bool,
    pub port: Option<u16>,
    pub nqn: Option<String>,
    pub allow_host: String,
    pub created: SystemTime,
    /// Free text printed as `;;; comment` on the item's first line.
    pub comment: String,
}

impl Disk {
    /// The `/file` name of the backing file.
    fn file_name(&self) -> &str {
        self.file_path.strip_prefix('/').unwrap_or(&self.file_path)
    }
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

/// Property names a `where` on `/disk` may use. Records that lack one simply
/// do not match; a name outside this list is a typo and gets an error.
const DISK_KEYS: &[&str] = &[
    "type",
    "slot",
    "slot-default",
    "parent",
    "fs",
    "model",
    "size",
    "free",
    "use",
    "mount-point",
    "mount-filesystem",
    "mount-read-only",
    "compress",
    "sector-size",
    "raid-master",
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-nqn",
    "nvme-tcp-server-allow-host-name",
    "iscsi-export",
    "nfs-sharing",
    "smb-sharing",
    "file-path",
    "file-size",
    "file-offset",
];

const FILE_KEYS: &[&str] = &["name", "type", "size", "last-modified"];

const CONNECTION_KEYS: &[&str] = &["remote-address", "state", "nqn", "port"];

/// Which item of the printed list a record stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Pool,
    Disk(usize),
    File(String),
    Dir(String),
    Root,
}

struct Matcher {
    key: String,
    test: Test,
}

enum Test {
    Eq(String),
    NotEq(String),
    Match(Regex),
}

impl Matcher {
    fn compile(conds: &[Cond], keys: &[&str]) -> Result<Vec<Matcher>, Reply> {
        conds
            .iter()
            .map(|c| {
                if !keys.contains(&c.key.as_str()) {
                    return Err(Reply::from(SyntaxError::ExpectedEndOfCommand {
                        col: c.col,
                    }));
                }
                let test = match c.op {
                    Op::Eq => Test::Eq(c.value.clone()),
                    Op::NotEq => Test::NotEq(c.value.clone()),
                    Op::Match => Test::Match(
                        RegexBuilder::new(&c.value)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|_| Reply::failure("invalid regular expression"))?,
                    ),
                };
                Ok(Matcher {
                    key: c.key.clone(),
                    test,
                })
            })
            .collect()
    }

    fn all(matchers: &[Matcher], record: &Record) -> bool {
        matchers.iter().all(|m| {
            let raw = record.get(&m.key).map(FieldValue::raw);
            match (&m.test, raw) {
                (Test::Eq(v), Some(raw)) => *v == raw,
                (Test::NotEq(v), Some(raw)) => *v != raw,
                (Test::NotEq(_), None) => true,
                (Test::Match(re), Some(raw)) => re.is_match(&raw),
                (_, None) => false,
            }
        })
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(text.len(), |(i, _)| i);
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> FieldValue {
    FieldValue::Bare(if b { "yes" } else { "no" }.to_string())
}

/// Typed access to `key=value` arguments after checking no unknown key slipped in.
struct Args<'a> {
    args: &'a [Arg],
}

impl<'a> Args<'a> {
    fn new(args: &'a [Arg], allowed: &[&str]) -> Result<Args<'a>, Reply> {
        if let Some(bad) = args.iter().find(|a| !allowed.contains(&a.key.as_str())) {
            return Err(Reply::invalid_parameter(&format!(
                "unknown argument {}",
                bad.key
            )));
        }
        Ok(Args { args })
    }

    /// The last occurrence wins, as when RouterOS is given a key twice.
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.args
            .iter()
            .rev()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    fn text(&self, key: &str) -> Result<Option<&'a str>, Reply> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(Value::Find(_)) => Err(Reply::invalid_value(key)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>, Reply> {
        match self.text(key)? {
            None => Ok(None),
            Some(t) => match parse_size(t) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Reply::invalid_value(key)),
            },
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, Reply> {
        match self.text(key)? {
            None => Ok(None),
            Some(t) => parse_bool(t)
                .map(Some)
                .ok_or_else(|| Reply::invalid_value(key)),
        }
    }

    fn port(&self, key: &str) -> Result<Option<u16>, Reply> {
        match self.text(key)? {
            None => Ok(None),
            Some(t) => match t.parse::<u16>() {
                Ok(p) if p > 0 => Ok(Some(p)),
                _ => Err(Reply::invalid_value(key)),
            },
        }
    }
}

impl Engine {
    pub(crate) fn new(
        store: Store,
        pool: String,
        pool_size: u64,
        nvmet: Option<Nvmet>,
    ) -> std::io::Result<Engine> {
        let scanned = store.scan(&pool)?;
        let mut state = State {
            pool,
            pool_size,
            disks: Vec::new(),
            files: BTreeMap::new(),
            dirs: scanned.dirs.into_iter().collect(),
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

    pub(crate) fn execute(&self, line: &str, faults: &Faults) -> Reply {
        let command = match cli::parse(line) {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let mut state = self.lock();
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
        let a = Args::new(
            args,
            &[
                "type",
                "file-path",
                "file-size",
                "slot",
                "copy-from",
                "nvme-tcp-export",
                "nvme-tcp-server-port",
                "nvme-tcp-server-nqn",
                "nvme-tcp-server-allow-host-name",
                "comment",
            ],
        )?;
        let comment = a.text("comment")?.unwrap_or("").to_string();
        match a.text("type")? {
            Some("file") => {}
            Some(_) => return Err(Reply::invalid_parameter("only type=file is supported")),
            None => return Err(Reply::invalid_parameter("type is required")),
        }
        let path = a
            .text("file-path")?
            .ok_or_else(|| Reply::invalid_parameter("file-path is required"))?;
        let size = a.size("file-size")?;
        let export = a.flag("nvme-tcp-export")?.unwrap_or(false);
        let port = a.port("nvme-tcp-server-port")?;
        let nqn = a.text("nvme-tcp-server-nqn")?;
        let allow_host = a.text("nvme-tcp-server-allow-host-name")?.unwrap_or("");
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
        check_new_file(state, &name)?;

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
            (None, None) => return Err(Reply::invalid_parameter("file-size is required")),
        };
        if size > state.free() {
            return Err(Reply::failure("not enough space"));
        }

        let pool = state.pool.clone();
        let io = match source {
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
        if let (true, Some(port), Some(nqn)) = (export, port, &nqn) {
            if let Err(reply) = self.export(&pool, &name, nqn, port) {
                let _ = self.store.remove_file(&pool, &name);
                return Err(reply);
            }
        }

        let now = SystemTime::now();
        state.add_dirs_for(&name);
        state.files.insert(
            name.clone(),
            FileEntry {
                size,
                modified: now,
            },
        );
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
        });
        Ok(Reply::ok(String::new()))
    }

    fn disk_set(
        &self,
        state: &mut State,
        target: Option<Target>,
        args: &[Arg],
    ) -> Result<Reply, Reply> {
        let a = Args::new(
            args,
            &[
                "file-size",
                "nvme-tcp-export",
                "nvme-tcp-server-port",
                "nvme-tcp-server-nqn",
                "nvme-tcp-server-allow-host-name",
                "comment",
            ],
        )?;
        let comment = a.text("comment")?;
        let size = a.size("file-size")?;
        let export = a.flag("nvme-tcp-export")?;
        let port = a.port("nvme-tcp-server-port")?;
        let nqn = a.text("nvme-tcp-server-nqn")?;
        let allow_host = a.text("nvme-tcp-server-allow-host-name")?;
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

    /// Creates the kernel target export of a disk, if the simulator makes
    /// real exports.
    fn export(&self, pool: &str, name: &str, nqn: &str, port: u16) -> Result<(), Reply> {
        let Some(nvmet) = &self.nvmet else {
            return Ok(());
        };
        let path = self
            .store
            .path(pool, name)
            .ok_or_else(|| Reply::failure("nvme-tcp export needs file storage"))?;
        nvmet
            .export(nqn, port, &path)
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
        match (&self.nvmet, self.exported(disk)) {
            (Some(nvmet), Some((nqn, _))) => nvmet
                .unexport(&nqn)
                .map_err(|e| Reply::failure(&format!("could not remove nvme-tcp export: {e}"))),
            _ => Ok(()),
        }
    }

    fn revalidate(&self, disk: &Disk) -> Result<(), Reply> {
        match (&self.nvmet, self.exported(disk)) {
            (Some(nvmet), Some((nqn, _))) => nvmet
                .revalidate(&nqn)
                .map_err(|e| Reply::failure(&format!("could not resize nvme-tcp export: {e}"))),
            _ => Ok(()),
        }
    }

    /// Moves a disk's export from `old` settings to `new` ones (export on or
    /// off, another port or NQN). On failure the old export is put back.
    fn reexport(&self, pool: &str, old: &Disk, new: &Disk) -> Result<(), Reply> {
        let (before, after) = (self.exported(old), self.exported(new));
        if before == after {
            return Ok(());
        }
        self.unexport(old)?;
        if let Some((nqn, port)) = &after {
            if let Err(reply) = self.export(pool, new.file_name(), nqn, *port) {
                if let Some((nqn, port)) = &before {
                    let _ = self.export(pool, old.file_name(), nqn, *port);
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
        let pool = state.pool.clone();
        let mut torn_down: Vec<&Disk> = Vec::new();
        for item in &items {
            let Item::Disk(i) = item else { continue };
            let disk = &state.disks[*i];
            if let Err(reply) = self.unexport(disk) {
                // All or nothing: put back the exports already removed.
                for d in torn_down {
                    if let Some((nqn, port)) = self.exported(d) {
                        let _ = self.export(&pool, d.file_name(), &nqn, port);
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

fn pool_record(state: &State) -> Record {
    let used = state.used().min(state.pool_size);
    Record {
        flags: "R",
        comment: None,
        fields: vec![
            ("type", FieldValue::Bare("partition".into())),
            ("slot", FieldValue::Quoted(state.pool.clone())),
            ("slot-default", FieldValue::Quoted(String::new())),
            ("parent", FieldValue::Quoted(String::new())),
            ("fs", FieldValue::Bare("btrfs".into())),
            ("model", FieldValue::Quoted(String::new())),
            ("size", FieldValue::Int(state.pool_size)),
            ("free", FieldValue::Int(state.free())),
            (
                "use",
                FieldValue::Percent(format::percent(used, state.pool_size)),
            ),
            ("mount-point", FieldValue::Quoted(state.pool.clone())),
            ("mount-filesystem", yes_no(true)),
            ("mount-read-only", yes_no(false)),
            ("compress", yes_no(false)),
            ("sector-size", FieldValue::Bare("4096".into())),
            ("nvme-tcp-export", yes_no(false)),
            ("iscsi-export", yes_no(false)),
            ("nfs-sharing", yes_no(false)),
            ("smb-sharing", yes_no(false)),
        ],
    }
}

fn disk_record(disk: &Disk) -> Record {
    let mut fields = vec![
        ("type", FieldValue::Bare("file".into())),
        ("slot", FieldValue::Quoted(disk.slot.clone())),
        ("slot-default", FieldValue::Quoted(String::new())),
        ("parent", FieldValue::Quoted(String::new())),
        ("fs", FieldValue::Bare("-".into())),
        ("model", FieldValue::Quoted(disk.file_path.clone())),
        ("size", FieldValue::Int(disk.size)),
        ("mount-filesystem", yes_no(true)),
        ("mount-read-only", yes_no(false)),
        ("compress", yes_no(false)),
        ("sector-size", FieldValue::Bare("512".into())),
        ("raid-master", FieldValue::Bare("none".into())),
        ("nvme-tcp-export", yes_no(disk.export)),
    ];
    if let Some(port) = disk.port {
        fields.push(("nvme-tcp-server-port", FieldValue::Bare(port.to_string())));
    }
    if let Some(nqn) = &disk.nqn {
        fields.push(("nvme-tcp-server-nqn", FieldValue::Quoted(nqn.clone())));
    }
    if disk.export {
        fields.push((
            "nvme-tcp-server-allow-host-name",
            FieldValue::Quoted(disk.allow_host.clone()),
        ));
    }
    fields.extend([
        ("iscsi-export", yes_no(false)),
        ("nfs-sharing", yes_no(false)),
        ("smb-sharing", yes_no(false)),
        ("file-path", FieldValue::Bare(disk.file_path.clone())),
        ("file-size", FieldValue::Size(disk.size)),
        ("file-offset", FieldValue::Bare("0".into())),
    ]);
    Record {
        flags: "",
        comment: (!disk.comment.is_empty()).then(|| disk.comment.clone()),
        fields,
    }
}

/// All `/disk` items in print order: the pool, then file disks by age.
fn disk_records(state: &State) -> Vec<(Item, Record)> {
    let mut out = vec![(Item::Pool, pool_record(state))];
    out.extend(
        state
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (Item::Disk(i), disk_record(d))),
    );
    out
}

/// All `/file` items sorted by name: the pool's mount point shows up as a
/// `disk`, directories without a size.
fn file_records(state: &State) -> Vec<(Item, Record)> {
    let mut entries: BTreeMap<&str, (Item, Record)> = BTreeMap::new();
    let now = SystemTime::now();
    entries.insert(
        &state.pool,
        (
            Item::Root,
            Record {
                flags: "",
                comment: None,
                fields: vec![
                    ("name", FieldValue::Bare(state.pool.clone())),
                    ("type", FieldValue::Bare("disk".into())),
                    ("last-modified", FieldValue::Time(now)),
                ],
            },
        ),
    );
    for dir in &state.dirs {
        let modified = state
            .files
            .range(format!("{dir}/")..)
            .take_while(|(k, _)| k.starts_with(&format!("{dir}/")))
            .map(|(_, f)| f.modified)
            .max()
            .unwrap_or(now);
        entries.insert(
            dir,
            (
                Item::Dir(dir.clone()),
                Record {
                    flags: "",
                    comment: None,
                    fields: vec![
                        ("name", FieldValue::Bare(dir.clone())),
                        ("type", FieldValue::Bare("directory".into())),
                        ("last-modified", FieldValue::Time(modified)),
                    ],
                },
            ),
        );
    }
    for (name, file) in &state.files {
        let base = name.rsplit('/').next().unwrap_or(name);
        let kind = match base.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => format!(".{ext} file"),
            _ => "file".to_string(),
        };
        entries.insert(
            name,
            (
                Item::File(name.clone()),
                Record {
                    flags: "",
                    comment: None,
                    fields: vec![
                        ("name", FieldValue::Bare(name.clone())),
                        ("type", FieldValue::Bare(kind)),
                        ("size", FieldValue::Size(file.size)),
                        ("last-modified", FieldValue::Time(file.modified)),
                    ],
                },
            ),
        );
    }
    entries.into_values().collect()
}

/// Items a target names. `[find ...]` may match nothing; a name given
/// directly must exist, and a bare number (which RouterOS takes from the
/// previous `print` of the same console) never does here.
fn resolve(
    records: &[(Item, Record)],
    target: &Target,
    keys: &[&str],
    by_name: impl Fn(&[(Item, Record)], &str) -> Option<Item>,
) -> Result<Vec<Item>, Reply> {
    match target {
        Target::Find(conds) => {
            let matchers = Matcher::compile(conds, keys)?;
            Ok(records
                .iter()
                .filter(|(_, r)| Matcher::all(&matchers, r))
                .map(|(i, _)| i.clone())
                .collect())
        }
        Target::Items(names) => {
            let mut out = Vec::new();
            for name in names {
                let item = by_name(records, name).ok_or_else(|| Reply::failure("no such item"))?;
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            Ok(out)
        }
    }
}

fn resolve_disks(state: &State, target: &Target) -> Result<Vec<Item>, Reply> {
    resolve(&disk_records(state), target, DISK_KEYS, |_, name| {
        if name == state.pool {
            Some(Item::Pool)
        } else {
            state
                .disks
                .iter()
                .position(|d| d.slot == name)
                .map(Item::Disk)
        }
    })
}

fn print_records(
    records: Vec<(Item, Record)>,
    print: &Print,
    keys: &[&str],
    header: &str,
) -> Result<Reply, Reply> {
    let matchers = Matcher::compile(&print.conds, keys)?;
    let selected: Vec<Record> = records
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| Matcher::all(&matchers, r))
        .collect();
    if print.count_only {
        return Ok(Reply::ok(format!("{}{EOL}", selected.len())));
    }
    let mut out = String::new();
    if !selected.is_empty() {
        out.push_str(header);
        format::render_records(&selected, &mut out);
    }
    Ok(Reply::ok(out))
}

fn print_disks(state: &State, print: &Print) -> Result<Reply, Reply> {
    print_records(
        disk_records(state),
        print,
        DISK_KEYS,
        "Flags: X - disabled, R - running \r\n",
    )
}

fn print_files(state: &State, print: &Print) -> Result<Reply, Reply> {
    print_records(file_records(state), print, FILE_KEYS, "")
}

fn monitor(state: &State, target: Option<Target>, once: bool) -> Result<Reply, Reply> {
    let target = target.ok_or_else(|| Reply::invalid_parameter("numbers is required"))?;
    if !once {
        return Err(Reply::failure(
            "monitor-traffic streams to a terminal; add once",
        ));
    }
    let items = resolve_disks(state, &target)?;
    let slot = match items.as_slice() {
        [] => return Err(Reply::failure("no such item")),
        [Item::Disk(i)] => state.disks[*i].slot.clone(),
        [Item::Pool] => state.pool.clone(),
        _ => return Err(Reply::failure("monitor-traffic takes exactly one disk")),
    };
    let mut out = String::new();
    format::render_monitor(
        &[
            ("slot", slot),
            ("read-ops-per-second", "0".into()),
            ("write-ops-per-second", "0".into()),
            ("read-rate", "0bps".into()),
            ("write-rate", "0bps".into()),
        ],
        &mut out,
    );
    Ok(Reply::ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::new(Store::Memory, "storage-pool".into(), 100 << 30, None).unwrap()
    }

    fn run(e: &Engine, line: &str) -> Reply {
        e.execute(line, &Faults::default())
    }

    fn add(e: &Engine, slot: &str, size: &str) -> Reply {
        run(
            e,
            &format!(
                "/disk add type=file file-path=/storage-pool/metal-csi/{slot}.img file-size={size} slot={slot} nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:{slot}"
            ),
        )
    }

    #[test]
    fn comments_are_kept_printed_and_changed_by_set() {
        let e = engine();
        let r = run(
            &e,
            "/disk add type=file file-path=/storage-pool/metal-csi/c.img file-size=1G slot=c comment=\"rds-csi created=2026-11-22T07:10:05Z\"",
        );
        assert_eq!(r, Reply::ok(String::new()));
        let out = run(&e, "/disk print detail where slot=\"c\"").stdout;
        assert!(
            out.contains(" 0  ;;; rds-csi created=2026-11-22T07:10:05Z\r\n    type=file"),
            "{out}"
        );
        assert_eq!(
            run(&e, "/disk set [find slot=\"c\"] comment=\"by hand\"").stdout,
            ""
        );
        let out = run(&e, "/disk print detail where slot=\"c\"").stdout;
        assert!(out.contains(";;; by hand\r\n"), "{out}");
        assert!(!out.contains("rds-csi"), "{out}");
    }

    #[test]
    fn sizes_parse_bytes_and_binary_units() {
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("1536M"), Some(1536 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        assert_eq!(parse_size("4KB"), Some(4096));
        for bad in [
            "",
            "G",
            "1.5G",
            "10X",
            "-1",
            "99999999999999999999",
            "16777216T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_printed_disk_property_can_be_filtered_on() {
        let e = engine();
        assert_eq!(add(&e, "pvc-1", "1G").stdout, "");
        let state = e.lock();
        for (_, rec) in disk_records(&state) {
            for (k, _) in &rec.fields {
                assert!(DISK_KEYS.contains(k), "{k}");
            }
        }
        for (_, rec) in file_records(&state) {
            for (k, _) in &rec.fields {
                assert!(FILE_KEYS.contains(k), "{k}");
            }
        }
    }

    #[test]
    fn duplicates_and_missing_arguments_fail_without_acting() {
        let e = engine();
        assert_eq!(add(&e, "a", "1G").stdout, "");
        assert_eq!(
            add(&e, "a", "1G").stdout,
            "failure: slot already exists\r\n"
        );
        let r = run(
            &e,
            "/disk add type=file file-path=/storage-pool/metal-csi/a.img file-size=1G slot=b",
        );
        assert_eq!(r.stdout, "failure: file already exists\r\n");
        let r = run(
            &e,
            "/disk add type=file file-path=/storage-pool/x.img slot=c",
        );
        assert!(r.stdout.starts_with("failure: invalid parameter"));
        let r = run(
            &e,
            "/disk add type=file file-path=/storage-pool/x.img file-size=1G bogus=1",
        );
        assert!(r.stdout.starts_with("failure: invalid parameter"));
        let r = run(&e, "/disk add type=file file-path=/etc/passwd file-size=1G");
        assert!(r.stdout.starts_with("failure: invalid parameter"));
        let r = run(
            &e,
            "/disk add type=file file-path=/storage-pool/y.img file-size=lots",
        );
        assert_eq!(r.stderr, "invalid value for argument file-size\r\n");
        assert_eq!(r.status, 1);
        assert_eq!(e.lock().disks.len(), 1);
    }

    #[test]
    fn pool_capacity_reflects_backing_files() {
        let e = engine();
        add(&e, "a", "25G");
        let r = run(&e, "/disk print detail where mount-point=\"storage-pool\"");
        assert!(r.stdout.contains("size=107 374 182 400"), "{}", r.stdout);
        assert!(r.stdout.contains("free=80 530 636 800"), "{}", r.stdout);
        assert!(r.stdout.contains("use=25%"), "{}", r.stdout);
        assert_eq!(add(&e, "b", "76G").stdout, "failure: not enough space\r\n");
    }

    #[test]
    fn snapshots_copy_size_and_clones_may_grow() {
        let e = engine();
        add(&e, "src", "2G");
        let r = run(
            &e,
            "/disk add type=file copy-from=[find slot=src] file-path=/storage-pool/snap/s1.img slot=s1",
        );
        assert_eq!(r.stdout, "");
        let r = run(
            &e,
            "/disk add type=file copy-from=[find slot=src] file-path=/storage-pool/c.img slot=c1 file-size=3G nvme-tcp-export=yes",
        );
        assert_eq!(r.stdout, "");
        let r = run(
            &e,
            "/disk add type=file copy-from=[find slot=gone] file-path=/storage-pool/d.img slot=d",
        );
        assert_eq!(r.stdout, "failure: no such item\r\n");
        let state = e.lock();
        let s1 = state.disks.iter().find(|d| d.slot == "s1").unwrap();
        assert_eq!((s1.size, s1.export, s1.port), (2 << 30, false, None));
        let c1 = state.disks.iter().find(|d| d.slot == "c1").unwrap();
        assert_eq!((c1.size, c1.export, c1.port), (3 << 30, true, Some(4420)));
    }

    #[test]
    fn set_grows_refuses_to_shrink_and_ignores_empty_finds() {
        let e = engine();
        add(&e, "a", "1G");
        assert_eq!(run(&e, "/disk set [find slot=a] file-size=2G").stdout, "");
        assert_eq!(e.lock().disks[0].size, 2 << 30);
        assert_eq!(e.lock().files["storage-pool/metal-csi/a.img"].size, 2 << 30);
        assert_eq!(
            run(&e, "/disk set [find slot=a] file-size=1G").stdout,
            "failure: can not shrink file\r\n"
        );
        assert_eq!(
            run(&e, "/disk set [find slot=zzz] file-size=1G"),
            Reply::ok(String::new())
        );
        assert_eq!(
            run(&e, "/disk set zzz file-size=1G").stdout,
            "failure: no such item\r\n"
        );
    }

    #[test]
    fn files_in_use_and_non_empty_directories_are_kept() {
        let e = engine();
        add(&e, "a", "1G");
        let rm = "/file remove [find name=\"storage-pool/metal-csi/a.img\"]";
        assert_eq!(run(&e, rm).stdout, "failure: file is in use\r\n");
        assert_eq!(
            run(&e, "/file remove [find name=\"storage-pool/metal-csi\"]").stdout,
            "failure: directory is not empty\r\n"
        );
        assert_eq!(run(&e, "/disk remove [find slot=a]").stdout, "");
        assert_eq!(run(&e, rm).stdout, "");
        assert!(e.lock().files.is_empty());
        assert_eq!(run(&e, rm), Reply::ok(String::new()));
        assert_eq!(run(&e, "/file remove storage-pool/metal-csi").stdout, "");
        assert!(e.lock().dirs.is_empty());
        assert_eq!(
            run(&e, "/file remove storage-pool").stdout,
            "failure: can not remove mount point\r\n"
        );
    }

    #[test]
    fn where_on_an_unknown_property_is_a_syntax_error() {
        let e = engine();
        let r = run(&e, "/disk print detail where slott=a");
        assert_eq!(r.stderr, "expected end of command (line 1 column 26)\r\n");
        assert_eq!(r.status, 1);
    }

    #[test]
    fn regex_and_prefix_filters_select_disks() {
        let e = engine();
        add(&e, "pvc-1", "1G");
        add(&e, "pvc-2", "1G");
        add(&e, "other", "1G");
        let count = |q: &str| run(&e, &format!("/disk print count-only where {q}")).stdout;
        assert_eq!(count("slot~\"^pvc-\""), "2\r\n");
        assert_eq!(count("slot~\"vc\""), "2\r\n");
        assert_eq!(count("slot~\"^(pvc|oth)\""), "3\r\n");
        assert_eq!(count("slot=pvc-1"), "1\r\n");
        assert_eq!(count("type=file slot!=other"), "2\r\n");
        assert_eq!(
            run(&e, "/disk print where slot~\"(\"").stdout,
            "failure: invalid regular expression\r\n"
        );
    }

    #[test]
    fn monitor_traffic_once_prints_rates() {
        let e = engine();
        add(&e, "a", "1G");
        let r = run(&e, "/disk monitor-traffic a once");
        assert!(r.stdout.contains("slot: a\r\n"), "{}", r.stdout);
        assert!(r.stdout.contains("read-rate: 0bps"));
        assert_eq!(
            run(&e, "/disk monitor-traffic nope once").stdout,
            "failure: no such item\r\n"
        );
    }
}

/// Real exports through a plain directory standing in for nvmet's configfs.
#[cfg(test)]
mod nvmet_tests {
    use super::*;
    use crate::nvmet::NvmetConfig;
    use std::fs;
    use std::path::{Path, PathBuf};

    struct Fixture {
        _dir: tempfile::TempDir,
        data: PathBuf,
        cfs: PathBuf,
        engine: Engine,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cfs = dir.path().join("nvmet");
        fs::create_dir_all(cfs.join("subsystems")).unwrap();
        fs::create_dir_all(cfs.join("ports")).unwrap();
        let nvmet = Nvmet::open(&NvmetConfig {
            addr: "127.0.0.1".parse().unwrap(),
            configfs: cfs.clone(),
        })
        .unwrap();
        let engine = Engine::new(
            Store::Dir(data.clone()),
            "storage-pool".into(),
            100 << 30,
            Some(nvmet),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            data,
            cfs,
            engine,
        }
    }

    fn run(e: &Engine, line: &str) -> Reply {
        e.execute(line, &Faults::default())
    }

    const ADD: &str = "/disk add type=file file-path=/storage-pool/m/pvc-1.img file-size=1G slot=pvc-1 nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.x:pvc-1";

    fn attr(path: &Path) -> String {
        fs::read_to_string(path).unwrap().trim().to_string()
    }

    fn entries(path: &Path) -> usize {
        fs::read_dir(path).unwrap().count()
    }

    #[test]
    fn add_set_and_remove_drive_the_kernel_target() {
        let f = fixture();
        assert_eq!(run(&f.engine, ADD).stdout, "");
        let sub = f.cfs.join("subsystems/nqn.x:pvc-1");
        let backing = f.data.join("m/pvc-1.img");
        assert_eq!(
            attr(&sub.join("namespaces/1/device_path")),
            backing.to_str().unwrap()
        );
        assert_eq!(attr(&sub.join("namespaces/1/enable")), "1");
        assert!(f.cfs.join("ports/1/subsystems/nqn.x:pvc-1").exists());

        // Growing the file tells the target.
        assert_eq!(
            run(&f.engine, "/disk set [find slot=pvc-1] file-size=2G").stdout,
            ""
        );
        assert_eq!(fs::metadata(&backing).unwrap().len(), 2 << 30);
        assert_eq!(attr(&sub.join("namespaces/1/revalidate_size")), "1");

        // A disk without export makes no subsystem.
        let r = run(
            &f.engine,
            "/disk add type=file file-path=/storage-pool/m/plain.img file-size=1G slot=plain",
        );
        assert_eq!(r.stdout, "");
        assert_eq!(entries(&f.cfs.join("subsystems")), 1);

        // Export off and on again, then on another port.
        assert_eq!(
            run(&f.engine, "/disk set pvc-1 nvme-tcp-export=no").stdout,
            ""
        );
        assert_eq!(entries(&f.cfs.join("subsystems")), 0);
        assert_eq!(entries(&f.cfs.join("ports")), 0);
        assert_eq!(
            run(
                &f.engine,
                "/disk set pvc-1 nvme-tcp-export=yes nvme-tcp-server-port=4421"
            )
            .stdout,
            ""
        );
        assert_eq!(attr(&f.cfs.join("ports/1/addr_trsvcid")), "4421");

        assert_eq!(
            run(&f.engine, "/disk remove [find slot~\"pvc\"]").stdout,
            ""
        );
        assert_eq!(entries(&f.cfs.join("subsystems")), 0);
        assert_eq!(entries(&f.cfs.join("ports")), 0);
        assert!(backing.exists(), "removing a disk keeps its file");
    }

    #[test]
    fn configfs_failures_answer_failure_and_change_nothing() {
        let f = fixture();
        // Ports cannot be created: every export fails at its last step.
        fs::remove_dir(f.cfs.join("ports")).unwrap();
        fs::write(f.cfs.join("ports"), "").unwrap();
        let r = run(&f.engine, ADD);
        assert!(
            r.stdout
                .starts_with("failure: could not export over nvme-tcp"),
            "{r:?}"
        );
        assert!(f.engine.lock().disks.is_empty());
        assert!(f.engine.lock().files.is_empty());
        assert!(!f.data.join("m/pvc-1.img").exists());
        assert_eq!(entries(&f.cfs.join("subsystems")), 0);

        // With ports back, the add works; then make removal fail.
        fs::remove_file(f.cfs.join("ports")).unwrap();
        fs::create_dir(f.cfs.join("ports")).unwrap();
        assert_eq!(run(&f.engine, ADD).stdout, "");
        // Something else still uses the namespace group: rmdir fails.
        fs::create_dir(f.cfs.join("subsystems/nqn.x:pvc-1/namespaces/1/busy")).unwrap();
        let r = run(&f.engine, "/disk remove pvc-1");
        assert!(
            r.stdout
                .starts_with("failure: could not remove nvme-tcp export"),
            "{r:?}"
        );
        assert_eq!(f.engine.lock().disks.len(), 1);
        assert!(f.cfs.join("ports/1/subsystems/nqn.x:pvc-1").exists());
        assert_eq!(
            attr(&f.cfs.join("subsystems/nqn.x:pvc-1/namespaces/1/enable")),
            "1"
        );

        // Resize: the target refuses the new size, so the file shrinks back.
        let ns = f.cfs.join("subsystems/nqn.x:pvc-1/namespaces/1");
        fs::remove_file(ns.join("revalidate_size")).unwrap();
        fs::create_dir(ns.join("revalidate_size")).unwrap();
        let r = run(&f.engine, "/disk set pvc-1 file-size=3G");
        assert!(r.stdout.starts_with("failure: could not resize"), "{r:?}");
        assert_eq!(f.engine.lock().disks[0].size, 1 << 30);
        assert_eq!(
            fs::metadata(f.data.join("m/pvc-1.img")).unwrap().len(),
            1 << 30
        );
    }

    #[test]
    fn a_second_disk_with_the_same_nqn_is_refused() {
        let f = fixture();
        assert_eq!(run(&f.engine, ADD).stdout, "");
        let r = run(
            &f.engine,
            "/disk add type=file file-path=/storage-pool/m/pvc-2.img file-size=1G slot=pvc-2 nvme-tcp-export=yes nvme-tcp-server-nqn=nqn.x:pvc-1",
        );
        assert!(r.stdout.starts_with("failure: "), "{r:?}");
        assert_eq!(f.engine.lock().disks.len(), 1);
        assert!(!f.data.join("m/pvc-2.img").exists());
    }

    #[test]
    fn port_down_and_up_keep_the_disks() {
        let f = fixture();
        assert_eq!(run(&f.engine, ADD).stdout, "");
        assert_eq!(f.engine.nvmet_port_down(4420).unwrap(), 1);
        assert_eq!(entries(&f.cfs.join("ports")), 0);
        f.engine.nvmet_port_up(4420).unwrap();
        assert!(f.cfs.join("ports/1/subsystems/nqn.x:pvc-1").exists());
        f.engine.unexport_all();
        assert_eq!(entries(&f.cfs.join("subsystems")), 0);
        assert_eq!(entries(&f.cfs.join("ports")), 0);
    }
}

/// Whatever arrives over SSH, the simulator answers with text and never panics.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn engine_with_a_disk() -> Engine {
        let e = Engine::new(Store::Memory, "storage-pool".into(), 100 << 30, None).unwrap();
        let r = e.execute(
            "/disk add type=file file-path=/storage-pool/m/a.img file-size=1G slot=a nvme-tcp-export=yes",
            &Faults::default(),
        );
        assert_eq!(r.stdout, "");
        e
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "/disk",
                "/file",
                "/interface",
                "nvme-tcp",
                "connection",
                "add",
                "set",
                "remove",
                "print",
                "detail",
                "count-only",
                "monitor-traffic",
                "once",
                "where",
                "and",
                "find",
                "[",
                "]",
                "[find",
                "[find slot=a]",
                "\"",
                "\\",
                "=",
                "~",
                "!=",
                "!",
                ";",
                "/",
                "type=file",
                "file-path=/storage-pool/m/b.img",
                "file-path=/storage-pool/m/a.img",
                "file-size=",
                "file-size=2G",
                "file-size=0",
                "slot=a",
                "slot=b",
                "slot~\"^a\"",
                "slot~\"(\"",
                "copy-from=[find slot=a]",
                "copy-from=a",
                "numbers=a",
                "name=\"storage-pool/m\"",
                "nvme-tcp-export=yes",
                "nvme-tcp-server-port=99999",
                "mount-point=storage-pool",
                "\"storage-pool/m/a.img\"",
                "\\41",
                "\u{e9}",
            ])
            .prop_map(str::to_string),
            "[ -~]{0,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(line in any::<String>()) {
            let e = engine_with_a_disk();
            let reply = e.execute(&line, &Faults::default());
            prop_assert!(reply.status <= 1);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let e = engine_with_a_disk();
            let line = String::from_utf8_lossy(&bytes);
            e.execute(&line, &Faults::default());
        }

        #[test]
        fn command_shaped_input_never_panics(
            parts in prop::collection::vec(fragment(), 0..14),
            glue in prop::collection::vec(prop::sample::select(vec!["", " ", "  "]), 14),
        ) {
            let e = engine_with_a_disk();
            let mut line = String::new();
            for (part, sep) in parts.iter().zip(glue.iter()) {
                line.push_str(part);
                line.push_str(sep);
            }
            let reply = e.execute(&line, &Faults::default());
            // Every refusal names itself, so a client can classify it.
            if reply.status == 1 {
                prop_assert!(!reply.stderr.is_empty());
            }
            if reply.stdout.starts_with("failure") {
                prop_assert!(reply.stdout.ends_with("\r\n"));
            }
            // And the state stays consistent: every disk has its file.
            let state = e.lock();
            for d in &state.disks {
                prop_assert!(state.files.contains_key(d.file_name()));
            }
        }
    }
}
