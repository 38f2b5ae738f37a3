//! The three ways RouterOS can copy a disk, as the simulator models them:
//!
//! - Btrfs subvolumes (`/disk/btrfs/subvolume add|print|remove`): a
//!   subvolume is a directory `<pool>/<name>` of its own; a snapshot of one
//!   (`parent=`) gets a copy of every file in it at once (a reflink where
//!   the host file system can, so the data is kept and shared), read-only
//!   when asked. Files inside a read-only subvolume cannot be changed or
//!   removed; the whole subvolume can be removed once no disk uses a file
//!   in it. Only a Btrfs pool has subvolumes.
//! - `/disk add copy-from=` (in the engine's `disk_add`): a new disk whose
//!   file holds the source's data when the command returns.
//! - `/disk copy src= dst=`: a byte copy between two existing disks that
//!   runs in the background. While it runs, the destination disk prints a
//!   `status` of `<copied> / <total> (<percent>%)`; progress advances at the
//!   configured copy rate, and the data lands when the copy completes (so a
//!   copy of a disk in use is not a point-in-time copy, as on RouterOS).

use std::time::{Instant, SystemTime};

use super::select::{resolve, Args, Item};
use super::{Engine, Reply, State};
use crate::cli::{Arg, Print, Target};
use crate::format::{self, FieldValue, Record};
use crate::PoolFs;

/// Property names a `where` on `/disk/btrfs/subvolume` may use.
pub(super) const SUBVOLUME_KEYS: &[&str] = &["fs", "name", "parent", "read-only"];

/// A Btrfs subvolume of the pool: the directory `<pool>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subvolume {
    pub name: String,
    /// The subvolume this one is a snapshot of (empty: a plain subvolume).
    pub parent: String,
    pub read_only: bool,
}

/// A running `/disk copy` into a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCopy {
    /// Slot of the disk being copied from.
    pub source: String,
    /// Bytes to copy: the source's size when the copy started.
    pub total: u64,
    /// Bytes copied so far.
    pub copied: u64,
    /// When `copied` was last brought up to date.
    pub(crate) as_of: Instant,
}

impl State {
    fn subvolume_dir(&self, name: &str) -> String {
        format!("{}/{name}", self.pool)
    }

    /// The read-only subvolume a pool file name lies in, if any.
    pub(super) fn read_only_subvolume_of(&self, file: &str) -> Option<&Subvolume> {
        self.subvolumes
            .iter()
            .find(|s| s.read_only && file.starts_with(&format!("{}/", self.subvolume_dir(&s.name))))
    }

    /// Whether the pool directory `dir` is a subvolume's.
    pub(super) fn is_subvolume_dir(&self, dir: &str) -> bool {
        self.subvolumes
            .iter()
            .any(|s| self.subvolume_dir(&s.name) == dir)
    }
}

fn subvolume_record(pool: &str, s: &Subvolume) -> Record {
    Record {
        flags: if s.read_only { "R" } else { "" },
        comment: None,
        fields: vec![
            ("fs", FieldValue::Quoted(pool.to_string())),
            ("name", FieldValue::Quoted(s.name.clone())),
            ("parent", FieldValue::Quoted(s.parent.clone())),
            (
                "read-only",
                FieldValue::Bare(if s.read_only { "yes" } else { "no" }.into()),
            ),
        ],
    }
}

fn subvolume_records(state: &State) -> Vec<(Item, Record)> {
    state
        .subvolumes
        .iter()
        .enumerate()
        .map(|(i, s)| (Item::Subvolume(i), subvolume_record(&state.pool, s)))
        .collect()
}

/// `status` of a disk a copy is running into, digits grouped as RouterOS
/// prints sizes.
pub(super) fn copy_status(c: &DiskCopy) -> String {
    format!(
        "{} / {} ({}%)",
        format::group_digits(c.copied),
        format::group_digits(c.total),
        format::percent(c.copied, c.total)
    )
}

pub(super) fn print_subvolumes(state: &State, print: &Print) -> Result<Reply, Reply> {
    super::render::print_records(
        subvolume_records(state),
        print,
        SUBVOLUME_KEYS,
        "Flags: R - read-only \r\n",
    )
}

