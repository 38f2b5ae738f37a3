//! What a command's arguments and filters mean: the property names a
//! `where` or `[find ...]` may test, how a test matches a printed record,
//! which items a target names, and typed access to `key=value` arguments.

use regex::{Regex, RegexBuilder};

use super::{render, Reply, State};
use crate::cli::{Arg, Cond, Op, SyntaxError, Target, Value};
use crate::format::{FieldValue, Record};

/// Property names a `where` on `/disk` may use. Records that lack one simply
/// do not match; a name outside this list is a typo and gets an error.
pub(super) const DISK_KEYS: &[&str] = &[
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
    "status",
];

pub(super) const FILE_KEYS: &[&str] = &["name", "type", "size", "last-modified"];

pub(super) const CONNECTION_KEYS: &[&str] = &["remote-address", "state", "nqn", "port"];

/// Which item of the printed list a record stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    Pool,
    Disk(usize),
    File(String),
    Dir(String),
    Root,
    Subvolume(usize),
}

pub(super) struct Matcher {
    key: String,
    test: Test,
}

enum Test {
    Eq(String),
    NotEq(String),
    Match(Regex),
}

impl Matcher {
    pub(super) fn compile(conds: &[Cond], keys: &[&str]) -> Result<Vec<Matcher>, Reply> {
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

    pub(super) fn all(matchers: &[Matcher], record: &Record) -> bool {
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

pub(super) fn parse_size(text: &str) -> Option<u64> {
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

/// Arguments `/disk set` takes; `/disk add` takes them too.
pub(super) const SET_ARGS: &[&str] = &[
    "file-size",
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-nqn",
    "nvme-tcp-server-allow-host-name",
    "comment",
];

/// Arguments only `/disk add` takes.
pub(super) const ADD_ONLY_ARGS: &[&str] = &["type", "file-path", "slot", "copy-from"];

/// What `/disk add` and `/disk set` may say about a disk; `None` where the
/// command does not say.
pub(super) struct DiskSettings<'a> {
    pub comment: Option<&'a str>,
    pub size: Option<u64>,
    pub export: Option<bool>,
    pub port: Option<u16>,
    pub nqn: Option<&'a str>,
    pub allow_host: Option<&'a str>,
}

/// Typed access to `key=value` arguments after checking no unknown key slipped in.
pub(super) struct Args<'a> {
    args: &'a [Arg],
}

impl<'a> Args<'a> {
    /// `allowed`: the lists of keys the command takes.
    pub(super) fn new(args: &'a [Arg], allowed: &[&[&str]]) -> Result<Args<'a>, Reply> {
        let known = |key: &str| allowed.iter().any(|list| list.contains(&key));
        if let Some(bad) = args.iter().find(|a| !known(&a.key)) {
            return Err(Reply::invalid_parameter(&format!(
                "unknown argument {}",
                bad.key
            )));
        }
        Ok(Args { args })
    }

    /// The last occurrence wins, as when RouterOS is given a key twice.
    pub(super) fn value(&self, key: &str) -> Option<&'a Value> {
        self.args
            .iter()
            .rev()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    pub(super) fn text(&self, key: &str) -> Result<Option<&'a str>, Reply> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(Value::Find(_)) => Err(Reply::invalid_value(key)),
        }
    }

    pub(super) fn size(&self, key: &str) -> Result<Option<u64>, Reply> {
        match self.text(key)? {
            None => Ok(None),
            Some(t) => match parse_size(t) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Reply::invalid_value(key)),
            },
        }
    }

    pub(super) fn flag(&self, key: &str) -> Result<Option<bool>, Reply> {
        match self.text(key)? {
            None => Ok(None),
            Some(t) => parse_bool(t)
                .map(Some)
                .ok_or_else(|| Reply::invalid_value(key)),
        }
    }

    /// The [`SET_ARGS`], checked in that order.
    pub(super) fn disk_settings(&self) -> Result<DiskSettings<'a>, Reply> {
        Ok(DiskSettings {
            comment: self.text("comment")?,
            size: self.size("file-size")?,
            export: self.flag("nvme-tcp-export")?,
            port: self.port("nvme-tcp-server-port")?,
            nqn: self.text("nvme-tcp-server-nqn")?,
            allow_host: self.host_list("nvme-tcp-server-allow-host-name")?,
        })
    }

    /// A comma-separated list of host NQNs, or empty for any host. Each
    /// entry is `nqn.` then letters, digits, `-`, `_`, `.` or `:`, at most
    /// 223 bytes; anything else (spaces, quotes, an empty entry) is refused
    /// as RouterOS refuses a value it cannot take.
    pub(super) fn host_list(&self, key: &str) -> Result<Option<&'a str>, Reply> {
        let Some(value) = self.text(key)? else {
            return Ok(None);
        };
        let host_ok = |h: &str| {
            h.starts_with("nqn.")
                && h.len() <= 223
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        };
        if value.is_empty() || value.split(',').all(host_ok) {
            Ok(Some(value))
        } else {
            Err(Reply::invalid_value(key))
        }
    }

    pub(super) fn port(&self, key: &str) -> Result<Option<u16>, Reply> {
        match self.text(key)? {
            None => Ok(None),
            Some(t) => match t.parse::<u16>() {
                Ok(p) if p > 0 => Ok(Some(p)),
                _ => Err(Reply::invalid_value(key)),
            },
        }
    }
}
/// Items a target names. `[find ...]` may match nothing; a name given
/// directly must exist, and a bare number (which RouterOS takes from the
/// previous `print` of the same console) never does here.
pub(super) fn resolve(
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

pub(super) fn resolve_disks(state: &State, target: &Target) -> Result<Vec<Item>, Reply> {
    resolve(
        &render::disk_records(state),
        target,
        DISK_KEYS,
        |_, name| {
            if name == state.pool {
                Some(Item::Pool)
            } else {
                state
                    .disks
                    .iter()
                    .position(|d| d.slot == name)
                    .map(Item::Disk)
            }
        },
    )
}
