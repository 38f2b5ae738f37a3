//! A recording fake of the host, for tests without root or NVMe hardware.
//!
//! [`FakeHost`] implements both [`Exec`] and [`Sys`] over one small model
//! of a Linux node: a virtual filesystem holding sysfs, `/dev` and
//! everything else, a mount table rendered as real mountinfo text, and
//! NVMe/TCP targets whose volumes keep their content across reconnects and
//! controller renumbering. `nvme connect` creates the controller,
//! subsystem and namespace entries the kernel would (native multipath or
//! not); `mkfs` writes a signature `blkid` then reports.
//!
//! Every mutating call and every command is recorded as a typed [`Call`];
//! any command can be scripted to answer differently, time out or fail to
//! start, and any syscall can be told to fail with an errno. Failures the
//! model produces by itself are typed too ([`CommandFailure`]), rendered
//! as the real tool's exit code and stderr only at the boundary.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;

use crate::exec::{Exec, ExecError, FsType, HostCommand, Output};
use crate::mountinfo::Mount;
use crate::sys::{DevId, FileKind, FileStat, FsStats, MountRequest, MsFlags, Sys};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Exec(HostCommand),
    Mount(MountRequest),
    Umount {
        target: PathBuf,
        detach: bool,
    },
    Mknod {
        path: PathBuf,
        mode: u32,
        dev: DevId,
    },
    CreateDir(PathBuf),
    RemoveDir(PathBuf),
    RemoveFile(PathBuf),
    WriteFile(PathBuf),
    ReadHead(PathBuf),
    DeviceClaimed(PathBuf),
    Statfs(PathBuf),
}

/// A scripted answer to the next run of a program.
#[derive(Debug, Clone)]
pub enum Reply {
    Exit {
        code: i32,
        stdout: String,
        stderr: String,
    },
    Timeout,
    SpawnError,
    /// The command does its work, then exits with `code` anyway (nvme-cli
    /// racing another connect of the same subsystem).
    WorkThenExit(i32),
}

impl Reply {
    pub fn exit(code: i32) -> Reply {
        Reply::Exit {
            code,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    pub fn stdout(code: i32, stdout: &str) -> Reply {
        Reply::Exit {
            code,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    NvmeConnect,
    NvmeDisconnect,
    NvmeNsRescan,
    Blkid,
    Mkfs,
    E2fsck,
    Resize2fs,
    XfsGrowfs,
}

impl Program {
    pub fn of(cmd: &HostCommand) -> Program {
        match cmd {
            HostCommand::NvmeConnect(_) => Program::NvmeConnect,
            HostCommand::NvmeDisconnect { .. } => Program::NvmeDisconnect,
            HostCommand::NvmeNsRescan { .. } => Program::NvmeNsRescan,
            HostCommand::BlkidProbe { .. } => Program::Blkid,
            HostCommand::Mkfs { .. } => Program::Mkfs,
            HostCommand::E2fsck { .. } => Program::E2fsck,
            HostCommand::Resize2fs { .. } => Program::Resize2fs,
            HostCommand::XfsGrowfs { .. } => Program::XfsGrowfs,
        }
    }
}

/// Something the host does on its own right after a command ran: a
/// reconnect racing the driver between two of its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// The connection of this NQN comes back under new numbers
    /// ([`FakeHost::renumber`]).
    Renumber(String),
    /// The two connections trade places: the device (name and number) of
    /// the first now serves the second's NQN, and the other way round.
    Swap(String, String),
}

/// How a modelled command fails on its own (not scripted): a typed value,
/// rendered as the exit code and stderr the real tool prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFailure {
    /// `nvme connect` of a subsystem that is already connected.
    AlreadyConnected,
    /// `nvme connect` to a target that does not answer.
    Unreachable,
    /// A device or controller path that does not exist.
    NoSuchPath(PathBuf),
}

impl CommandFailure {
    pub fn output(&self) -> Output {
        let stderr = match self {
            CommandFailure::AlreadyConnected => {
                "Failed to write to /dev/nvme-fabrics: Operation already in progress\n".to_string()
            }
            CommandFailure::Unreachable => {
                "could not add new controller: failed to write to nvme-fabrics device\n".to_string()
            }
            CommandFailure::NoSuchPath(p) => {
                format!("{}: No such file or directory\n", p.display())
            }
        };
        Output {
            code: Some(1),
            stdout: String::new(),
            stderr,
        }
    }
}

/// Syscalls that can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SysOp {
    Mount,
    Umount,
    Mknod,
    ReadHead,
    RemoveDir,
    RemoveFile,
    CreateDir,
    WriteFile,
    Statfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Block { dev: DevId, mode: u32 },
    Char,
}

/// What a target's volume holds. It outlives connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    pub size_bytes: u64,
    /// A filesystem signature (`mkfs` sets it).
    pub fs: Option<String>,
    /// A partition table or another non-filesystem signature.
    pub other: Option<String>,
    /// Non-zero bytes with no signature blkid knows.
    pub raw_data: bool,
    pub reachable: bool,
}

