//! Real NVMe/TCP exports through the Linux kernel NVMe target (nvmet),
//! driven over configfs, so a simulated disk with `nvme-tcp-export=yes` can
//! be connected to with `nvme connect` like a volume on a real RDS.
//!
//! Layout written under the configfs root (normally
//! `/sys/kernel/config/nvmet`):
//!
//! ```text
//! subsystems/<nqn>/attr_allow_any_host = 1 (0 with an allow-list)
//! subsystems/<nqn>/allowed_hosts/<host nqn> -> hosts/<host nqn>
//! subsystems/<nqn>/namespaces/1/{device_path = <backing file>, enable = 1}
//! ports/<id>/{addr_trtype = tcp, addr_adrfam, addr_traddr, addr_trsvcid}
//! ports/<id>/subsystems/<nqn> -> subsystems/<nqn>
//! ```
//!
//! A port entry is shared by every export on the same address and TCP port
//! and removed with the last of them. Every export is all-or-nothing: a
//! failed step undoes the steps before it.
//!
//! The root may also be a plain directory (unit tests without root, or
//! without the nvmet module). Real configfs creates a group's attribute
//! files and default sub-groups on `mkdir` and drops them on `rmdir`; in a
//! plain directory this module does that itself, so the same code path
//! runs against both.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod hosts;

/// Where the kernel target's configfs tree usually is.
pub const DEFAULT_CONFIGFS: &str = "/sys/kernel/config/nvmet";

/// How the simulator exports disks through the kernel NVMe target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmetConfig {
    /// Address the TCP ports listen on (`addr_traddr`).
    pub addr: IpAddr,
    /// The nvmet configfs directory, or a plain directory standing in for it.
    pub configfs: PathBuf,
}

impl NvmetConfig {
    /// Exports on `addr` through [`DEFAULT_CONFIGFS`].
    pub fn new(addr: IpAddr) -> NvmetConfig {
        NvmetConfig {
            addr,
            configfs: PathBuf::from(DEFAULT_CONFIGFS),
        }
    }
}

/// The NSID every export uses, as on an RDS.
const NSID: &str = "1";

#[cfg(target_os = "linux")]
fn is_configfs(path: &Path) -> bool {
    const CONFIGFS_MAGIC: i128 = 0x6265_6570;
    rustix::fs::statfs(path).is_ok_and(|st| i128::from(st.f_type) == CONFIGFS_MAGIC)
}

#[cfg(not(target_os = "linux"))]
fn is_configfs(_path: &Path) -> bool {
    false
}

/// What kind of configfs group a directory is, for the plain-directory
/// stand-in: which default sub-groups and attributes `mkdir` brings.
#[derive(Debug, Clone, Copy)]
enum Group {
    Subsystem,
    Namespace,
    Port,
    Host,
}

impl Group {
    fn default_dirs(self) -> &'static [&'static str] {
        match self {
            Group::Subsystem => &["namespaces", "allowed_hosts"],
            Group::Namespace => &[],
            Group::Port => &["subsystems", "referrals", "ana_groups"],
            Group::Host => &[],
        }
    }

    fn default_files(self) -> &'static [&'static str] {
        match self {
            Group::Subsystem => &["attr_allow_any_host"],
            Group::Namespace => &["device_path", "enable", "buffered_io", "revalidate_size"],
            Group::Port => &["addr_trtype", "addr_adrfam", "addr_traddr", "addr_trsvcid"],
            Group::Host => &[],
        }
    }
}

/// A step already taken, undone in reverse order if a later step fails.
enum Undo {
    Rmdir(PathBuf, Group),
    Disable(PathBuf),
    Unlink(PathBuf),
    Link {
        link: PathBuf,
        target: PathBuf,
    },
    Attr {
        dir: PathBuf,
        name: &'static str,
        value: String,
    },
}

#[derive(Debug)]
pub(crate) struct Nvmet {
    addr: IpAddr,
    root: PathBuf,
    /// A plain directory standing in for configfs.
    plain: bool,
}