/// A subvolume name is one path component RouterOS would accept as a file
/// name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(|c| c.is_control())
}

impl Engine {
    pub(super) fn subvolume_add(&self, state: &mut State, args: &[Arg]) -> Result<Reply, Reply> {
        let a = Args::new(args, &[&["fs", "name", "parent", "read-only"]])?;
        let fs = a
            .text("fs")?
            .ok_or_else(|| Reply::invalid_parameter("fs is required"))?;
        if state.pool_fs != PoolFs::Btrfs || fs != state.pool {
            return Err(Reply::failure("no such item"));
        }
        let name = a
            .text("name")?
            .ok_or_else(|| Reply::invalid_parameter("name is required"))?;
        if !valid_name(name) {
            return Err(Reply::invalid_value("name"));
        }
        let read_only = a.flag("read-only")?.unwrap_or(false);
        let parent = a.text("parent")?.unwrap_or("");
        if state.subvolumes.iter().any(|s| s.name == name) {
            return Err(Reply::failure("subvolume already exists"));
        }
        let dir = state.subvolume_dir(name);
        if state.dirs.contains(&dir) || state.files.contains_key(&dir) {
            return Err(Reply::failure("file already exists"));
        }
        let pool = state.pool.clone();
        let mut copies = Vec::new();
        if !parent.is_empty() {
            if !state.subvolumes.iter().any(|s| s.name == parent) {
                return Err(Reply::failure("no such item"));
            }
            let from = format!("{}/", state.subvolume_dir(parent));
            let mut needed = 0u64;
            for (file, entry) in state.files.range(from.clone()..) {
                let Some(rest) = file.strip_prefix(&from) else {
                    break;
                };
                copies.push((file.clone(), format!("{dir}/{rest}"), entry.size));
                needed = needed.saturating_add(entry.size);
            }
            if needed > state.free() {
                return Err(Reply::failure("not enough space"));
            }
        }
        self.store
            .create_dir(&pool, &dir)
            .map_err(|e| Reply::failure(&format!("could not create subvolume: {e}")))?;
        for (i, (from, to, size)) in copies.iter().enumerate() {
            if let Err(e) = self.store.copy(&pool, from, to, *size) {
                for (_, done, _) in &copies[..i] {
                    let _ = self.store.remove_file(&pool, done);
                }
                let _ = self.store.remove_dir(&pool, &dir);
                return Err(Reply::failure(&format!("could not snapshot: {e}")));
            }
        }
        let now = SystemTime::now();
        state.add_dirs_for(&format!("{dir}/x"));
        for (_, to, size) in copies {
            state.add_dirs_for(&to);
            state.files.insert(
                to,
                super::FileEntry {
                    size,
                    modified: now,
                },
            );
        }
        state.subvolumes.push(Subvolume {
            name: name.to_string(),
            parent: parent.to_string(),
            read_only,
        });
        Ok(Reply::ok(String::new()))
    }

