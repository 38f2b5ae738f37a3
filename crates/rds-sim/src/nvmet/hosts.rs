//! Which hosts the kernel target lets connect to an export: the mirror of a
//! disk's `nvme-tcp-server-allow-host-name`.
//!
//! An empty list is `attr_allow_any_host = 1`. A list is
//! `attr_allow_any_host = 0` plus, per host, a group `hosts/<host nqn>`
//! linked as `subsystems/<nqn>/allowed_hosts/<host nqn>`. The kernel looks
//! at the list only when a host connects, so changing it leaves live
//! sessions alone, which is what the simulator assumes of the RDS. The
//! kernel refuses a host link while `attr_allow_any_host` is 1, and
//! `attr_allow_any_host = 1` while links remain, so the steps run in that
//! order; the plain-directory stand-in refuses the same.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{check_nqn, read_attr, write_attr, Group, Nvmet, Undo};

const ALLOW_ANY: &str = "attr_allow_any_host";

fn einval(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl Nvmet {
    fn host_group(&self, host: &str) -> PathBuf {
        self.root.join("hosts").join(host)
    }

    /// The hosts linked into the subsystem's `allowed_hosts/`, sorted.
    pub(crate) fn allowed_hosts(&self, nqn: &str) -> io::Result<Vec<String>> {
        let dir = self.subsystem(nqn).join("allowed_hosts");
        let mut hosts = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                hosts.push(name);
            }
        }
        hosts.sort();
        Ok(hosts)
    }

    /// Makes `hosts` (empty: any host) the hosts that may connect to the
    /// live export `nqn` from now on; sessions already open stay. All or
    /// nothing.
    pub(crate) fn set_hosts(&self, nqn: &str, hosts: &[String]) -> io::Result<()> {
        check_nqn(nqn)?;
        let mut done = Vec::new();
        match self.restrict(nqn, hosts, &mut done) {
            Ok(unlinked) => {
                self.drop_unused_hosts(&unlinked);
                Ok(())
            }
            Err(e) => {
                self.undo(done);
                Err(e)
            }
        }
    }

    /// The steps of [`Nvmet::set_hosts`] on an existing subsystem, each
    /// recorded in `done`; returns the hosts unlinked.
    pub(super) fn restrict(
        &self,
        nqn: &str,
        hosts: &[String],
        done: &mut Vec<Undo>,
    ) -> io::Result<Vec<String>> {
        for host in hosts {
            check_nqn(host)?;
        }
        let sub = self.subsystem(nqn);
        let want: BTreeSet<&str> = hosts.iter().map(String::as_str).collect();
        let linked = self.allowed_hosts(nqn)?;
        let before = read_attr(&sub, ALLOW_ANY).unwrap_or_default();
        let mut unlinked = Vec::new();
        if want.is_empty() {
            for host in &linked {
                self.unlink_host(&sub, host, done)?;
                unlinked.push(host.clone());
            }
            self.set_allow_any(&sub, true, &before, done)?;
            return Ok(unlinked);
        }
        self.set_allow_any(&sub, false, &before, done)?;
        for host in want.iter().filter(|h| !linked.iter().any(|l| l == *h)) {
            self.link_host(&sub, host, done)?;
        }
        for host in linked.iter().filter(|l| !want.contains(l.as_str())) {
            self.unlink_host(&sub, host, done)?;
            unlinked.push(host.clone());
        }
        Ok(unlinked)
    }

    fn set_allow_any(
        &self,
        sub: &Path,
        any: bool,
        before: &str,
        done: &mut Vec<Undo>,
    ) -> io::Result<()> {
        let value = if any { "1" } else { "0" };
        if before == value {
            return Ok(());
        }
        if self.plain && any && fs::read_dir(sub.join("allowed_hosts"))?.next().is_some() {
            return Err(einval(format!(
                "{}: allow_any_host with hosts still allowed",
                sub.display()
            )));
        }
        write_attr(sub, ALLOW_ANY, value)?;
        done.push(Undo::Attr {
            dir: sub.to_path_buf(),
            name: ALLOW_ANY,
            value: before.to_string(),
        });
        Ok(())
    }

    fn link_host(&self, sub: &Path, host: &str, done: &mut Vec<Undo>) -> io::Result<()> {
        if self.plain && read_attr(sub, ALLOW_ANY)? == "1" {
            return Err(einval(format!(
                "{}: a host link while any host is allowed",
                sub.display()
            )));
        }
        let group = self.host_group(host);
        if !group.exists() {
            if self.plain {
                fs::create_dir_all(self.root.join("hosts"))?;
            }
            self.mkgroup(&group, Group::Host)?;
            done.push(Undo::Rmdir(group.clone(), Group::Host));
        }
        let link = sub.join("allowed_hosts").join(host);
        std::os::unix::fs::symlink(&group, &link)
            .map_err(|e| io::Error::new(e.kind(), format!("allow host {host}: {e}")))?;
        done.push(Undo::Unlink(link));
        Ok(())
    }

    pub(super) fn unlink_host(
        &self,
        sub: &Path,
        host: &str,
        done: &mut Vec<Undo>,
    ) -> io::Result<()> {
        let link = sub.join("allowed_hosts").join(host);
        fs::remove_file(&link)
            .map_err(|e| io::Error::new(e.kind(), format!("disallow host {host}: {e}")))?;
        done.push(Undo::Link {
            link,
            target: self.host_group(host),
        });
        Ok(())
    }

    /// Removes the groups of `hosts` that no subsystem allows any more.
    /// Best effort: a host group left behind admits nobody by itself.
    pub(super) fn drop_unused_hosts(&self, hosts: &[String]) {
        for host in hosts {
            let used = fs::read_dir(self.root.join("subsystems"))
                .map(|subs| {
                    subs.flatten().any(|s| {
                        fs::symlink_metadata(s.path().join("allowed_hosts").join(host)).is_ok()
                    })
                })
                .unwrap_or(true);
            if !used {
                if let Err(e) = self.rmgroup(&self.host_group(host), Group::Host) {
                    tracing::warn!(host, error = %e, "rds-sim: could not remove an unused nvmet host");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fake, names};
    use super::*;

    const NQN: &str = "nqn.x:pvc-1";
    const A: &str = "nqn.2014-08.org.nvmexpress:uuid:a";
    const B: &str = "nqn.2014-08.org.nvmexpress:uuid:b";

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn an_export_with_hosts_allows_only_them_and_without_any_host() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/a"), &hosts(&[A, B]))
            .unwrap();
        let sub = dir.path().join("subsystems").join(NQN);
        assert_eq!(read_attr(&sub, ALLOW_ANY).unwrap(), "0");
        assert_eq!(n.allowed_hosts(NQN).unwrap(), [A, B]);
        assert_eq!(
            fs::read_link(sub.join("allowed_hosts").join(A)).unwrap(),
            dir.path().join("hosts").join(A)
        );
        n.export("nqn.x:open", 4420, Path::new("/b"), &[]).unwrap();
        let open = dir.path().join("subsystems/nqn.x:open");
        assert_eq!(read_attr(&open, ALLOW_ANY).unwrap(), "1");
        assert!(n.allowed_hosts("nqn.x:open").unwrap().is_empty());
    }

    #[test]
    fn changing_the_hosts_keeps_the_port_link_and_drops_unused_host_groups() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/a"), &hosts(&[A])).unwrap();
        n.export("nqn.x:other", 4420, Path::new("/b"), &hosts(&[A]))
            .unwrap();
        let port_link = dir.path().join("ports/1/subsystems").join(NQN);
        let linked_at = fs::symlink_metadata(&port_link)
            .unwrap()
            .modified()
            .unwrap();

        n.set_hosts(NQN, &hosts(&[B])).unwrap();
        assert_eq!(n.allowed_hosts(NQN).unwrap(), [B]);
        // A is still allowed on the other export: its group stays.
        assert_eq!(names(&dir.path().join("hosts")), [A, B]);

        n.set_hosts(NQN, &[]).unwrap();
        let sub = dir.path().join("subsystems").join(NQN);
        assert_eq!(read_attr(&sub, ALLOW_ANY).unwrap(), "1");
        assert!(n.allowed_hosts(NQN).unwrap().is_empty());
        assert_eq!(names(&dir.path().join("hosts")), [A]);

        n.set_hosts(NQN, &hosts(&[A, B])).unwrap();
        assert_eq!(read_attr(&sub, ALLOW_ANY).unwrap(), "0");
        assert_eq!(n.allowed_hosts(NQN).unwrap(), [A, B]);
        // The export itself was never taken down: no session was dropped.
        let still = fs::symlink_metadata(&port_link)
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(linked_at, still);
    }

    #[test]
    fn unexport_removes_the_host_links_and_their_unused_groups() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/a"), &hosts(&[A, B]))
            .unwrap();
        n.unexport(NQN).unwrap();
        assert!(names(&dir.path().join("subsystems")).is_empty());
        assert!(names(&dir.path().join("hosts")).is_empty());
    }

    #[test]
    fn the_kernel_ordering_rules_are_kept_by_the_stand_in() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/a"), &hosts(&[A])).unwrap();
        let sub = dir.path().join("subsystems").join(NQN);
        let mut done = Vec::new();
        // Any host while a host is linked: refused, as the kernel does.
        let err = n.set_allow_any(&sub, true, "0", &mut done).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        write_attr(&sub, ALLOW_ANY, "1").unwrap();
        let err = n.link_host(&sub, B, &mut done).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_failed_change_puts_the_old_hosts_back() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/a"), &hosts(&[A])).unwrap();
        // A's entry cannot be unlinked (something else sits there), so
        // replacing A by B fails after B was linked.
        let allowed = dir
            .path()
            .join("subsystems")
            .join(NQN)
            .join("allowed_hosts");
        fs::remove_file(allowed.join(A)).unwrap();
        fs::create_dir(allowed.join(A)).unwrap();
        assert!(n.set_hosts(NQN, &hosts(&[B])).is_err());
        assert_eq!(n.allowed_hosts(NQN).unwrap(), [A]);
        assert_eq!(
            names(&dir.path().join("hosts")),
            [A],
            "B's group is gone again"
        );
        // A host name that is not one path component is refused.
        assert!(n.set_hosts(NQN, &hosts(&["a/b"])).is_err());
        assert_eq!(n.allowed_hosts(NQN).unwrap(), [A]);
    }
}
