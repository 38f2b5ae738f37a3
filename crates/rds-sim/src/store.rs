//! Where backing files live: nowhere (memory) or as sparse files in a
//! directory that stands for the pool's mount point.
//!
//! Names come from SSH clients, so they are checked component by component
//! before they ever touch the host file system: no `..`, no absolute
//! escapes, no symlinks followed when scanning.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Splits a RouterOS file name (`storage-pool/dir/x.img`, leading slash
/// optional) into components, refusing anything that could leave the pool
/// directory or that RouterOS would not accept as a name.
pub(crate) fn split_name(name: &str) -> Option<Vec<&str>> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.chars().any(|c| c.is_control()));
    ok.then_some(parts)
}

#[derive(Debug, Clone)]
pub(crate) struct Scanned {
    pub files: Vec<(String, u64, SystemTime)>,
    pub dirs: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Store {
    Memory,
    Dir(PathBuf),
}

impl Store {
    /// Host path for a pool file name; `None` in memory mode or for a name
    /// outside the pool.
    pub(crate) fn path(&self, pool: &str, name: &str) -> Option<PathBuf> {
        let Store::Dir(root) = self else {
            return None;
        };
        let parts = split_name(name)?;
        let (first, rest) = parts.split_first()?;
        if *first != pool {
            return None;
        }
        let mut path = root.clone();
        path.extend(rest);
        Some(path)
    }

    pub(crate) fn create_sparse(&self, pool: &str, name: &str, size: u64) -> io::Result<()> {
        let Some(path) = self.path(pool, name) else {
            return Ok(());
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // set_len on a fresh file allocates nothing: the file is all hole.
        file.set_len(size)
    }

    pub(crate) fn resize(&self, pool: &str, name: &str, size: u64) -> io::Result<()> {
        let Some(path) = self.path(pool, name) else {
            return Ok(());
        };
        OpenOptions::new().write(true).open(path)?.set_len(size)
    }

    pub(crate) fn copy(&self, pool: &str, src: &str, dst: &str, size: u64) -> io::Result<()> {
        let (Some(src), Some(dst)) = (self.path(pool, src), self.path(pool, dst)) else {
            return Ok(());
        };
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        let source = File::open(&src)?;
        let target = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&dst)?;
        let result = copy_contents(&source, &target).and_then(|()| target.set_len(size));
        if result.is_err() {
            let _ = fs::remove_file(&dst);
        }
        result
    }

    /// Makes the directory `name` (a subvolume's).
    pub(crate) fn create_dir(&self, pool: &str, name: &str) -> io::Result<()> {
        match self.path(pool, name) {
            Some(path) => fs::create_dir_all(path),
            None => Ok(()),
        }
    }

    /// Replaces the contents of the existing file `dst` with those of `src`,
    /// then gives it `size` bytes: what a finished byte copy leaves.
    pub(crate) fn overwrite(&self, pool: &str, src: &str, dst: &str, size: u64) -> io::Result<()> {
        let (Some(src), Some(dst)) = (self.path(pool, src), self.path(pool, dst)) else {
            return Ok(());
        };
        let source = File::open(&src)?;
        let target = OpenOptions::new().read(true).write(true).open(&dst)?;
        // Emptied first, so blocks the source has as holes read back as
        // zeros instead of the destination's old data.
        target.set_len(0)?;
        copy_contents(&source, &target)?;
        target.set_len(size)
    }

    pub(crate) fn remove_file(&self, pool: &str, name: &str) -> io::Result<()> {
        match self.path(pool, name) {
            Some(path) => ignore_missing(fs::remove_file(path)),
            None => Ok(()),
        }
    }

    pub(crate) fn remove_dir(&self, pool: &str, name: &str) -> io::Result<()> {
        match self.path(pool, name) {
            Some(path) => ignore_missing(fs::remove_dir(path)),
            None => Ok(()),
        }
    }