#[derive(Debug, Clone)]
struct Conn {
    subsys: u32,
    ctrl: u32,
    /// Usable block device name and number (none while namespaces are
    /// deferred).
    device: Option<(String, DevId)>,
    hidden: Option<String>,
}

struct World {
    fs: BTreeMap<PathBuf, Entry>,
    mounts: Vec<Mount>,
    next_mount_id: u32,
    calls: Vec<Call>,
    replies: HashMap<Program, VecDeque<Reply>>,
    after: HashMap<Program, VecDeque<Then>>,
    sys_errors: HashMap<SysOp, VecDeque<Option<Errno>>>,
    volumes: BTreeMap<String, Volume>,
    conns: BTreeMap<String, Conn>,
    multipath: bool,
    defer_namespaces: bool,
    next_ctrl: u32,
    next_subsys: u32,
    next_minor: u32,
    unreadable: HashSet<PathBuf>,
    claimed: HashSet<PathBuf>,
    statfs: FsStats,
}

/// The data path settings tests run the fake with: NQN prefix
/// `nqn.2000-02.com.mikrotik:` with volume-ID prefix `pvc-`, and a fixed
/// host NQN.
pub fn config() -> crate::Config {
    crate::Config::new(
        crate::NqnPrefix::new("nqn.2000-02.com.mikrotik:")
            .unwrap()
            .with_volume_prefix("pvc-")
            .unwrap(),
        crate::HostIdentity {
            nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            id: None,
        },
    )
}

/// The fake host. Cheap to clone; clones share one world.
#[derive(Clone)]
pub struct FakeHost(Arc<Mutex<World>>);

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

const MAJOR: u32 = 259;

fn err(e: Errno) -> io::Error {
    io::Error::from(e)
}

fn escape(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            ' ' => s.push_str("\\040"),
            '\t' => s.push_str("\\011"),
            '\n' => s.push_str("\\012"),
            '\\' => s.push_str("\\134"),
            c => s.push(c),
        }
    }
    s
}

impl World {
    fn ensure_dirs(&mut self, p: &Path) {
        for a in p.ancestors() {
            if a.as_os_str().is_empty() {
                continue;
            }
            self.fs.entry(a.to_path_buf()).or_insert(Entry::Dir);
        }
    }

    fn put_file(&mut self, p: impl AsRef<Path>, text: &str) {
        let p = p.as_ref();
        if let Some(parent) = p.parent() {
            self.ensure_dirs(parent);
        }
        self.fs
            .insert(p.to_path_buf(), Entry::File(text.as_bytes().to_vec()));
    }

    fn remove_tree(&mut self, p: &Path) {
        self.fs.retain(|k, _| !k.starts_with(p));
    }

