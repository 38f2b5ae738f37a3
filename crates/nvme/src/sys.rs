//! The filesystem and syscall side of the host: reading sysfs and
//! mountinfo, mount, umount, mknod, statfs, reading a device.
//!
//! One trait, [`Sys`], with the real implementation here ([`RealSys`], over
//! `std` and `nix`) and a recording fake in [`crate::fake`]. Everything that
//! can block on a device (reading it, mounting, statfs on a mount whose
//! device went away) runs on the blocking pool under a deadline, so a dead
//! NVMe path can stall a thread but never an RPC.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use nix::mount::MsFlags;

/// A device number, as sysfs `dev` files and mountinfo print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId {
    pub major: u32,
    pub minor: u32,
}

impl DevId {
    pub const fn new(major: u32, minor: u32) -> Self {
        DevId { major, minor }
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    BlockDevice,
    CharDevice,
    Symlink,
    Other,
}

/// What `lstat` says about a path (a path that is a mount point shows the
/// mounted object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// The device a device node stands for.
    pub rdev: Option<DevId>,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last status change (ctime). For a node devtmpfs has just made, that
    /// is when the kernel created the device (timing only, never decisions).
    pub changed: Option<std::time::SystemTime>,
}

/// Capacity and inode counts of a mounted filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free space an unprivileged writer can use.
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

/// Arguments of one mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub source: Option<PathBuf>,
    pub target: PathBuf,
    pub fstype: Option<String>,
    pub flags: MsFlags,
    pub data: Option<String>,
}

impl MountRequest {
    /// A bind mount (or, with `MS_REMOUNT` and no source, a change of an
    /// existing bind's flags): no filesystem type, no data.
    pub fn bind(source: Option<&Path>, target: &Path, flags: MsFlags) -> Self {
        MountRequest {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: None,
            flags,
            data: None,
        }
    }
}

/// The host's filesystem and mount syscalls.
pub trait Sys: Send + Sync + 'static {
    fn read_to_string(&self, path: &Path) -> impl Future<Output = io::Result<String>> + Send;
    /// Names of a directory's entries (lossy UTF-8), unsorted.
    fn read_dir(&self, path: &Path) -> impl Future<Output = io::Result<Vec<String>>> + Send;
    /// `lstat`: symlinks are not followed.
    fn lstat(&self, path: &Path) -> impl Future<Output = io::Result<FileStat>> + Send;
    /// Reads exactly `len` bytes from the start of a device.
    fn read_head(
        &self,
        device: &Path,
        len: usize,
    ) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
    /// Whether a block device is claimed: an exclusive open (`O_EXCL`)
    /// fails with EBUSY while it is mounted or held by another exclusive
    /// user (device mapper, md, another mount).
    fn device_claimed(&self, device: &Path) -> impl Future<Output = io::Result<bool>> + Send;
    fn statfs(&self, path: &Path) -> impl Future<Output = io::Result<FsStats>> + Send;
    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// rmdir(2): only an empty directory, never recursive.
    fn remove_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// unlink(2) of anything but a directory.
    fn remove_file(&self, path: &Path) -> impl Future<Output = io::Result<()>> + Send;
    /// Replaces a file atomically (write aside, fsync, rename).
    fn write_file(&self, path: &Path, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Creates a block device node with exactly `mode` permissions.
    fn mknod_block(
        &self,
        path: &Path,
        mode: u32,
        dev: DevId,
    ) -> impl Future<Output = io::Result<()>> + Send;
    fn mount(&self, req: &MountRequest) -> impl Future<Output = io::Result<()>> + Send;
    /// umount2(2); `detach` is MNT_DETACH (lazy).
    fn umount(&self, target: &Path, detach: bool) -> impl Future<Output = io::Result<()>> + Send;
}

/// The real host, through `std` and `nix`.
#[derive(Debug, Clone)]
pub struct RealSys {
    /// Deadline for each call that may wait on a device.
    pub io_timeout: Duration,
}

impl RealSys {
    pub fn new(io_timeout: Duration) -> Self {
        RealSys { io_timeout }
    }

    /// Runs `op` on `path` on the blocking pool under the I/O deadline;
    /// `verb` and the path name the call in a timeout error.
    async fn on_path<T, F>(&self, verb: &str, path: &Path, op: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> io::Result<T> + Send + 'static,
    {
        let path_buf = path.to_path_buf();
        let what = format!("{verb} {}", path.display());
        blocking(self.io_timeout, what, move || op(&path_buf)).await
    }
}

/// Runs `f` on the blocking pool under a deadline. On timeout the thread
/// is left to finish (a syscall cannot be cancelled), the caller is not.
async fn blocking<T, F>(timeout: Duration, what: String, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} did not finish within {timeout:?}"),
        )),
        Ok(Err(join)) => Err(io::Error::other(format!("{what}: {join}"))),
        Ok(Ok(r)) => r,
    }
}

fn dev_of(rdev: u64) -> DevId {
    DevId::new(
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    )
}

impl Sys for RealSys {
    async fn read_to_string(&self, path: &Path) -> io::Result<String> {
        // sysfs and procfs answer from memory; no deadline needed.
        std::fs::read_to_string(path)
    }

