//! LVM thin volumes: the scripts that make, grow, snapshot and remove
//! them, and the parser of `lvs --reportformat json` output.
//!
//! The methods of [`Lvm`] give single commands; [`script`] puts them in a
//! script that stops at the first failure, with `LC_ALL=C` so the error
//! texts classification reads are LVM's English ones. Sizes are given in
//! bytes (`<n>B`); LVM rounds a volume up to whole extents, so the size
//! reported back is the one to trust.

use serde::Deserialize;

use crate::names::{LvName, PoolName, VgName};
use crate::shell::quote;

/// The columns every volume listing asks for, in the order of [`Lv`].
const LV_COLUMNS: &str = "lv_name,lv_size,origin,lv_tags,pool_lv,lv_attr";
/// `lvs` options for exact, machine-readable output.
const LVS: &str = "lvs --reportformat json --units b --nosuffix";

/// A script of `commands` that stops at the first one that fails.
pub fn script(commands: &[&str]) -> String {
    let mut s = String::from("export LC_ALL=C\nset -e\n");
    for c in commands {
        s.push_str(c);
        s.push('\n');
    }
    s
}

/// A logical volume as `lvs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lv {
    pub name: String,
    pub size_bytes: u64,
    /// The thin volume it is a snapshot of, while that still exists.
    pub origin: Option<String>,
    /// The thin pool it lives in.
    pub pool: Option<String>,
    /// Comma-separated tags, as printed.
    pub tags: String,
    /// `lv_attr`, e.g. `Vwi-a-tz--`.
    pub attr: String,
}

impl Lv {
    /// A thin volume (`V` first in `lv_attr`).
    pub fn is_thin(&self) -> bool {
        self.attr.starts_with('V')
    }

    /// Active (`a` fifth): its device node exists.
    pub fn is_active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }

    /// Skipped by plain activation (`k` tenth), as LVM makes thin snapshots.
    pub fn skips_activation(&self) -> bool {
        self.attr.chars().nth(9) == Some('k')
    }
}

/// Thin pool usage as `lvs` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolUsage {
    pub size_bytes: u64,
    /// Percent of the pool's data space in use.
    pub data_percent: f64,
    /// Percent of its metadata space in use: a full metadata area stops the
    /// pool as surely as full data.
    pub metadata_percent: f64,
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportSection>,
}

#[derive(Deserialize)]
struct ReportSection {
    #[serde(default)]
    lv: Vec<Row>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Row {
    lv_name: String,
    lv_size: String,
    origin: String,
    lv_tags: String,
    pool_lv: String,
    lv_attr: String,
    data_percent: String,
    metadata_percent: String,
}

fn rows(json: &str) -> Result<Vec<Row>, String> {
    let report: Report =
        serde_json::from_str(json).map_err(|e| format!("lvs printed no report: {e}"))?;
    Ok(report.report.into_iter().flat_map(|s| s.lv).collect())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Parses `lvs --reportformat json --units b --nosuffix` output with the
/// volume columns. A row without a name or an integer size is an error:
/// a volume misread as absent could be made twice. Total: never panics.
pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, String> {
    rows(json)?
        .into_iter()
        .map(|r| {
            let size_bytes = r.lv_size.parse().map_err(|_| {
                format!(
                    "size {:?} of {:?} is not a byte count",
                    r.lv_size, r.lv_name
                )
            })?;
            if r.lv_name.is_empty() {
                return Err("a volume without a name".to_string());
            }
            Ok(Lv {
                name: r.lv_name,
                size_bytes,
                origin: non_empty(r.origin),
                pool: non_empty(r.pool_lv),
                tags: r.lv_tags,
                attr: r.lv_attr,
            })
        })
        .collect()
}

/// Parses the pool usage report (`lv_size,data_percent,metadata_percent`
/// of the pool alone). Total: never panics.
pub fn parse_pool(json: &str) -> Result<PoolUsage, String> {
    let rows = rows(json)?;
    let [row] = rows.as_slice() else {
        return Err(format!("expected one thin pool, lvs listed {}", rows.len()));
    };
    let pct = |what: &str, s: &str| -> Result<f64, String> {
        match s.parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
            _ => Err(format!(
                "{what} {s:?} is not a percentage (is it a thin pool?)"
            )),
        }
    };
    Ok(PoolUsage {
        size_bytes: row
            .lv_size
            .parse()
            .map_err(|_| format!("pool size {:?} is not a byte count", row.lv_size))?,
        data_percent: pct("data_percent", &row.data_percent)?,
        metadata_percent: pct("metadata_percent", &row.metadata_percent)?,
    })
}

impl PoolUsage {
    /// Bytes of the pool's data space not yet used (rounded down).
    pub fn free_bytes(&self) -> u64 {
        let used = (self.size_bytes as f64 * self.data_percent / 100.0).ceil();
        self.size_bytes.saturating_sub(used as u64)
    }
}

/// The scripts for one volume group and thin pool.
#[derive(Debug, Clone)]
pub struct Lvm {
    pub vg: VgName,
    pub pool: PoolName,
    /// Where LVM's device nodes are: `/dev`.
    pub dev_root: String,
}

/// A size as LVM takes it in bytes: it refuses any that is not a whole
/// number of 512-byte sectors ("Size is not a multiple of 512"), so round
/// up (LVM rounds further, to whole extents).
fn size_arg(size_bytes: u64) -> String {
    format!("{}B", size_bytes.div_ceil(512).saturating_mul(512))
}

fn addtags(tags: &[String]) -> String {
    tags.iter()
        .map(|t| format!(" --addtag {}", quote(t)))
        .collect()
}

impl Lvm {
    /// `vg/lv`, quoted.
    fn path(&self, lv: &LvName) -> String {
        quote(&format!("{}/{}", self.vg, lv))
    }