    fn children(&self, p: &Path) -> Vec<String> {
        self.fs
            .keys()
            .filter(|k| k.parent() == Some(p))
            .filter_map(|k| k.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    /// ENOENT unless the directory that would hold `path` exists.
    fn parent_dir_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent().map(|p| self.fs.get(p)) {
            Some(Some(Entry::Dir)) => Ok(()),
            _ => Err(err(Errno::ENOENT)),
        }
    }

    fn is_mount_point(&self, p: &Path) -> bool {
        self.mounts.iter().any(|m| m.mount_point == p)
    }

    fn sys_error(&mut self, op: SysOp) -> Option<io::Error> {
        self.sys_errors
            .get_mut(&op)
            .and_then(VecDeque::pop_front)
            .flatten()
            .map(err)
    }

    fn minor(&mut self) -> DevId {
        self.next_minor += 1;
        DevId::new(MAJOR, self.next_minor)
    }

    fn block(&mut self, name: &str, dev: DevId, size: u64, hidden: bool) {
        let b = PathBuf::from("/sys/class/block").join(name);
        self.put_file(b.join("dev"), &format!("{dev}\n"));
        self.put_file(b.join("size"), &format!("{}\n", size / 512));
        self.put_file(format!("/sys/dev/block/{dev}/dev"), &format!("{dev}\n"));
        if !hidden {
            self.ensure_dirs(Path::new("/dev"));
            self.fs.insert(
                PathBuf::from("/dev").join(name),
                Entry::Block { dev, mode: 0o660 },
            );
        }
    }

    fn unblock(&mut self, name: &str) {
        let b = PathBuf::from("/sys/class/block").join(name);
        if let Some(Entry::File(d)) = self.fs.get(&b.join("dev")) {
            let dev = String::from_utf8_lossy(d).trim().to_string();
            self.remove_tree(&PathBuf::from(format!("/sys/dev/block/{dev}")));
        }
        self.remove_tree(&b);
        self.fs.remove(&PathBuf::from("/dev").join(name));
    }

    /// The kernel side of a successful `nvme connect`.
    fn attach(&mut self, nqn: &str, address: &str, port: u16) {
        let subsys = self.next_subsys;
        self.next_subsys += 1;
        let ctrl = self.next_ctrl;
        self.next_ctrl += 1;
        let c = PathBuf::from(format!("/sys/class/nvme/nvme{ctrl}"));
        self.put_file(c.join("subsysnqn"), &format!("{nqn}\n"));
        self.put_file(c.join("state"), "live\n");
        self.put_file(c.join("transport"), "tcp\n");
        self.put_file(
            c.join("address"),
            &format!("traddr={address},trsvcid={port},src_addr=127.0.0.1\n"),
        );
        self.fs
            .insert(PathBuf::from(format!("/dev/nvme{ctrl}")), Entry::Char);
        let s = PathBuf::from(format!("/sys/class/nvme-subsystem/nvme-subsys{subsys}"));
        self.put_file(s.join("subsysnqn"), &format!("{nqn}\n"));
        self.ensure_dirs(&s.join(format!("nvme{ctrl}")));
        self.conns.insert(
            nqn.to_string(),
            Conn {
                subsys,
                ctrl,
                device: None,
                hidden: None,
            },
        );
        if !self.defer_namespaces {
            self.show(nqn);
        }
    }

    /// The namespace of a connection appears.
    fn show(&mut self, nqn: &str) {
        let Some(conn) = self.conns.get(nqn).cloned() else {
            return;
        };
        if conn.device.is_some() {
            return;
        }
        let size = self.volumes.get(nqn).map(|v| v.size_bytes).unwrap_or(0);
        let (name, hidden) = if self.multipath {
            let head = format!("nvme{}n1", conn.subsys);
            let path = format!("nvme{}c{}n1", conn.subsys, conn.ctrl);
            self.ensure_dirs(
                &PathBuf::from(format!(
                    "/sys/class/nvme-subsystem/nvme-subsys{}",
                    conn.subsys
                ))
                .join(&head),
            );
            self.ensure_dirs(
                &PathBuf::from(format!("/sys/class/nvme/nvme{}", conn.ctrl)).join(&path),
            );
            let hidden_dev = self.minor();
            self.block(&path, hidden_dev, size, true);
            (head, Some(path))
        } else {
            let name = format!("nvme{}n1", conn.ctrl);
            self.ensure_dirs(
                &PathBuf::from(format!("/sys/class/nvme/nvme{}", conn.ctrl)).join(&name),
            );
            (name, None)
        };
        let dev = self.minor();
        self.block(&name, dev, size, false);
        let c = self.conns.get_mut(nqn).expect("present");
        c.device = Some((name, dev));
        c.hidden = hidden;
    }

    /// The kernel side of a disconnect (or of a controller given up).
    fn detach(&mut self, nqn: &str) -> bool {
        let Some(conn) = self.conns.remove(nqn) else {
            return false;
        };
        if let Some((name, _)) = &conn.device {
            self.unblock(name);
        }
        if let Some(h) = &conn.hidden {
            self.unblock(h);
        }
        self.remove_tree(&PathBuf::from(format!("/sys/class/nvme/nvme{}", conn.ctrl)));
        self.remove_tree(&PathBuf::from(format!(
            "/sys/class/nvme-subsystem/nvme-subsys{}",
            conn.subsys
        )));
        self.fs
            .remove(&PathBuf::from(format!("/dev/nvme{}", conn.ctrl)));
        true
    }

    /// Two connections trade their kernel objects: sysfs then says the
    /// device of one belongs to the other NQN.
    fn swap(&mut self, a: &str, b: &str) {
        let (Some(ca), Some(cb)) = (self.conns.remove(a), self.conns.remove(b)) else {
            panic!("swap needs both {a} and {b} connected");
        };
        for (conn, nqn) in [(&ca, b), (&cb, a)] {
            self.put_file(
                format!("/sys/class/nvme/nvme{}/subsysnqn", conn.ctrl),
                &format!("{nqn}\n"),
            );
            self.put_file(
                format!(
                    "/sys/class/nvme-subsystem/nvme-subsys{}/subsysnqn",
                    conn.subsys
                ),
                &format!("{nqn}\n"),
            );
        }
        self.conns.insert(b.to_string(), ca);
        self.conns.insert(a.to_string(), cb);
    }

    fn then(&mut self, then: Then) {
        match then {
            Then::Renumber(nqn) => {
                self.detach(&nqn);
                self.attach(&nqn, "10.0.0.1", 4420);
            }
            Then::Swap(a, b) => self.swap(&a, &b),
        }
    }

    fn nqn_of_device(&self, path: &Path) -> Option<String> {
        let name = path.file_name()?.to_string_lossy();
        self.conns
            .iter()
            .find(|(_, c)| c.device.as_ref().is_some_and(|(n, _)| *n == name))
            .map(|(nqn, _)| nqn.clone())
    }

    fn model(&mut self, cmd: &HostCommand) -> Output {
        let ok = |stdout: String| Output {
            code: Some(0),
            stdout,
            stderr: String::new(),
        };
        match cmd {
            HostCommand::NvmeConnect(a) => {
                if self.conns.contains_key(&a.nqn) {
                    return CommandFailure::AlreadyConnected.output();
                }
                if !self.volumes.get(&a.nqn).is_some_and(|v| v.reachable) {
                    return CommandFailure::Unreachable.output();
                }
                self.attach(&a.nqn, &a.address, a.port);
                let ctrl = self.conns[&a.nqn].ctrl;
                ok(format!("connecting to device: nvme{ctrl}\n"))
            }
            HostCommand::NvmeDisconnect { nqn } => {
                let n = usize::from(self.detach(nqn));
                ok(format!("NQN:{nqn} disconnected {n} controller(s)\n"))
            }
            HostCommand::NvmeNsRescan { controller } => {
                let name = controller
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let found = self
                    .conns
                    .iter()
                    .find(|(_, c)| format!("nvme{}", c.ctrl) == name)
                    .map(|(n, c)| (n.clone(), c.clone()));
                let Some((nqn, conn)) = found else {
                    return CommandFailure::NoSuchPath(controller.clone()).output();
                };
                let size = self.volumes.get(&nqn).map(|v| v.size_bytes).unwrap_or(0);
                for n in conn.device.iter().map(|(n, _)| n).chain(conn.hidden.iter()) {
                    self.put_file(
                        PathBuf::from("/sys/class/block").join(n).join("size"),
                        &format!("{}\n", size / 512),
                    );
                }
                ok(String::new())
            }
            HostCommand::BlkidProbe { device } => {
                let vol = self
                    .nqn_of_device(device)
                    .and_then(|n| self.volumes.get(&n).cloned());
                match vol {
                    Some(Volume { fs: Some(t), .. }) => ok(format!(
                        "DEVNAME={}\nUUID=5f1c0d2e-0000-4000-8000-000000000001\nBLOCK_SIZE=4096\nTYPE={t}\nUSAGE=filesystem\n",
                        device.display()
                    )),
                    Some(Volume {
                        other: Some(o), ..
                    }) => ok(format!("DEVNAME={}\nPTTYPE={o}\n", device.display())),
                    // Nothing found, or no such device: blkid says 2 for both.
                    _ => Output::exit(2),
                }
            }
            HostCommand::Mkfs { fs, device } => match self.nqn_of_device(device) {
                Some(nqn) => {
                    if let Some(v) = self.volumes.get_mut(&nqn) {
                        v.fs = Some(fs.as_str().to_string());
                    }
                    ok(String::new())
                }
                None => CommandFailure::NoSuchPath(device.clone()).output(),
            },
            HostCommand::E2fsck { .. }
            | HostCommand::Resize2fs { .. }
            | HostCommand::XfsGrowfs { .. } => ok(String::new()),
        }
    }

    fn render_mountinfo(&self) -> String {
        let mut s = String::new();
        for m in &self.mounts {
            s.push_str(&format!(
                "{} {} {}:{} {} {} {} shared:1 - {} {} rw\n",
                m.id,
                m.parent,
                m.major,
                m.minor,
                escape(&m.root),
                escape(&m.mount_point),
                m.options,
                m.fs_type,
                escape(Path::new(&m.source))
            ));
        }
        s
    }
}

impl FakeHost {
    /// An empty node with native NVMe multipath on (the Debian default),
    /// `/`, `/dev` and a root mount.
    pub fn new() -> Self {
        let mut w = World {
            fs: BTreeMap::new(),
            mounts: Vec::new(),
            next_mount_id: 100,
            calls: Vec::new(),
            replies: HashMap::new(),
            after: HashMap::new(),
            sys_errors: HashMap::new(),
            volumes: BTreeMap::new(),
            conns: BTreeMap::new(),
            multipath: true,
            defer_namespaces: false,
            next_ctrl: 0,
            next_subsys: 0,
            next_minor: 0,
            unreadable: HashSet::new(),
            claimed: HashSet::new(),
            statfs: FsStats {
                total_bytes: 10 << 30,
                free_bytes: 9 << 30,
                available_bytes: 9 << 30,
                total_inodes: 655_360,
                free_inodes: 655_000,
            },
        };
        w.ensure_dirs(Path::new("/dev"));
        w.ensure_dirs(Path::new("/sys/class/nvme"));
        w.ensure_dirs(Path::new("/sys/class/nvme-subsystem"));
        w.ensure_dirs(Path::new("/sys/class/block"));
        w.ensure_dirs(Path::new("/proc/self"));
        w.mounts.push(Mount {
            id: 1,
            parent: 0,
            major: 8,
            minor: 1,
            root: "/".into(),
            mount_point: "/".into(),
            options: "rw,relatime".into(),
            fs_type: "ext4".into(),
            source: "/dev/sda1".into(),
        });
        FakeHost(Arc::new(Mutex::new(w)))
    }

