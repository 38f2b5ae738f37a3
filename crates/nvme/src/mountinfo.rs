//! Parser for `/proc/self/mountinfo`.
//!
//! A pure function over the file's text, so it can be tested on captured
//! samples and fuzzed: it never panics, and skips lines it cannot read
//! rather than guessing. Every mount decision of the node is taken on this
//! table, re-read each time (a mount made by someone else between two
//! calls must be seen).

use std::path::{Path, PathBuf};

use crate::sys::DevId;

/// One mount, with the fields the driver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the mounted device.
    pub major: u32,
    pub minor: u32,
    /// Path inside the source filesystem (a bind mount shows its source).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..(i + 4).min(b.len())];
            if oct.len() == 3 && oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if v <= 255 {
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the whole file.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    let root = PathBuf::from(unescape(fields.next()?));
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let options = fields.next()?.to_string();
    // Optional fields end at a lone "-".
    for f in fields.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fs_type = fields.next()?.to_string();
    let source = unescape(fields.next()?);
    Some(Mount {
        id,
        parent,
        major,
        minor,
        root,
        mount_point,
        options,
        fs_type,
        source,
    })
}

impl Mount {
    pub fn dev(&self) -> DevId {
        DevId::new(self.major, self.minor)
    }

    /// Whether this mount (not its superblock) is read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Whether `path` is a mount point in the given table.
pub fn is_mount_point(mounts: &[Mount], path: &Path) -> bool {
    mounts.iter().any(|m| m.mount_point == path)
}

/// The mount visible at `path`: the last one mounted there (mounts stack,
/// and the table lists them in mount order).
pub fn top_mount<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// Every mount of a device, wherever it is.
pub fn mounts_of(mounts: &[Mount], dev: DevId) -> impl Iterator<Item = &Mount> {
    mounts.iter().filter(move |m| m.dev() == dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=4096k
812 22 259:3 / /var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/abc/globalmount rw,relatime shared:400 - ext4 /dev/nvme1n1 rw
813 22 259:3 / /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount rw,relatime shared:400 - ext4 /dev/nvme1n1 rw
900 22 0:50 / /mnt/with\\040space rw master:3 unbindable - tmpfs tmp\\040fs rw
";

    #[test]
    fn a_captured_table_parses_with_devices_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[2].major, 259);
        assert_eq!(m[2].minor, 3);
        assert_eq!(m[2].fs_type, "ext4");
        assert_eq!(m[2].source, "/dev/nvme1n1");
        assert_eq!(m[4].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[4].source, "tmp fs");
        assert_eq!(m[4].fs_type, "tmpfs");
        assert!(is_mount_point(
            &m,
            Path::new("/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount")
        ));
        assert!(!is_mount_point(&m, Path::new("/var/lib/kubelet/pods")));
        assert_eq!(mounts_of(&m, DevId::new(259, 3)).count(), 2);
        assert!(!m[2].read_only());
    }

    #[test]
    fn the_top_of_stacked_mounts_is_the_last_one() {
        let m = parse(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 259:1 / /mnt ro,relatime - ext4 /dev/nvme0n1 rw\n\
             3 1 259:7 / /mnt rw - ext4 /dev/nvme2n1 rw\n",
        );
        assert_eq!(
            top_mount(&m, Path::new("/mnt")).unwrap().dev(),
            DevId::new(259, 7)
        );
        assert!(m[1].read_only());
        assert!(top_mount(&m, Path::new("/other")).is_none());
    }

    #[test]
    fn a_kubelet_node_table_parses() {
        let m = parse(include_str!("../tests/fixtures/mountinfo-kubelet.txt"));
        assert_eq!(m.len(), 11, "{m:?}");
        let spaced = top_mount(&m, Path::new("/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/with space/globalmount")).unwrap();
        assert_eq!(spaced.fs_type, "xfs");
        let staged = top_mount(
            &m,
            Path::new(
                "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/0b1c/globalmount",
            ),
        )
        .unwrap();
        assert_eq!(staged.fs_type, "ext4");
        assert_eq!(staged.source, "/dev/nvme0n1");
        let bind = top_mount(
            &m,
            Path::new("/var/lib/kubelet/pods/7f3a/volumes/kubernetes.io~csi/pvc-1/mount"),
        )
        .unwrap();
        assert_eq!(bind.dev(), staged.dev());
        assert!(bind.read_only());
    }

    #[test]
    fn a_table_captured_on_a_build_machine_parses_completely() {
        let text = include_str!("../tests/fixtures/mountinfo-host.txt");
        let m = parse(text);
        assert_eq!(m.len(), text.lines().count());
        assert!(is_mount_point(&m, Path::new("/proc")));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse("garbage\n1 2\n1 2 3:4 / /x rw\n").is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_mountinfo_like_lines(s in r"([0-9]{1,3} [0-9]{1,3} [0-9]{1,3}:[0-9]{1,3} [/a-z\\0-7]{0,8} [/a-z\\0-7]{0,8} [a-z,]{0,6}( [a-z:0-9]{0,6}){0,2}( -)? [a-z0-9]{0,5} [/a-z\\]{0,6} [a-z]{0,3}\n){0,4}") {
            let _ = parse(&s);
        }
    }
}