    /// The block device of a volume.
    pub fn device(&self, lv: &LvName) -> String {
        format!("{}/{}/{}", self.dev_root, self.vg, lv)
    }

    /// One volume's row; fails with "not found" when it is absent.
    pub fn get(&self, lv: &LvName) -> String {
        format!("{LVS} -o {LV_COLUMNS} {}", self.path(lv))
    }

    /// Every volume of the volume group.
    pub fn list(&self) -> String {
        format!("{LVS} -o {LV_COLUMNS} {}", quote(self.vg.as_str()))
    }

    /// The pool's size and usage.
    pub fn pool_usage(&self) -> String {
        format!(
            "{LVS} -o lv_name,lv_size,data_percent,metadata_percent {}",
            quote(&format!("{}/{}", self.vg, self.pool))
        )
    }

    /// A new thin volume of `size_bytes` in the pool.
    pub fn create(&self, lv: &LvName, size_bytes: u64, tags: &[String]) -> String {
        format!(
            "lvcreate --yes -V {} -T {} -n {}{}",
            size_arg(size_bytes),
            quote(&format!("{}/{}", self.vg, self.pool)),
            quote(lv.as_str()),
            addtags(tags)
        )
    }

    /// A thin snapshot of `source`: shares its blocks, skipped by
    /// activation as LVM makes snapshots (it is only ever read through a
    /// clone).
    pub fn snapshot(&self, source: &LvName, lv: &LvName, tags: &[String]) -> String {
        format!(
            "lvcreate --yes -s {} -n {}{}",
            self.path(source),
            quote(lv.as_str()),
            addtags(tags)
        )
    }

    /// A writable thin snapshot of `source` (a snapshot or a volume) that
    /// activates like any volume, at once and at boot.
    pub fn clone_of(&self, source: &LvName, lv: &LvName, tags: &[String]) -> String {
        format!(
            "lvcreate --yes -s {} -n {} --setactivationskip n -ay{}",
            self.path(source),
            quote(lv.as_str()),
            addtags(tags)
        )
    }

    /// Activation of a volume that may have the skip flag (a clone whose
    /// creation was cut off before it was activated).
    pub fn activate(&self, lv: &LvName) -> String {
        format!(
            "lvchange --setactivationskip n {0} && lvchange -ay {0}",
            self.path(lv)
        )
    }

    /// Grows a volume to `size_bytes`.
    pub fn extend(&self, lv: &LvName, size_bytes: u64) -> String {
        format!("lvextend -L {} {}", size_arg(size_bytes), self.path(lv))
    }

    /// Removes a volume (its nvmet export must be gone: an open volume is
    /// "in use").
    pub fn remove(&self, lv: &LvName) -> String {
        format!("lvremove --yes {}", self.path(lv))
    }

    /// Changes tags; nothing when there is nothing to change.
    pub fn retag(&self, lv: &LvName, remove: &[String], add: &[String]) -> Option<String> {
        if remove.is_empty() && add.is_empty() {
            return None;
        }
        let del: String = remove
            .iter()
            .map(|t| format!(" --deltag {}", quote(t)))
            .collect();
        Some(format!("lvchange{del}{} {}", addtags(add), self.path(lv)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::VolumeName;
    use proptest::prelude::*;

    /// `lvs` of a volume group with linear volumes, as lvm2 2.03.16
    /// printed it on this project's development host (no device-mapper
    /// there, so no thin pool could be made).
    const LINEAR: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"handmade", "lv_size":"8388608", "origin":"", "lv_tags":"", "pool_lv":"", "lv_attr":"-wi-XX----"},
                  {"lv_name":"pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3", "lv_size":"104857600", "origin":"", "lv_tags":"rds-csi,rds-csi.cluster=abc,rds-csi.created=2026-12-07T11:00:00Z", "pool_lv":"", "lv_attr":"-wi-XX----"}
              ]
          }
      ]
  }
"#;

    /// The same report for a thin pool, a volume in it and an inactive
    /// thin snapshot: the shape lvm2 prints (its `lv_attr` letters per
    /// lvs(8)); not captured from a run here, for want of device-mapper.
    const THIN: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"pool", "lv_size":"1073741824", "origin":"", "lv_tags":"", "pool_lv":"", "lv_attr":"twi-aotz--"},
                  {"lv_name":"pvc-1", "lv_size":"104857600", "origin":"", "lv_tags":"rds-csi", "pool_lv":"pool", "lv_attr":"Vwi-aotz--"},
                  {"lv_name":"snap-1", "lv_size":"104857600", "origin":"pvc-1", "lv_tags":"rds-csi,rds-csi.snapshot-of=pvc-1", "pool_lv":"pool", "lv_attr":"Vwi---tz-k"}
              ]
          }
      ]
  }