    fn w(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a system call and fails it if a failure is scripted for its
    /// operation; otherwise hands over the world to carry it out.
    fn sys_call(&self, call: Call, op: SysOp) -> io::Result<MutexGuard<'_, World>> {
        let mut w = self.w();
        w.calls.push(call);
        match w.sys_error(op) {
            Some(e) => Err(e),
            None => Ok(w),
        }
    }

    /// Native multipath on (head `nvmeSnN` under the subsystem) or off
    /// (`nvmeCnN` under the controller).
    pub fn set_multipath(&self, on: bool) {
        self.w().multipath = on;
    }

    /// A target volume, reachable, `size_bytes` large, all zeros.
    pub fn add_volume(&self, nqn: &str, size_bytes: u64) {
        self.w().volumes.insert(
            nqn.to_string(),
            Volume {
                size_bytes,
                reachable: true,
                ..Default::default()
            },
        );
    }

    pub fn update_volume(&self, nqn: &str, f: impl FnOnce(&mut Volume)) {
        if let Some(v) = self.w().volumes.get_mut(nqn) {
            f(v);
        }
    }

    pub fn volume(&self, nqn: &str) -> Option<Volume> {
        self.w().volumes.get(nqn).cloned()
    }

    /// From now on `nvme connect` creates controllers without namespaces,
    /// until [`FakeHost::show_namespaces`].
    pub fn defer_namespaces(&self, on: bool) {
        self.w().defer_namespaces = on;
    }