impl Nvmet {
    /// Checks the root looks like the nvmet tree (it has `subsystems/` and
    /// `ports/`), so a missing module or mount is reported at start, not at
    /// the first `/disk add`.
    pub(crate) fn open(config: &NvmetConfig) -> io::Result<Nvmet> {
        let root = config.configfs.clone();
        for dir in ["subsystems", "ports"] {
            let path = root.join(dir);
            if !path.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} is not a directory (is the nvmet module loaded and configfs mounted?)",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Nvmet {
            addr: config.addr,
            plain: !is_configfs(&root),
            root,
        })
    }

    fn subsystem(&self, nqn: &str) -> PathBuf {
        self.root.join("subsystems").join(nqn)
    }

    fn namespace(&self, nqn: &str) -> PathBuf {
        self.subsystem(nqn).join("namespaces").join(NSID)
    }

    fn mkgroup(&self, path: &Path, group: Group) -> io::Result<()> {
        fs::create_dir(path)?;
        if self.plain {
            for d in group.default_dirs() {
                fs::create_dir(path.join(d))?;
            }
            for f in group.default_files() {
                fs::write(path.join(f), "")?;
            }
        }
        Ok(())
    }

    fn rmgroup(&self, path: &Path, group: Group) -> io::Result<()> {
        if self.plain {
            // What configfs does by itself, all or nothing: a child group
            // left (or a default group not empty) fails the rmdir.
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let default = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| group.default_dirs().contains(&n));
                if !default || fs::read_dir(entry.path())?.next().is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::DirectoryNotEmpty,
                        format!("{} is not empty", path.display()),
                    ));
                }
            }
            for d in group.default_dirs() {
                ignore_missing(fs::remove_dir(path.join(d)))?;
            }
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        fs::remove_dir(path)
    }

    fn undo(&self, steps: Vec<Undo>) {
        for step in steps.into_iter().rev() {
            let result = match &step {
                Undo::Rmdir(path, group) => self.rmgroup(path, *group),
                Undo::Disable(ns) => fs::write(ns.join("enable"), "0"),
                Undo::Unlink(link) => fs::remove_file(link),
                Undo::Link { link, target } => std::os::unix::fs::symlink(target, link),
                Undo::Attr { dir, name, value } => write_attr(dir, name, value),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "rds-sim: nvmet rollback step failed");
            }
        }
    }

    /// Creates subsystem `nqn` allowing `hosts` (empty: any host) with
    /// namespace 1 on `device` and links it to the TCP port `addr:port`.
    /// All or nothing.
    pub(crate) fn export(
        &self,
        nqn: &str,
        port: u16,
        device: &Path,
        hosts: &[String],
    ) -> io::Result<()> {
        check_nqn(nqn)?;
        let sub = self.subsystem(nqn);
        if sub.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("subsystem {nqn} is already exported"),
            ));
        }
        let mut done = Vec::new();
        match self.export_steps(nqn, port, device, hosts, &mut done) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.undo(done);
                Err(e)
            }
        }
    }

    fn export_steps(
        &self,
        nqn: &str,
        port: u16,
        device: &Path,
        hosts: &[String],
        done: &mut Vec<Undo>,
    ) -> io::Result<()> {
        let sub = self.subsystem(nqn);
        self.mkgroup(&sub, Group::Subsystem)?;
        done.push(Undo::Rmdir(sub, Group::Subsystem));
        // Before the port link: no moment in which any host may connect.
        self.restrict(nqn, hosts, done)?;
        let ns = self.namespace(nqn);
        self.mkgroup(&ns, Group::Namespace)?;
        done.push(Undo::Rmdir(ns.clone(), Group::Namespace));
        let device = device.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "backing path is not UTF-8")
        })?;
        write_attr(&ns, "device_path", device)?;
        // The backing file may sit on tmpfs, which takes no O_DIRECT; the
        // target's page-cache mode works on every file system.
        if ns.join("buffered_io").exists() {
            write_attr(&ns, "buffered_io", "1")?;
        }
        write_attr(&ns, "enable", "1")?;
        done.push(Undo::Disable(ns));
        let (port_dir, created) = self.port_dir(port)?;
        if created {
            done.push(Undo::Rmdir(port_dir.clone(), Group::Port));
        }
        self.link(&port_dir, nqn)?;
        done.push(Undo::Unlink(port_dir.join("subsystems").join(nqn)));
        Ok(())
    }

    fn link(&self, port_dir: &Path, nqn: &str) -> io::Result<()> {
        let link = port_dir.join("subsystems").join(nqn);
        std::os::unix::fs::symlink(self.subsystem(nqn), &link).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("link {nqn} to port {}: {e}", port_dir.display()),
            )
        })
    }

    /// TCP port entries on our address and `port`.
    fn ports_on(&self, port: u16) -> io::Result<Vec<PathBuf>> {
        let want_addr = self.addr.to_string();
        let want_port = port.to_string();
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("ports"))? {
            let dir = entry?.path();
            let attr = |name: &str| read_attr(&dir, name).unwrap_or_default();
            if attr("addr_trtype") == "tcp"
                && attr("addr_traddr") == want_addr
                && attr("addr_trsvcid") == want_port
            {
                out.push(dir);
            }
        }
        Ok(out)
    }

    /// The port entry for `addr:port`, made if there is none yet; `true` if
    /// it was made here.
    fn port_dir(&self, port: u16) -> io::Result<(PathBuf, bool)> {
        if let Some(dir) = self.ports_on(port)?.into_iter().next() {
            return Ok((dir, false));
        }
        let ports = self.root.join("ports");
        let id = (1..=u16::MAX)
            .find(|id| !ports.join(id.to_string()).exists())
            .ok_or_else(|| io::Error::other("no free nvmet port id"))?;
        let dir = ports.join(id.to_string());
        self.mkgroup(&dir, Group::Port)?;
        let family = if self.addr.is_ipv4() { "ipv4" } else { "ipv6" };
        let configured = write_attr(&dir, "addr_adrfam", family)
            .and_then(|()| write_attr(&dir, "addr_trtype", "tcp"))
            .and_then(|()| write_attr(&dir, "addr_traddr", &self.addr.to_string()))
            .and_then(|()| write_attr(&dir, "addr_trsvcid", &port.to_string()));
        if let Err(e) = configured {
            self.undo(vec![Undo::Rmdir(dir, Group::Port)]);
            return Err(e);
        }
        Ok((dir, true))
    }

    /// Removes the export of `nqn`: its port links (and ports left with no
    /// subsystem), the namespace and the subsystem. Absent is success.
    pub(crate) fn unexport(&self, nqn: &str) -> io::Result<()> {
        check_nqn(nqn)?;
        let sub = self.subsystem(nqn);
        if !sub.exists() {
            return Ok(());
        }
        let mut unlinked = Vec::new();
        let mut undo_hosts = Vec::new();
        let result = self.unexport_steps(nqn, &sub, &mut unlinked, &mut undo_hosts);
        if result.is_err() {
            self.undo(undo_hosts);
            // Put the export back the way it was, as far as it goes.
            let ns = self.namespace(nqn);
            if ns.exists() {
                let _ = write_attr(&ns, "enable", "1");
            }
            for port_dir in unlinked {
                let _ = self.link(&port_dir, nqn);
            }
        }
        result
    }

    fn unexport_steps(
        &self,
        nqn: &str,
        sub: &Path,
        unlinked: &mut Vec<PathBuf>,
        undo_hosts: &mut Vec<Undo>,
    ) -> io::Result<()> {
        let mut empty_ports = Vec::new();
        for entry in fs::read_dir(self.root.join("ports"))? {
            let port_dir = entry?.path();
            let link = port_dir.join("subsystems").join(nqn);
            if fs::symlink_metadata(&link).is_ok() {
                fs::remove_file(&link)?;
                unlinked.push(port_dir.clone());
                if fs::read_dir(port_dir.join("subsystems"))?.next().is_none() {
                    empty_ports.push(port_dir);
                }
            }
        }
        let ns = self.namespace(nqn);
        if ns.exists() {
            write_attr(&ns, "enable", "0")?;
            self.rmgroup(&ns, Group::Namespace)?;
        }
        let hosts = self.allowed_hosts(nqn)?;
        for host in &hosts {
            self.unlink_host(sub, host, undo_hosts)?;
        }
        self.rmgroup(sub, Group::Subsystem)?;
        undo_hosts.clear();
        self.drop_unused_hosts(&hosts);
        // Only now: a port is no use to the export any more once it is gone.
        for port_dir in empty_ports {
            if let Err(e) = self.rmgroup(&port_dir, Group::Port) {
                tracing::warn!(port = %port_dir.display(), error = %e, "rds-sim: could not remove an unused nvmet port");
            }
        }
        Ok(())
    }

    /// Removes exports left by an earlier simulator run that died without
    /// cleaning up: subsystems whose namespace is backed by a file under
    /// `data` (a new simulator has no disks yet, so none of them is live).
    /// Subsystems backed by anything else are not ours and stay. Returns
    /// the NQNs removed.
    pub(crate) fn clear_stale(&self, data: &Path) -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(self.root.join("subsystems"))? {
            let Ok(nqn) = entry?.file_name().into_string() else {
                continue;
            };
            let Ok(device) = read_attr(&self.namespace(&nqn), "device_path") else {
                continue;
            };
            if !device.is_empty() && Path::new(&device).starts_with(data) {
                self.unexport(&nqn)?;
                removed.push(nqn);
            }
        }
        Ok(removed)
    }

    /// Tells the target the backing file grew, where the kernel offers it
    /// (`revalidate_size`, Linux 5.13 and later); hosts then see the new size.
    pub(crate) fn revalidate(&self, nqn: &str) -> io::Result<()> {
        check_nqn(nqn)?;
        let ns = self.namespace(nqn);
        if ns.join("revalidate_size").exists() {
            write_attr(&ns, "revalidate_size", "1")?;
        }
        Ok(())
    }

    /// Takes the TCP port `port` away (every subsystem unlinked, the port
    /// entry removed): to a host it looks like the target went down.
    /// Returns how many port entries were removed.
    pub(crate) fn port_down(&self, port: u16) -> io::Result<usize> {
        let dirs = self.ports_on(port)?;
        for dir in &dirs {
            for entry in fs::read_dir(dir.join("subsystems"))? {
                fs::remove_file(entry?.path())?;
            }
            self.rmgroup(dir, Group::Port)?;
        }
        Ok(dirs.len())
    }

    /// Brings `port` back with the given subsystems linked (those still
    /// exported); a no-op for subsystems already linked.
    pub(crate) fn port_up(&self, port: u16, nqns: &[String]) -> io::Result<()> {
        let (dir, _) = self.port_dir(port)?;
        for nqn in nqns {
            let link = dir.join("subsystems").join(nqn);
            if fs::symlink_metadata(&link).is_err() && self.subsystem(nqn).exists() {
                self.link(&dir, nqn)?;
            }
        }
        Ok(())
    }
}