    async fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(path)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    async fn lstat(&self, path: &Path) -> io::Result<FileStat> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        self.on_path("lstat", path, move |p| {
            let m = std::fs::symlink_metadata(p)?;
            let t = m.file_type();
            let kind = if t.is_dir() {
                FileKind::Dir
            } else if t.is_file() {
                FileKind::File
            } else if t.is_block_device() {
                FileKind::BlockDevice
            } else if t.is_char_device() {
                FileKind::CharDevice
            } else if t.is_symlink() {
                FileKind::Symlink
            } else {
                FileKind::Other
            };
            let rdev = matches!(kind, FileKind::BlockDevice | FileKind::CharDevice)
                .then(|| dev_of(m.rdev()));
            let changed = u64::try_from(m.ctime()).ok().map(|secs| {
                std::time::UNIX_EPOCH
                    + Duration::new(secs, u32::try_from(m.ctime_nsec()).unwrap_or(0))
            });
            Ok(FileStat {
                kind,
                rdev,
                size: m.size(),
                mode: m.mode() & 0o7777,
                changed,
            })
        })
        .await
    }

    async fn read_head(&self, device: &Path, len: usize) -> io::Result<Vec<u8>> {
        use std::io::Read;
        self.on_path("read", device, move |p| {
            let mut f = std::fs::File::open(p)?;
            let mut buf = vec![0u8; len];
            f.read_exact(&mut buf)?;
            Ok(buf)
        })
        .await
    }

    async fn device_claimed(&self, device: &Path) -> io::Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        self.on_path(
            "exclusive open of",
            device,
            move |p| match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
                .open(p)
            {
                Ok(_) => Ok(false),
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => Ok(true),
                Err(e) => Err(e),
            },
        )
        .await
    }

    async fn statfs(&self, path: &Path) -> io::Result<FsStats> {
        self.on_path("statfs", path, move |p| {
            let s = nix::sys::statvfs::statvfs(p)?;
            let frsize = s.fragment_size() as u64;
            Ok(FsStats {
                total_bytes: (s.blocks() as u64).saturating_mul(frsize),
                free_bytes: (s.blocks_free() as u64).saturating_mul(frsize),
                available_bytes: (s.blocks_available() as u64).saturating_mul(frsize),
                total_inodes: s.files() as u64,
                free_inodes: s.files_free() as u64,
            })
        })
        .await
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.on_path("mkdir", path, |p| std::fs::create_dir_all(p))
            .await
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.on_path("rmdir", path, |p| std::fs::remove_dir(p))
            .await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.on_path("unlink", path, |p| std::fs::remove_file(p))
            .await
    }

    async fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let data = data.to_vec();
        self.on_path("write", path, move |p| {
            let mut tmp = p.as_os_str().to_os_string();
            tmp.push(format!(".tmp{}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, p)?;
            if let Some(dir) = p.parent() {
                // Make the rename itself durable; a failure here is not
                // worth failing the call for.
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        })
        .await
    }

    async fn mknod_block(&self, path: &Path, mode: u32, dev: DevId) -> io::Result<()> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        use std::os::unix::fs::PermissionsExt;
        self.on_path("mknod", path, move |p| {
            mknod(
                p,
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(mode),
                makedev(dev.major as u64, dev.minor as u64),
            )?;
            // mknod applies the umask; set the mode we were asked for.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        })
        .await
    }

    async fn mount(&self, req: &MountRequest) -> io::Result<()> {
        let r = req.clone();
        blocking(
            self.io_timeout,
            format!("mount {}", req.target.display()),
            move || {
                nix::mount::mount(
                    r.source.as_deref(),
                    &r.target,
                    r.fstype.as_deref(),
                    r.flags,
                    r.data.as_deref(),
                )
                .map_err(io::Error::from)
            },
        )
        .await
    }

    async fn umount(&self, target: &Path, detach: bool) -> io::Result<()> {
        use nix::mount::MntFlags;
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        self.on_path("umount", target, move |p| {
            nix::mount::umount2(p, flags).map_err(io::Error::from)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_real_host_reads_files_and_directories_without_root() {
        let dir = tempfile::tempdir().unwrap();
        let sys = RealSys::new(Duration::from_secs(5));
        let f = dir.path().join("dev");
        sys.write_file(&f, b"259:3\n").await.unwrap();
        assert_eq!(sys.read_to_string(&f).await.unwrap(), "259:3\n");
        assert_eq!(sys.read_dir(dir.path()).await.unwrap(), vec!["dev"]);
        let st = sys.lstat(&f).await.unwrap();
        assert_eq!(st.kind, FileKind::File);
        assert_eq!(st.size, 6);
        assert_eq!(sys.read_head(&f, 3).await.unwrap(), b"259");
        assert!(sys.read_head(&f, 4096).await.is_err(), "short device");
        let sub = dir.path().join("a/b");
        sys.create_dir_all(&sub).await.unwrap();
        assert!(
            sys.remove_dir(&dir.path().join("a")).await.is_err(),
            "rmdir is never recursive"
        );
        sys.remove_dir(&sub).await.unwrap();
        sys.remove_file(&f).await.unwrap();
        let st = sys.statfs(dir.path()).await.unwrap();
        assert!(st.total_bytes > 0 && st.total_bytes >= st.free_bytes);
    }

    #[test]
    fn dev_ids_print_like_sysfs() {
        assert_eq!(DevId::new(259, 3).to_string(), "259:3");
    }
}