    pub fn show_namespaces(&self, nqn: &str) {
        self.w().show(nqn);
    }

    /// Connects without recording a call (state left by someone else, or
    /// by a previous run of the node plugin).
    pub fn connect_now(&self, nqn: &str) {
        let mut w = self.w();
        if !w.volumes.contains_key(nqn) {
            w.volumes.insert(
                nqn.to_string(),
                Volume {
                    size_bytes: 1 << 30,
                    reachable: true,
                    ..Default::default()
                },
            );
        }
        w.attach(nqn, "10.0.0.1", 4420);
    }

    /// The controller is lost (ctrl_loss_tmo expired): every device of the
    /// connection disappears. Mounts stay, pointing at a dead device.
    pub fn lose_connection(&self, nqn: &str) {
        self.w().detach(nqn);
    }

    /// The connection comes back under new controller and device numbers.
    pub fn renumber(&self, nqn: &str) {
        let mut w = self.w();
        w.detach(nqn);
        w.attach(nqn, "10.0.0.1", 4420);
    }

    /// Sets a controller state (`live`, `connecting`, ...).
    pub fn set_state(&self, nqn: &str, state: &str) {
        let mut w = self.w();
        if let Some(c) = w.conns.get(nqn).map(|c| c.ctrl) {
            w.put_file(
                format!("/sys/class/nvme/nvme{c}/state"),
                &format!("{state}\n"),
            );
        }
    }

