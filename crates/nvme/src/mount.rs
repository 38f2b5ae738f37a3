//! Mount options and the state of a path in the mount table. Pure.

use std::path::Path;

use crate::mountinfo::{top_mount, Mount};
use crate::sys::{DevId, MsFlags};

/// Mount options split into the generic flags of mount(2) and the
/// filesystem's own data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// The options to mount a filesystem of type `fs` with: XFS gets
    /// `nouuid`, since a clone or restore of a volume carries its source's
    /// filesystem UUID, and XFS refuses to mount a second filesystem with a
    /// UUID already mounted on the node (a clone beside its source). Two
    /// mounts of one device are the same superblock either way.
    pub fn for_fs(&self, fs: crate::FsType) -> MountOptions {
        let mut o = self.clone();
        if fs == crate::FsType::Xfs && !o.data.iter().any(|d| d == "nouuid") {
            o.data.push("nouuid".into());
        }
        o
    }

    /// The flags a bind mount can carry (it ignores filesystem data).
    pub fn bind_flags(&self) -> MsFlags {
        self.flags
            & (MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_RELATIME
                | MsFlags::MS_STRICTATIME)
    }
}

/// Parses CSI `mount_flags` (each may hold several comma-separated
/// options). Options that would change what gets mounted rather than how
/// (bind, move, remount, propagation) are refused.
pub fn parse_mount_flags(flags: &[String]) -> Result<MountOptions, String> {
    let mut o = MountOptions::default();
    for opt in flags.iter().flat_map(|f| f.split(',')) {
        let opt = opt.trim();
        if opt.is_empty() || opt == "defaults" {
            continue;
        }
        if opt.len() > 256
            || !opt
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=_-.:/+".contains(c))
        {
            return Err(format!(
                "mount option {:?} has characters other than letters, digits and =_-.:/+",
                opt.chars().take(64).collect::<String>()
            ));
        }
        let set = |o: &mut MountOptions, f: MsFlags| o.flags.insert(f);
        let clear = |o: &mut MountOptions, f: MsFlags| o.flags.remove(f);
        match opt {
            "ro" => set(&mut o, MsFlags::MS_RDONLY),
            "rw" => clear(&mut o, MsFlags::MS_RDONLY),
            "nosuid" => set(&mut o, MsFlags::MS_NOSUID),
            "suid" => clear(&mut o, MsFlags::MS_NOSUID),
            "nodev" => set(&mut o, MsFlags::MS_NODEV),
            "dev" => clear(&mut o, MsFlags::MS_NODEV),
            "noexec" => set(&mut o, MsFlags::MS_NOEXEC),
            "exec" => clear(&mut o, MsFlags::MS_NOEXEC),
            "sync" => set(&mut o, MsFlags::MS_SYNCHRONOUS),
            "async" => clear(&mut o, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => set(&mut o, MsFlags::MS_DIRSYNC),
            "noatime" => set(&mut o, MsFlags::MS_NOATIME),
            "atime" => clear(&mut o, MsFlags::MS_NOATIME),
            "nodiratime" => set(&mut o, MsFlags::MS_NODIRATIME),
            "diratime" => clear(&mut o, MsFlags::MS_NODIRATIME),
            "relatime" => set(&mut o, MsFlags::MS_RELATIME),
            "norelatime" => clear(&mut o, MsFlags::MS_RELATIME),
            "strictatime" => set(&mut o, MsFlags::MS_STRICTATIME),
            "lazytime" => set(&mut o, MsFlags::MS_LAZYTIME),
            "nolazytime" => clear(&mut o, MsFlags::MS_LAZYTIME),
            "bind" | "rbind" | "move" | "remount" | "shared" | "rshared" | "slave" | "rslave"
            | "private" | "rprivate" | "unbindable" | "runbindable" | "loop" => {
                return Err(format!("mount option {opt:?} is not allowed"))
            }
            _ => o.data.push(opt.to_string()),
        }
    }
    Ok(o)
}

/// What is mounted at a path, judged against the devices the volume's NQN
/// resolves to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    NotMounted,
    /// The top mount is one of the volume's current devices.
    Current(Mount),
    /// Some other device: the volume's device before a controller was
    /// renumbered, or something that is not this volume at all.
    Other(Mount),
}

pub fn classify(mounts: &[Mount], path: &Path, current: &[DevId]) -> MountState {
    match top_mount(mounts, path) {
        None => MountState::NotMounted,
        Some(m) if current.contains(&m.dev()) => MountState::Current(m.clone()),
        Some(m) => MountState::Other(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse;
    use proptest::prelude::*;

    fn flags(v: &[&str]) -> Result<MountOptions, String> {
        parse_mount_flags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn xfs_is_mounted_without_its_uuid_check_so_a_clone_mounts_beside_its_source() {
        let o = flags(&["noatime"]).unwrap();
        let x = o.for_fs(crate::FsType::Xfs);
        assert_eq!(x.data_string().as_deref(), Some("nouuid"));
        assert_eq!(x.flags, o.flags);
        assert_eq!(x.for_fs(crate::FsType::Xfs), x, "added once");
        assert_eq!(o.for_fs(crate::FsType::Ext4), o);
    }

    #[test]
    fn generic_flags_and_filesystem_data_are_separated() {
        let o = flags(&["noatime", "discard,nosuid", "data=ordered", "defaults"]).unwrap();
        assert!(o.flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_NOSUID));
        assert_eq!(o.data, vec!["discard", "data=ordered"]);
        assert_eq!(o.data_string().as_deref(), Some("discard,data=ordered"));
        assert_eq!(o.bind_flags(), MsFlags::MS_NOATIME | MsFlags::MS_NOSUID);
        assert!(flags(&["ro", "rw"]).unwrap().flags.is_empty());
        assert_eq!(flags(&[]).unwrap(), MountOptions::default());
    }

    #[test]
    fn options_that_change_what_is_mounted_are_refused() {
        for bad in [
            "bind",
            "rbind",
            "remount",
            "shared",
            "a b",
            "x;y",
            "uid=$(id)",
        ] {
            assert!(flags(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_top_mount_decides_the_state() {
        let m = parse(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 259:1 / /s rw - ext4 /dev/nvme0n1 rw\n",
        );
        let s = Path::new("/s");
        assert!(matches!(
            classify(&m, s, &[DevId::new(259, 1)]),
            MountState::Current(_)
        ));
        assert!(matches!(
            classify(&m, s, &[DevId::new(259, 9)]),
            MountState::Other(_)
        ));
        assert!(matches!(classify(&m, s, &[]), MountState::Other(_)));
        assert_eq!(
            classify(&m, Path::new("/t"), &[DevId::new(259, 1)]),
            MountState::NotMounted
        );
    }

    proptest! {
        #[test]
        fn mount_flag_parsing_never_panics(v in proptest::collection::vec(any::<String>(), 0..4)) {
            let _ = parse_mount_flags(&v);
        }
    }
}
