//! Which hosts may connect to a disk's NVMe/TCP export, and cutting the
//! sessions of hosts that no longer may: the RDS side of fencing.
//!
//! A disk's `nvme-tcp-server-allow-host-name` holds the allow-list. What
//! the driver assumes about it (none of it checked on hardware yet; the
//! simulator enforces exactly this, see `docs/routeros.md`): the value is a
//! comma-separated list of host NQNs; empty means any host may connect; a
//! change only affects new connections, live sessions stay; and turning
//! `nvme-tcp-export` off and on again drops every live session of the disk.
//!
//! Empty meaning "any host" leaves no way to say "no host", which is what a
//! volume released by its last holder needs: [`NO_HOST_NQN`], a host NQN no
//! machine uses, stands for "nobody" on the list and is never shown as a
//! host.

use std::collections::BTreeSet;

use crate::command::{Command, Nqn, Slot};
use crate::error::{Error, Result, ValidationError};
use crate::rds::{Disk, Rds};

/// The allow-list entry that admits no real host: a disk whose list holds
/// only this refuses every connection.
pub const NO_HOST_NQN: &str = "nqn.2026-12.io.srvlab.csi.rds:no-host";

/// The well-known discovery NQN: a target's, never a host's identity.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// The RouterOS property holding a disk's allow-list.
pub const ALLOW_HOST_PROPERTY: &str = "nvme-tcp-server-allow-host-name";

storage::text!(HostNqn);

/// A host (initiator) NQN that may go on an allow-list: `nqn.` then
/// letters, digits, `-`, `_`, `.` and `:` (so never a comma, quote or
/// space), at most 223 bytes, and neither the discovery NQN nor
/// [`NO_HOST_NQN`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostNqn(String);

impl HostNqn {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let nqn = Nqn::new(s).map_err(|e| ValidationError::new("host nqn", s, e.reason))?;
        if nqn.as_str() == DISCOVERY_NQN {
            return Err(ValidationError::new(
                "host nqn",
                s,
                "the discovery NQN is not a host identity",
            ));
        }
        if nqn.as_str() == NO_HOST_NQN {
            return Err(ValidationError::new(
                "host nqn",
                s,
                "reserved by the driver for \"no host\"",
            ));
        }
        Ok(HostNqn(s.to_string()))
    }
}

/// Who may connect to a disk's export, as its allow-list says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAccess {
    /// The list is empty: RouterOS's default, and every disk made before
    /// fencing was turned on.
    Any,
    /// Only these host NQNs, as printed (an entry set by hand need not be a
    /// valid [`HostNqn`]); empty: no host at all.
    Only(BTreeSet<String>),
}

impl HostAccess {
    /// Reads the property's value. Total: any text gives an answer.
    /// Entries are split at commas and trimmed; empty entries and
    /// [`NO_HOST_NQN`] are not hosts.
    pub fn parse(value: &str) -> HostAccess {
        let entries: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return HostAccess::Any;
        }
        HostAccess::Only(
            entries
                .into_iter()
                .filter(|e| *e != NO_HOST_NQN)
                .map(str::to_string)
                .collect(),
        )
    }

    /// Whether `host` may open a new connection.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            HostAccess::Any => true,
            HostAccess::Only(hosts) => hosts.contains(host),
        }
    }
}