    pub fn is_connected(&self, nqn: &str) -> bool {
        self.w().conns.contains_key(nqn)
    }

    /// The usable device of a connection: `/dev` path and number.
    pub fn device(&self, nqn: &str) -> Option<(PathBuf, DevId)> {
        self.w()
            .conns
            .get(nqn)
            .and_then(|c| c.device.clone())
            .map(|(n, d)| (PathBuf::from("/dev").join(n), d))
    }

    /// The next run of `program` answers `reply` instead of the model.
    pub fn reply(&self, program: Program, reply: Reply) {
        self.w()
            .replies
            .entry(program)
            .or_default()
            .push_back(reply);
    }

    /// Right after the next run of `program` (whatever it answers), the
    /// host does `then`.
    pub fn then_after(&self, program: Program, then: Then) {
        self.w().after.entry(program).or_default().push_back(then);
    }

    /// The next `op` fails with `errno`.
    pub fn fail(&self, op: SysOp, errno: Errno) {
        self.fail_after(op, 0, errno);
    }

    /// The next `skip` calls of `op` succeed, the one after fails with
    /// `errno`.
    pub fn fail_after(&self, op: SysOp, skip: usize, errno: Errno) {
        let mut w = self.w();
        let q = w.sys_errors.entry(op).or_default();
        q.extend(std::iter::repeat_n(None, skip));
        q.push_back(Some(errno));
    }

    /// Reads of this device fail with EIO.
    pub fn make_unreadable(&self, device: &Path) {
        self.w().unreadable.insert(device.to_path_buf());
    }

    /// An exclusive open of this device fails with EBUSY.
    pub fn claim(&self, device: &Path) {
        self.w().claimed.insert(device.to_path_buf());
    }

    pub fn set_statfs(&self, s: FsStats) {
        self.w().statfs = s;
    }

    pub fn mkdir(&self, p: &Path) {
        self.w().ensure_dirs(p);
    }

    pub fn write(&self, p: &Path, data: &str) {
        self.w().put_file(p, data);
    }

    pub fn read(&self, p: &Path) -> Option<String> {
        match self.w().fs.get(p) {
            Some(Entry::File(d)) => Some(String::from_utf8_lossy(d).into_owned()),
            _ => None,
        }
    }

    pub fn exists(&self, p: &Path) -> bool {
        self.w().fs.contains_key(p)
    }

    /// A block device node placed by someone else.
    pub fn put_device_node(&self, p: &Path, dev: DevId) {
        let mut w = self.w();
        if let Some(parent) = p.parent() {
            w.ensure_dirs(parent);
        }
        w.fs.insert(p.to_path_buf(), Entry::Block { dev, mode: 0o660 });
    }

    /// Adds a mount directly (a mount made by someone else).
    pub fn add_mount(&self, dev: DevId, mount_point: &Path, fs_type: &str, source: &str) {
        let mut w = self.w();
        w.ensure_dirs(mount_point);
        let id = w.next_mount_id;
        w.next_mount_id += 1;
        w.mounts.push(Mount {
            id,
            parent: 1,
            major: dev.major,
            minor: dev.minor,
            root: "/".into(),
            mount_point: mount_point.to_path_buf(),
            options: "rw,relatime".into(),
            fs_type: fs_type.into(),
            source: source.into(),
        });
    }

    pub fn mounts(&self) -> Vec<Mount> {
        self.w().mounts.clone()
    }

    /// Mounts at `p`, bottom first.
    pub fn mounts_at(&self, p: &Path) -> Vec<Mount> {
        self.w()
            .mounts
            .iter()
            .filter(|m| m.mount_point == p)
            .cloned()
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.w().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.w().calls.clear();
    }

