//! How the simulated state is printed: the `/disk` and `/file` items as
//! records in RouterOS's print order, `print` with its filters and
//! `count-only`, and `monitor-traffic once`. The characters themselves
//! (digit groups, quoting, wrapping) are `crate::format`'s job.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::select::{resolve_disks, Item, Matcher, DISK_KEYS, FILE_KEYS};
use super::{Disk, Reply, State};
use crate::cli::{Print, Target};
use crate::format::{self, FieldValue, Record, EOL};

fn yes_no(b: bool) -> FieldValue {
    FieldValue::Bare(if b { "yes" } else { "no" }.to_string())
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
            ("fs", FieldValue::Bare(state.pool_fs.as_str().into())),
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
    if let Some(c) = &disk.copy {
        fields.push((
            "status",
            FieldValue::Quoted(super::snapshots::copy_status(c)),
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
pub(super) fn disk_records(state: &State) -> Vec<(Item, Record)> {
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

/// A `/file` item: no flags, no comment.
fn file_record(fields: Vec<(&'static str, FieldValue)>) -> Record {
    Record {
        flags: "",
        comment: None,
        fields,
    }
}

/// All `/file` items sorted by name: the pool's mount point shows up as a
/// `disk`, directories without a size.
pub(super) fn file_records(state: &State) -> Vec<(Item, Record)> {
    let mut entries: BTreeMap<&str, (Item, Record)> = BTreeMap::new();
    let now = SystemTime::now();
    entries.insert(
        &state.pool,
        (
            Item::Root,
            file_record(vec![
                ("name", FieldValue::Bare(state.pool.clone())),
                ("type", FieldValue::Bare("disk".into())),
                ("last-modified", FieldValue::Time(now)),
            ]),
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
                file_record(vec![
                    ("name", FieldValue::Bare(dir.clone())),
                    ("type", FieldValue::Bare("directory".into())),
                    ("last-modified", FieldValue::Time(modified)),
                ]),
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
                file_record(vec![
                    ("name", FieldValue::Bare(name.clone())),
                    ("type", FieldValue::Bare(kind)),
                    ("size", FieldValue::Size(file.size)),
                    ("last-modified", FieldValue::Time(file.modified)),
                ]),
            ),
        );
    }
    entries.into_values().collect()
}
pub(super) fn print_records(
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

pub(super) fn print_disks(state: &State, print: &Print) -> Result<Reply, Reply> {
    print_records(
        disk_records(state),
        print,
        DISK_KEYS,
        "Flags: X - disabled, R - running \r\n",
    )
}

pub(super) fn print_files(state: &State, print: &Print) -> Result<Reply, Reply> {
    print_records(file_records(state), print, FILE_KEYS, "")
}

pub(super) fn monitor(state: &State, target: Option<Target>, once: bool) -> Result<Reply, Reply> {
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