/// An NQN becomes a directory name: it must be one path component.
fn check_nqn(nqn: &str) -> io::Result<()> {
    if nqn.is_empty()
        || nqn.len() > 223
        || nqn == "."
        || nqn == ".."
        || nqn.contains('/')
        || nqn.chars().any(|c| c.is_control())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{nqn:?} is not a usable NQN"),
        ));
    }
    Ok(())
}

fn write_attr(dir: &Path, name: &str, value: &str) -> io::Result<()> {
    let path = dir.join(name);
    fs::write(&path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("write {value:?} to {}: {e}", path.display()),
        )
    })
}

fn read_attr(dir: &Path, name: &str) -> io::Result<String> {
    Ok(fs::read_to_string(dir.join(name))?.trim().to_string())
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";

    pub(super) fn fake() -> (tempfile::TempDir, Nvmet) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("hosts")).unwrap();
        fs::create_dir(dir.path().join("subsystems")).unwrap();
        fs::create_dir(dir.path().join("ports")).unwrap();
        let n = Nvmet::open(&NvmetConfig {
            addr: "127.0.0.1".parse().unwrap(),
            configfs: dir.path().to_path_buf(),
        })
        .unwrap();
        assert!(n.plain);
        (dir, n)
    }

    pub(super) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_refuses_a_tree_without_nvmet() {
        let dir = tempfile::tempdir().unwrap();
        let err = Nvmet::open(&NvmetConfig {
            addr: "127.0.0.1".parse().unwrap(),
            configfs: dir.path().join("nvmet"),
        })
        .unwrap_err();
        assert!(err.to_string().contains("nvmet module"), "{err}");
    }

    #[test]
    fn export_writes_subsystem_namespace_and_port() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/data/pvc-1.img"), &[])
            .unwrap();
        let sub = dir.path().join("subsystems").join(NQN);
        assert_eq!(read_attr(&sub, "attr_allow_any_host").unwrap(), "1");
        let ns = sub.join("namespaces/1");
        assert_eq!(read_attr(&ns, "device_path").unwrap(), "/data/pvc-1.img");
        assert_eq!(read_attr(&ns, "enable").unwrap(), "1");
        assert_eq!(read_attr(&ns, "buffered_io").unwrap(), "1");
        let port = dir.path().join("ports/1");
        assert_eq!(read_attr(&port, "addr_trtype").unwrap(), "tcp");
        assert_eq!(read_attr(&port, "addr_adrfam").unwrap(), "ipv4");
        assert_eq!(read_attr(&port, "addr_traddr").unwrap(), "127.0.0.1");
        assert_eq!(read_attr(&port, "addr_trsvcid").unwrap(), "4420");
        let link = port.join("subsystems").join(NQN);
        assert_eq!(fs::read_link(link).unwrap(), sub);
        // The same NQN twice is refused and changes nothing.
        assert_eq!(
            n.export(NQN, 4420, Path::new("/x"), &[])
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(read_attr(&ns, "device_path").unwrap(), "/data/pvc-1.img");
    }

    #[test]
    fn ports_are_shared_per_address_and_port_and_kept_while_used() {
        let (dir, n) = fake();
        let ports = dir.path().join("ports");
        n.export("nqn.x:a", 4420, Path::new("/a"), &[]).unwrap();
        n.export("nqn.x:b", 4420, Path::new("/b"), &[]).unwrap();
        n.export("nqn.x:c", 4421, Path::new("/c"), &[]).unwrap();
        assert_eq!(names(&ports), ["1", "2"]);
        assert_eq!(names(&ports.join("1/subsystems")), ["nqn.x:a", "nqn.x:b"]);
        assert_eq!(names(&ports.join("2/subsystems")), ["nqn.x:c"]);

        n.unexport("nqn.x:a").unwrap();
        assert_eq!(names(&ports.join("1/subsystems")), ["nqn.x:b"]);
        n.unexport("nqn.x:b").unwrap();
        n.unexport("nqn.x:c").unwrap();
        assert!(names(&ports).is_empty());
        assert!(names(&dir.path().join("subsystems")).is_empty());
        // Gone already: still success.
        n.unexport("nqn.x:c").unwrap();
    }

    #[test]
    fn a_port_someone_else_uses_is_kept() {
        let (dir, n) = fake();
        n.export("nqn.x:a", 4420, Path::new("/a"), &[]).unwrap();
        // Another subsystem, set up by hand, linked to the same port.
        let other = dir.path().join("subsystems/nqn.other");
        fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(&other, dir.path().join("ports/1/subsystems/nqn.other"))
            .unwrap();
        n.unexport("nqn.x:a").unwrap();
        assert_eq!(names(&dir.path().join("ports/1/subsystems")), ["nqn.other"]);
    }

    #[test]
    fn a_failed_export_leaves_nothing_behind() {
        let (dir, n) = fake();
        // The port cannot be made: `ports` is not a directory.
        fs::remove_dir(dir.path().join("ports")).unwrap();
        fs::write(dir.path().join("ports"), "").unwrap();
        let err = n.export(NQN, 4420, Path::new("/a"), &[]).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(names(&dir.path().join("subsystems")).is_empty());
        // And a failure on the very first step too.
        fs::remove_dir(dir.path().join("subsystems")).unwrap();
        fs::write(dir.path().join("subsystems"), "").unwrap();
        assert!(n.export(NQN, 4420, Path::new("/a"), &[]).is_err());
    }

    #[test]
    fn revalidate_pokes_the_namespace() {
        let (dir, n) = fake();
        n.export(NQN, 4420, Path::new("/a"), &[]).unwrap();
        n.revalidate(NQN).unwrap();
        let ns = dir.path().join("subsystems").join(NQN).join("namespaces/1");
        assert_eq!(read_attr(&ns, "revalidate_size").unwrap(), "1");
    }

    #[test]
    fn port_down_and_up_restores_the_links() {
        let (dir, n) = fake();
        n.export("nqn.x:a", 4420, Path::new("/a"), &[]).unwrap();
        n.export("nqn.x:b", 4420, Path::new("/b"), &[]).unwrap();
        assert_eq!(n.port_down(4420).unwrap(), 1);
        assert!(names(&dir.path().join("ports")).is_empty());
        assert_eq!(
            names(&dir.path().join("subsystems")),
            ["nqn.x:a", "nqn.x:b"]
        );
        n.port_up(4420, &["nqn.x:a".into(), "nqn.x:b".into()])
            .unwrap();
        n.port_up(4420, &["nqn.x:a".into()]).unwrap();
        assert_eq!(
            names(&dir.path().join("ports/1/subsystems")),
            ["nqn.x:a", "nqn.x:b"]
        );
        assert_eq!(n.port_down(4999).unwrap(), 0);
    }

    #[test]
    fn stale_exports_of_our_data_dir_are_cleared_and_others_kept() {
        let (dir, n) = fake();
        n.export("nqn.x:old", 4420, Path::new("/data/pool/old.img"), &[])
            .unwrap();
        n.export("nqn.other:root", 4420, Path::new("/dev/sda"), &[])
            .unwrap();
        let removed = n.clear_stale(Path::new("/data/pool")).unwrap();
        assert_eq!(removed, ["nqn.x:old"]);
        assert_eq!(names(&dir.path().join("subsystems")), ["nqn.other:root"]);
        assert_eq!(
            names(&dir.path().join("ports/1/subsystems")),
            ["nqn.other:root"]
        );
    }

    #[test]
    fn nqns_that_are_not_one_path_component_are_refused() {
        let (_dir, n) = fake();
        for bad in ["", ".", "..", "a/b", "a\nb"] {
            assert!(
                n.export(bad, 4420, Path::new("/a"), &[]).is_err(),
                "{bad:?}"
            );
            assert!(n.unexport(bad).is_err(), "{bad:?}");
        }
    }
}