    /// Recorded commands, in order.
    pub fn commands(&self) -> Vec<HostCommand> {
        self.w()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Exec(h) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many times `program` ran.
    pub fn ran(&self, program: Program) -> usize {
        self.commands()
            .iter()
            .filter(|c| Program::of(c) == program)
            .count()
    }
}

impl Exec for FakeHost {
    async fn run(&self, cmd: &HostCommand, timeout: Duration) -> Result<Output, ExecError> {
        let mut w = self.w();
        w.calls.push(Call::Exec(cmd.clone()));
        let program = cmd.program();
        let result = match w
            .replies
            .get_mut(&Program::of(cmd))
            .and_then(VecDeque::pop_front)
        {
            Some(Reply::Exit {
                code,
                stdout,
                stderr,
            }) => Ok(Output {
                code: Some(code),
                stdout,
                stderr,
            }),
            Some(Reply::Timeout) => Err(ExecError::Timeout {
                program,
                after: timeout,
            }),
            Some(Reply::SpawnError) => Err(ExecError::Spawn {
                program,
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
            Some(Reply::WorkThenExit(code)) => {
                let mut out = w.model(cmd);
                out.code = Some(code);
                Ok(out)
            }
            None => Ok(w.model(cmd)),
        };
        if let Some(then) = w
            .after
            .get_mut(&Program::of(cmd))
            .and_then(VecDeque::pop_front)
        {
            w.then(then);
        }
        result
    }
}

impl Sys for FakeHost {
    async fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let w = self.w();
        if path == Path::new("/proc/self/mountinfo") {
            return Ok(w.render_mountinfo());
        }
        match w.fs.get(path) {
            Some(Entry::File(d)) => Ok(String::from_utf8_lossy(d).into_owned()),
            Some(Entry::Dir) => Err(err(Errno::EISDIR)),
            Some(_) => Err(err(Errno::EINVAL)),
            None => Err(err(Errno::ENOENT)),
        }
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let w = self.w();
        match w.fs.get(path) {
            Some(Entry::Dir) => Ok(w.children(path)),
            Some(_) => Err(err(Errno::ENOTDIR)),
            None => Err(err(Errno::ENOENT)),
        }
    }

    async fn lstat(&self, path: &Path) -> io::Result<FileStat> {
        let w = self.w();
        let st = |kind, rdev, size, mode| FileStat {
            kind,
            rdev,
            size,
            mode,
            changed: None,
        };
        match w.fs.get(path) {
            Some(Entry::Dir) => Ok(st(FileKind::Dir, None, 4096, 0o755)),
            Some(Entry::File(d)) => Ok(st(FileKind::File, None, d.len() as u64, 0o644)),
            Some(Entry::Block { dev, mode }) => Ok(st(FileKind::BlockDevice, Some(*dev), 0, *mode)),
            Some(Entry::Char) => Ok(st(FileKind::CharDevice, None, 0, 0o600)),
            None => Err(err(Errno::ENOENT)),
        }
    }

    async fn read_head(&self, device: &Path, len: usize) -> io::Result<Vec<u8>> {
        let w = self.sys_call(Call::ReadHead(device.to_path_buf()), SysOp::ReadHead)?;
        if w.unreadable.contains(device) {
            return Err(err(Errno::EIO));
        }
        match w.fs.get(device) {
            Some(Entry::Block { .. }) => {}
            Some(_) => return Err(err(Errno::ENOTBLK)),
            None => return Err(err(Errno::ENOENT)),
        }
        let vol = w
            .nqn_of_device(device)
            .and_then(|n| w.volumes.get(&n).cloned())
            .unwrap_or_default();
        if (vol.size_bytes as usize) < len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let fill = if vol.fs.is_some() || vol.other.is_some() || vol.raw_data {
            0xa5
        } else {
            0
        };
        Ok(vec![fill; len])
    }

    async fn device_claimed(&self, device: &Path) -> io::Result<bool> {
        let mut w = self.w();
        w.calls.push(Call::DeviceClaimed(device.to_path_buf()));
        Ok(w.claimed.contains(device))
    }

    async fn statfs(&self, path: &Path) -> io::Result<FsStats> {
        let w = self.sys_call(Call::Statfs(path.to_path_buf()), SysOp::Statfs)?;
        if !w.fs.contains_key(path) {
            return Err(err(Errno::ENOENT));
        }
        Ok(w.statfs)
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut w = self.sys_call(Call::CreateDir(path.to_path_buf()), SysOp::CreateDir)?;
        for a in path.ancestors() {
            match w.fs.get(a) {
                Some(Entry::Dir) | None => {}
                Some(_) => {
                    return Err(err(if a == path {
                        Errno::EEXIST
                    } else {
                        Errno::ENOTDIR
                    }))
                }
            }
        }
        w.ensure_dirs(path);
        Ok(())
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut w = self.sys_call(Call::RemoveDir(path.to_path_buf()), SysOp::RemoveDir)?;
        match w.fs.get(path) {
            None => return Err(err(Errno::ENOENT)),
            Some(Entry::Dir) => {}
            Some(_) => return Err(err(Errno::ENOTDIR)),
        }
        if w.is_mount_point(path) {
            return Err(err(Errno::EBUSY));
        }
        if !w.children(path).is_empty() {
            return Err(err(Errno::ENOTEMPTY));
        }
        w.fs.remove(path);
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut w = self.sys_call(Call::RemoveFile(path.to_path_buf()), SysOp::RemoveFile)?;
        match w.fs.get(path) {
            None => return Err(err(Errno::ENOENT)),
            Some(Entry::Dir) => return Err(err(Errno::EISDIR)),
            Some(_) => {}
        }
        if w.is_mount_point(path) {
            return Err(err(Errno::EBUSY));
        }
        w.fs.remove(path);
        Ok(())
    }

    async fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut w = self.sys_call(Call::WriteFile(path.to_path_buf()), SysOp::WriteFile)?;
        w.parent_dir_exists(path)?;
        w.fs.insert(path.to_path_buf(), Entry::File(data.to_vec()));
        Ok(())
    }