"#;

    #[test]
    fn a_real_lvs_report_parses_with_exact_sizes_and_tags() {
        let lvs = parse_lvs(LINEAR).unwrap();
        assert_eq!(lvs.len(), 2);
        assert_eq!(lvs[1].name, "pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3");
        assert_eq!(lvs[1].size_bytes, 104_857_600);
        assert_eq!(lvs[1].origin, None);
        assert!(lvs[1].tags.contains("rds-csi.cluster=abc"));
        assert!(!lvs[1].is_thin());
    }

    #[test]
    fn thin_volumes_snapshots_and_their_activation_read_from_the_attributes() {
        let lvs = parse_lvs(THIN).unwrap();
        let (vol, snap) = (&lvs[1], &lvs[2]);
        assert!(vol.is_thin() && vol.is_active() && !vol.skips_activation());
        assert_eq!(vol.pool.as_deref(), Some("pool"));
        assert!(snap.is_thin() && !snap.is_active() && snap.skips_activation());
        assert_eq!(snap.origin.as_deref(), Some("pvc-1"));
    }

    #[test]
    fn a_report_that_is_not_one_is_an_error_not_an_empty_list() {
        assert!(parse_lvs("").is_err());
        assert!(parse_lvs("  Volume group \"x\" not found").is_err());
        let no_size = r#"{"report":[{"lv":[{"lv_name":"a","lv_size":"1.5"}]}]}"#;
        assert!(parse_lvs(no_size).is_err());
        assert_eq!(parse_lvs(r#"{"report":[{"lv":[]}]}"#).unwrap(), vec![]);
    }

    #[test]
    fn pool_usage_gives_free_bytes() {
        let json = r#"{"report":[{"lv":[{"lv_name":"pool","lv_size":"1073741824","data_percent":"25.00","metadata_percent":"10.49"}]}]}"#;
        let u = parse_pool(json).unwrap();
        assert_eq!(u.free_bytes(), 805_306_368);
        assert_eq!(u.metadata_percent, 10.49);
        // A linear volume has no data_percent: not a thin pool.
        let linear = r#"{"report":[{"lv":[{"lv_name":"x","lv_size":"8388608","data_percent":"","metadata_percent":""}]}]}"#;
        assert!(parse_pool(linear).unwrap_err().contains("thin pool"));
    }

    #[test]
    fn scripts_name_the_pool_the_volume_and_sizes_in_bytes() {
        let lvm = Lvm {
            vg: VgName::new("vg0").unwrap(),
            pool: PoolName::new("thin").unwrap(),
            dev_root: "/dev".into(),
        };
        let v = LvName::of(&lvm.vg, &VolumeName::new("pvc-1").unwrap());
        let s = LvName::of(&lvm.vg, &VolumeName::new("snap-1").unwrap());
        let tags = vec![
            "rds-csi".to_string(),
            "rds-csi.snapshot-of=pvc-1".to_string(),
        ];
        assert!(lvm
            .create(&v, 1 << 30, &tags[..1])
            .ends_with("lvcreate --yes -V 1073741824B -T vg0/thin -n pvc-1 --addtag rds-csi"));
        assert!(lvm.snapshot(&v, &s, &tags).contains(
            "lvcreate --yes -s vg0/pvc-1 -n snap-1 --addtag rds-csi --addtag 'rds-csi.snapshot-of=pvc-1'"
        ));
        assert!(lvm
            .clone_of(&s, &v, &[])
            .contains("-s vg0/snap-1 -n pvc-1 --setactivationskip n -ay"));
        assert!(lvm
            .extend(&v, 2 << 30)
            .contains("lvextend -L 2147483648B vg0/pvc-1"));
        assert!(lvm.remove(&v).contains("lvremove --yes vg0/pvc-1"));
        // LVM takes only whole sectors.
        assert!(lvm.create(&v, 10_000_000, &[]).contains("-V 10000384B"));
        assert!(lvm.extend(&v, 1).contains("-L 512B"));
        assert_eq!(lvm.retag(&v, &[], &[]), None);
        assert_eq!(lvm.device(&v), "/dev/vg0/pvc-1");
    }

    proptest! {
        #[test]
        fn the_lvs_parsers_never_panic(s in any::<String>()) {
            let _ = parse_lvs(&s);
            let _ = parse_pool(&s);
        }

        #[test]
        fn the_lvs_parsers_never_panic_on_report_shaped_input(
            name in any::<String>(), size in any::<String>(), pct in any::<String>()
        ) {
            let json = serde_json::json!({"report": [{"lv": [{
                "lv_name": name, "lv_size": size, "data_percent": pct, "metadata_percent": pct
            }]}]}).to_string();
            let _ = parse_lvs(&json);
            let _ = parse_pool(&json);
        }
    }
}