    /// Files and directories already under the pool directory, so a restarted
    /// simulator sees leftovers the way a rebooted RDS would.
    pub(crate) fn scan(&self, pool: &str) -> io::Result<Scanned> {
        let mut scanned = Scanned {
            files: Vec::new(),
            dirs: Vec::new(),
        };
        if let Store::Dir(root) = self {
            fs::create_dir_all(root)?;
            walk(root, pool, &mut scanned)?;
        }
        Ok(scanned)
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Scanned) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let name = format!("{prefix}/{file_name}");
        if split_name(&name).is_none() {
            continue;
        }
        let meta = entry.metadata()?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            out.dirs.push(name.clone());
            walk(&entry.path(), &name, out)?;
        } else if ft.is_file() {
            let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
            out.files.push((name, meta.len(), modified));
        }
    }
    Ok(())
}

/// Copy-on-write where the file system can (btrfs, xfs), otherwise a copy
/// that only writes the source's data extents, so a snapshot of a mostly
/// empty 100 GiB volume does not write 100 GiB of zeros.
#[cfg(target_os = "linux")]
fn copy_contents(src: &File, dst: &File) -> io::Result<()> {
    use rustix::fs::{seek, SeekFrom};
    use rustix::io::Errno;

    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let len = src.metadata()?.len();
    let mut pos = 0;
    while pos < len {
        let data = match seek(src, SeekFrom::Data(pos)) {
            Ok(offset) => offset,
            Err(Errno::NXIO) => break,
            // SEEK_DATA unsupported here: read everything, skip zero blocks.
            Err(_) => return copy_range(src, dst, pos, len),
        };
        let hole = seek(src, SeekFrom::Hole(data)).unwrap_or(len).min(len);
        copy_range(src, dst, data, hole)?;
        pos = hole.max(data + 1);
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_contents(src: &File, dst: &File) -> io::Result<()> {
    copy_range(src, dst, 0, src.metadata()?.len())
}

/// Copies `[from, to)` in blocks, leaving all-zero blocks as holes.
fn copy_range(src: &File, dst: &File, from: u64, to: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const BLOCK: usize = 1 << 20;
    let mut buf = vec![0u8; BLOCK];
    let (mut src, mut dst) = (src, dst);
    let mut pos = from;
    while pos < to {
        let want = usize::try_from((to - pos).min(BLOCK as u64)).unwrap_or(BLOCK);
        src.seek(SeekFrom::Start(pos))?;
        let n = src.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_pool_are_refused() {
        assert!(split_name("storage-pool/a/b.img").is_some());
        assert!(split_name("/storage-pool/a/b.img").is_some());
        for bad in [
            "",
            "/",
            "storage-pool//x",
            "storage-pool/../etc/passwd",
            "storage-pool/./x",
            "storage-pool/x\0y",
            "storage-pool/x/",
        ] {
            assert!(split_name(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn dir_store_maps_pool_names_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Dir(dir.path().to_path_buf());
        assert_eq!(
            store.path("storage-pool", "/storage-pool/m/x.img"),
            Some(dir.path().join("m").join("x.img"))
        );
        assert_eq!(store.path("storage-pool", "other/x.img"), None);
        assert_eq!(store.path("storage-pool", "storage-pool/../x"), None);
    }

    #[test]
    fn copies_keep_data_and_holes() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Dir(dir.path().to_path_buf());
        store.create_sparse("p", "p/a.img", 8 << 20).unwrap();
        {
            let mut f = OpenOptions::new()
                .write(true)
                .open(dir.path().join("a.img"))
                .unwrap();
            f.seek(SeekFrom::Start(3 << 20)).unwrap();
            f.write_all(b"hello").unwrap();
        }
        store.copy("p", "p/a.img", "p/s/b.img", 16 << 20).unwrap();
        let copied = fs::read(dir.path().join("s").join("b.img")).unwrap();
        assert_eq!(copied.len(), 16 << 20);
        assert_eq!(&copied[3 << 20..(3 << 20) + 5], b"hello");
        assert!(store.copy("p", "p/a.img", "p/s/b.img", 1).is_err());
    }
}