    async fn mknod_block(&self, path: &Path, mode: u32, dev: DevId) -> io::Result<()> {
        let mut w = self.sys_call(
            Call::Mknod {
                path: path.to_path_buf(),
                mode,
                dev,
            },
            SysOp::Mknod,
        )?;
        w.parent_dir_exists(path)?;
        if w.fs.contains_key(path) {
            return Err(err(Errno::EEXIST));
        }
        w.fs.insert(path.to_path_buf(), Entry::Block { dev, mode });
        Ok(())
    }

    async fn mount(&self, req: &MountRequest) -> io::Result<()> {
        let mut w = self.sys_call(Call::Mount(req.clone()), SysOp::Mount)?;
        let target = &req.target;
        if req.flags.contains(MsFlags::MS_REMOUNT) {
            let ro = req.flags.contains(MsFlags::MS_RDONLY);
            let Some(m) = w.mounts.iter_mut().rev().find(|m| m.mount_point == *target) else {
                return Err(err(Errno::EINVAL));
            };
            m.options = if ro { "ro,relatime" } else { "rw,relatime" }.into();
            return Ok(());
        }
        if !matches!(w.fs.get(target), Some(Entry::Dir)) {
            return Err(err(Errno::ENOENT));
        }
        let source = req.source.clone().ok_or_else(|| err(Errno::EINVAL))?;
        let id = w.next_mount_id;
        let options = if req.flags.contains(MsFlags::MS_RDONLY) {
            "ro,relatime"
        } else {
            "rw,relatime"
        };
        let mount = if req.flags.contains(MsFlags::MS_BIND) {
            let Some(src) = w
                .mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == source)
                .cloned()
            else {
                return Err(err(Errno::EINVAL));
            };
            Mount {
                id,
                parent: 1,
                mount_point: target.clone(),
                options: options.into(),
                ..src
            }
        } else {
            let dev = match w.fs.get(&source) {
                Some(Entry::Block { dev, .. }) => *dev,
                Some(_) => return Err(err(Errno::ENOTBLK)),
                None => return Err(err(Errno::ENOENT)),
            };
            let fs = w
                .nqn_of_device(&source)
                .and_then(|n| w.volumes.get(&n).and_then(|v| v.fs.clone()));
            let want = req.fstype.clone().unwrap_or_default();
            if fs.as_deref() != Some(want.as_str()) || FsType::parse(&want).is_none() {
                return Err(err(Errno::EINVAL));
            }
            Mount {
                id,
                parent: 1,
                major: dev.major,
                minor: dev.minor,
                root: "/".into(),
                mount_point: target.clone(),
                options: options.into(),
                fs_type: want,
                source: source.to_string_lossy().into_owned(),
            }
        };
        w.next_mount_id += 1;
        w.mounts.push(mount);
        Ok(())
    }

    async fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        let mut w = self.sys_call(
            Call::Umount {
                target: target.to_path_buf(),
                detach,
            },
            SysOp::Umount,
        )?;
        let Some(i) = w.mounts.iter().rposition(|m| m.mount_point == target) else {
            return Err(err(Errno::EINVAL));
        };
        w.mounts.remove(i);
        Ok(())
    }
}