    pub(super) fn subvolume_remove(
        &self,
        state: &mut State,
        target: Option<Target>,
    ) -> Result<Reply, Reply> {
        let target = target.ok_or_else(|| Reply::invalid_parameter("numbers is required"))?;
        let records = subvolume_records(state);
        let items = resolve(&records, &target, SUBVOLUME_KEYS, |_, name| {
            state
                .subvolumes
                .iter()
                .position(|s| s.name == name)
                .map(Item::Subvolume)
        })?;
        let indexes: Vec<usize> = items
            .iter()
            .filter_map(|i| match i {
                Item::Subvolume(i) => Some(*i),
                _ => None,
            })
            .collect();
        for &i in &indexes {
            let prefix = format!("{}/", state.subvolume_dir(&state.subvolumes[i].name));
            if state
                .disks
                .iter()
                .any(|d| d.file_name().starts_with(&prefix))
            {
                return Err(Reply::failure("subvolume is in use"));
            }
        }
        let pool = state.pool.clone();
        for &i in &indexes {
            let dir = state.subvolume_dir(&state.subvolumes[i].name);
            let prefix = format!("{dir}/");
            let files: Vec<String> = state
                .files
                .keys()
                .filter(|f| f.starts_with(&prefix))
                .cloned()
                .collect();
            for f in files {
                self.store
                    .remove_file(&pool, &f)
                    .map_err(|e| Reply::failure(&format!("could not remove subvolume: {e}")))?;
                state.files.remove(&f);
            }
            let mut dirs: Vec<String> = state
                .dirs
                .iter()
                .filter(|d| d.starts_with(&prefix) || **d == dir)
                .cloned()
                .collect();
            dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
            for d in dirs {
                self.store
                    .remove_dir(&pool, &d)
                    .map_err(|e| Reply::failure(&format!("could not remove subvolume: {e}")))?;
                state.dirs.remove(&d);
            }
        }
        let mut index = 0;
        state.subvolumes.retain(|_| {
            let keep = !indexes.contains(&index);
            index += 1;
            keep
        });
        Ok(Reply::ok(String::new()))
    }

    /// `/disk copy src=<disk> dst=<disk>`: starts a background byte copy.
    pub(super) fn disk_copy(&self, state: &mut State, args: &[Arg]) -> Result<Reply, Reply> {
        let a = Args::new(args, &[&["src", "dst"]])?;
        let one = |key: &str| -> Result<usize, Reply> {
            let target = match a.value(key) {
                None => return Err(Reply::invalid_parameter(&format!("{key} is required"))),
                Some(crate::cli::Value::Text(name)) => Target::Items(vec![name.clone()]),
                Some(crate::cli::Value::Find(conds)) => Target::Find(conds.clone()),
            };
            match super::select::resolve_disks(state, &target)?.as_slice() {
                [Item::Disk(i)] => Ok(*i),
                [] => Err(Reply::failure("no such item")),
                [_] => Err(Reply::failure("can not copy this disk")),
                _ => Err(Reply::failure(&format!("{key} matches more than one disk"))),
            }
        };
        let (src, dst) = (one("src")?, one("dst")?);
        if src == dst {
            return Err(Reply::failure("source and destination are the same disk"));
        }
        if state.disks[dst].size < state.disks[src].size {
            return Err(Reply::failure("destination is smaller than source"));
        }
        if state.disks[dst].copy.is_some() {
            return Err(Reply::failure("copy already in progress"));
        }
        if state
            .read_only_subvolume_of(state.disks[dst].file_name())
            .is_some()
        {
            return Err(Reply::failure("read-only file system"));
        }
        let total = state.disks[src].size;
        state.disks[dst].copy = Some(DiskCopy {
            source: state.disks[src].slot.clone(),
            total,
            copied: 0,
            as_of: Instant::now(),
        });
        Ok(Reply::ok(String::new()))
    }

    /// Advances every running copy to now; a copy that is done writes its
    /// data and stops showing a status.
    pub(super) fn settle_copies(&self, state: &mut State) {
        let rate = state.copy_rate.max(1);
        let pool = state.pool.clone();
        for i in 0..state.disks.len() {
            let Some(c) = &mut state.disks[i].copy else {
                continue;
            };
            let now = Instant::now();
            let step = (now.duration_since(c.as_of).as_secs_f64() * rate as f64) as u64;
            c.copied = c.copied.saturating_add(step).min(c.total);
            c.as_of = now;
            if c.copied < c.total {
                continue;
            }
            let source = c.source.clone();
            let from = state
                .disks
                .iter()
                .find(|d| d.slot == source)
                .map(|d| d.file_name().to_string());
            let to = state.disks[i].file_name().to_string();
            let size = state.disks[i].size;
            if let Some(from) = from {
                if let Err(e) = self.store.overwrite(&pool, &from, &to, size) {
                    tracing::warn!(error = %e, "rds-sim: a disk copy could not write its data");
                }
            }
            state.disks[i].copy = None;
            if let Some(f) = state.files.get_mut(&to) {
                f.modified = SystemTime::now();
            }
        }
    }
}