/// The property's value for exactly `hosts` (`None`: any host): sorted,
/// without duplicates, joined by commas; no host at all is [`NO_HOST_NQN`].
pub fn encode_allowed_hosts(hosts: Option<&[HostNqn]>) -> String {
    let Some(hosts) = hosts else {
        return String::new();
    };
    let set: BTreeSet<&str> = hosts.iter().map(HostNqn::as_str).collect();
    if set.is_empty() {
        return NO_HOST_NQN.to_string();
    }
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// The list as typed host NQNs, refusing an entry that is not one (set by
/// hand): the driver does not rewrite what it cannot read back.
fn typed(slot: &Slot, hosts: &BTreeSet<String>) -> Result<Vec<HostNqn>> {
    hosts
        .iter()
        .map(|h| {
            HostNqn::new(h).map_err(|e| {
                Error::Failed(format!(
                    "disk {slot}'s {ALLOW_HOST_PROPERTY} holds an entry the driver cannot rewrite: {e}"
                ))
            })
        })
        .collect()
}

impl Rds {
    async fn existing_disk(&self, slot: &Slot) -> Result<Disk> {
        self.get_disk(slot)
            .await?
            .ok_or_else(|| Error::NotFound(format!("disk {slot}")))
    }

    /// Who may connect to the disk's export. An absent disk is
    /// [`Error::NotFound`]; a disk whose record does not show the
    /// allow-list (not exported, or a RouterOS without the property) is
    /// [`Error::Failed`], never "any host".
    pub async fn allowed_hosts(&self, slot: &Slot) -> Result<HostAccess> {
        let disk = self.existing_disk(slot).await?;
        shown_access(&disk)
    }

    /// Sets the allow-list to exactly `hosts`; an empty slice admits no
    /// host. Only new connections are affected (assumed, see the module
    /// documentation): cut the sessions of a removed host with
    /// [`Rds::cut_sessions`]. One lookup, then one `/disk set` unless the
    /// list already says this; an absent disk is [`Error::NotFound`].
    pub async fn set_allowed_hosts(&self, slot: &Slot, hosts: &[HostNqn]) -> Result<()> {
        self.set_access(slot, Some(hosts)).await
    }

    /// Empties the allow-list: any host may connect again (fencing turned
    /// off for this disk).
    pub async fn allow_any_host(&self, slot: &Slot) -> Result<()> {
        self.set_access(slot, None).await
    }

    async fn set_access(&self, slot: &Slot, hosts: Option<&[HostNqn]>) -> Result<()> {
        let disk = self.existing_disk(slot).await?;
        let value = encode_allowed_hosts(hosts);
        let wanted = HostAccess::parse(&value);
        if disk.allowed_hosts.as_ref() == Some(&wanted) {
            return Ok(());
        }
        self.act(Command::DiskSetAllowedHosts {
            slot: slot.clone(),
            hosts: hosts.map(<[HostNqn]>::to_vec),
        })
        .await
    }

    /// Adds `host` to the allow-list (read, modify, write) and returns the
    /// access now in force. A disk open to any host is narrowed to `host`
    /// alone: once the driver fences a disk, only the hosts it published
    /// to may connect. Already allowed: no write.
    ///
    /// The caller holds the volume's lock: two of these at once on one disk
    /// could each write a list without the other's host.
    pub async fn allow_host(&self, slot: &Slot, host: &HostNqn) -> Result<HostAccess> {
        self.modify_hosts(slot, |hosts| {
            hosts.insert(host.as_str().to_string());
        })
        .await
    }

    /// Removes `host` from the allow-list (read, modify, write) and returns
    /// the access now in force. Afterwards `host` cannot open a new
    /// connection: removing the last host leaves a list admitting no host,
    /// and a disk open to any host becomes open to none. Its live sessions
    /// stay until [`Rds::cut_sessions`]. Not on the list: no write.
    ///
    /// The caller holds the volume's lock (see [`Rds::allow_host`]).
    pub async fn disallow_host(&self, slot: &Slot, host: &HostNqn) -> Result<HostAccess> {
        self.modify_hosts(slot, |hosts| {
            hosts.remove(host.as_str());
        })
        .await
    }

    async fn modify_hosts(
        &self,
        slot: &Slot,
        change: impl FnOnce(&mut BTreeSet<String>),
    ) -> Result<HostAccess> {
        let disk = self.existing_disk(slot).await?;
        let before = shown_access(&disk)?;
        let mut hosts = match &before {
            HostAccess::Any => BTreeSet::new(),
            HostAccess::Only(hosts) => hosts.clone(),
        };
        change(&mut hosts);
        let write = typed(slot, &hosts);
        let after = HostAccess::Only(hosts);
        if after != before {
            self.act(Command::DiskSetAllowedHosts {
                slot: slot.clone(),
                hosts: Some(write?),
            })
            .await?;
        }
        Ok(after)
    }

    /// Drops every live NVMe/TCP session of the disk by turning its export
    /// off and on again (two commands; the allow-list and NQN stay, so the
    /// hosts still allowed reconnect on their own and the others are
    /// refused). Idempotent: a retry after the export was turned off only
    /// turns it back on, and the disk always ends exported.
    ///
    /// Every host's I/O to this disk pauses until it reconnects; see
    /// `docs/routeros.md`. Snapshots and disks that were never exported are
    /// refused.
    pub async fn cut_sessions(&self, slot: &Slot) -> Result<()> {
        let disk = self.existing_disk(slot).await?;
        if disk.is_snapshot() {
            return Err(Error::Failed(format!(
                "disk {slot} is a snapshot: it has no sessions to cut"
            )));
        }
        if !disk.exported && disk.nqn.is_none() {
            return Err(Error::Failed(format!(
                "disk {slot} has no NVMe/TCP export whose sessions could be cut"
            )));
        }
        if disk.exported {
            self.act(Command::DiskSetExport {
                slot: slot.clone(),
                export: false,
            })
            .await?;
        }
        self.act(Command::DiskSetExport {
            slot: slot.clone(),
            export: true,
        })
        .await
    }
}

/// The access a disk's record shows, or why it shows none.
fn shown_access(disk: &Disk) -> Result<HostAccess> {
    match (&disk.allowed_hosts, disk.exported) {
        (Some(access), _) => Ok(access.clone()),
        (None, false) => Err(Error::Failed(format!(
            "disk {} is not exported, so the RDS does not show its {ALLOW_HOST_PROPERTY} \
             (a session cut interrupted between its two steps is finished by running it again)",
            disk.slot
        ))),
        (None, true) => Err(Error::Failed(format!(
            "the RDS does not show {ALLOW_HOST_PROPERTY} for disk {}: this RouterOS may not \
             support per-disk host allow-lists",
            disk.slot
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002";

    fn host(s: &str) -> HostNqn {
        HostNqn::new(s).unwrap()
    }

    fn only(hosts: &[&str]) -> HostAccess {
        HostAccess::Only(hosts.iter().map(|h| h.to_string()).collect())
    }

    #[test]
    fn host_nqns_that_could_break_the_list_or_a_command_are_refused() {
        for bad in [
            "",
            "iqn.2000-01.com.example:x",
            &format!("{A},{B}"),
            &format!("{A} "),
            "nqn.x\"y",
            "nqn.x;/system reboot",
            "nqn.x]",
            "nqn.x$y",
            "nqn.x\ny",
            DISCOVERY_NQN,
            NO_HOST_NQN,
            &format!("nqn.{}", "a".repeat(220)),
        ] {
            assert!(HostNqn::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(host(A).as_str(), A);
    }

    #[test]
    fn an_empty_value_allows_any_host_and_a_list_only_its_hosts() {
        assert_eq!(HostAccess::parse(""), HostAccess::Any);
        assert_eq!(HostAccess::parse(" , "), HostAccess::Any);
        let access = HostAccess::parse(&format!("{A}, {B},{A}"));
        assert_eq!(access, only(&[A, B]));
        assert!(access.allows(A) && access.allows(B));
        assert!(!access.allows("nqn.2014-08.org.nvmexpress:uuid:other"));
        assert!(HostAccess::Any.allows(A));
    }

    #[test]
    fn no_host_is_written_as_the_placeholder_and_read_back_as_nobody() {
        assert_eq!(encode_allowed_hosts(Some(&[])), NO_HOST_NQN);
        let nobody = HostAccess::parse(NO_HOST_NQN);
        assert_eq!(nobody, only(&[]));
        assert!(!nobody.allows(A));
        assert!(!nobody.allows(NO_HOST_NQN), "the placeholder is no host");
        assert_eq!(encode_allowed_hosts(None), "");
        assert_eq!(
            encode_allowed_hosts(Some(&[host(B), host(A), host(B)])),
            format!("{A},{B}")
        );
    }

    #[test]
    fn setting_the_list_renders_one_quoted_disk_set() {
        let slot = Slot::new("pvc-1").unwrap();
        let set = |hosts| {
            Command::DiskSetAllowedHosts {
                slot: slot.clone(),
                hosts,
            }
            .render()
        };
        assert_eq!(
            set(Some(vec![host(B), host(A)])),
            format!("/disk set [find slot=\"pvc-1\"] {ALLOW_HOST_PROPERTY}=\"{A},{B}\"")
        );
        assert_eq!(
            set(None),
            format!("/disk set [find slot=\"pvc-1\"] {ALLOW_HOST_PROPERTY}=\"\"")
        );
        assert_eq!(
            Command::DiskSetExport {
                slot: slot.clone(),
                export: false
            }
            .render(),
            "/disk set [find slot=\"pvc-1\"] nvme-tcp-export=no"
        );
    }

    #[test]
    fn a_list_entry_set_by_hand_that_is_no_host_nqn_is_not_rewritten() {
        let slot = Slot::new("pvc-1").unwrap();
        let by_hand: BTreeSet<String> = [A.to_string(), DISCOVERY_NQN.to_string()].into();
        let err = typed(&slot, &by_hand).unwrap_err();
        assert!(err.to_string().contains("cannot rewrite"), "{err}");
        let fine: BTreeSet<String> = [A.to_string(), B.to_string()].into();
        assert_eq!(typed(&slot, &fine).unwrap(), [host(A), host(B)]);
    }

    fn host_nqn() -> impl Strategy<Value = HostNqn> {
        "nqn\\.[0-9]{4}-[0-9]{2}\\.[a-z.]{1,20}:[A-Za-z0-9:._-]{1,60}"
            .prop_filter_map("valid host NQN", |s| HostNqn::new(&s).ok())
    }

    proptest! {
        #[test]
        fn parsing_any_value_never_panics(s in any::<String>()) {
            let _ = HostAccess::parse(&s);
        }

        #[test]
        fn any_list_of_hosts_reads_back_as_the_same_hosts(
            hosts in proptest::collection::vec(host_nqn(), 0..6)
        ) {
            let value = encode_allowed_hosts(Some(&hosts));
            let want: BTreeSet<String> = hosts.iter().map(|h| h.to_string()).collect();
            prop_assert_eq!(HostAccess::parse(&value), HostAccess::Only(want));
            prop_assert!(!value.contains([' ', '"', ';', '[', ']', '$', '\\']));
        }

        #[test]
        fn every_accepted_host_nqn_is_one_list_entry(s in any::<String>()) {
            if let Ok(h) = HostNqn::new(&s) {
                prop_assert_eq!(
                    HostAccess::parse(h.as_str()),
                    HostAccess::Only([s].into_iter().collect())
                );
            }
        }
    }
}
