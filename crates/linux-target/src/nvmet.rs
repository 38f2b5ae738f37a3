//! The kernel NVMe target (nvmet) through configfs: the scripts that
//! export a volume, admit and remove hosts, cut connections and unexport,
//! and the parser of what the read script prints.
//!
//! Layout under the configfs root (`/sys/kernel/config/nvmet`):
//!
//! ```text
//! subsystems/<nqn>/attr_allow_any_host = 0          (always)
//! subsystems/<nqn>/allowed_hosts/<host> -> hosts/<host>
//! subsystems/<nqn>/namespaces/1/{device_path = /dev/<vg>/<lv>, enable = 1}
//! ports/<id>/{addr_trtype = tcp, addr_adrfam, addr_traddr, addr_trsvcid}
//! ports/<id>/subsystems/<nqn> -> subsystems/<nqn>
//! ```
//!
//! Every script is one round trip and idempotent: each step looks before it
//! acts (`[ -d ] || mkdir`, `[ -L ] || ln -s`, an attribute written only
//! when it differs), so a retry after a step that was cut off completes it,
//! and exporting the same thing twice changes nothing. State is only ever
//! read back from configfs, never kept elsewhere. A subsystem is linked to
//! its port last, after `attr_allow_any_host=0` and its hosts: it is never
//! reachable before it is locked down.

use crate::error::EXIT_NOT_READY;
use crate::names::{Nqn, PortSpec};
use crate::shell::quote;

/// Where the kernel target's configfs tree is.
pub const DEFAULT_CONFIGFS: &str = "/sys/kernel/config/nvmet";
/// The namespace every export uses, as on an RDS.
pub const NSID: u32 = 1;

/// What a port's attributes read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortState {
    pub id: String,
    pub trtype: String,
    pub adrfam: String,
    pub traddr: String,
    pub trsvcid: String,
}

/// A namespace of a subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceState {
    pub nsid: String,
    pub enabled: bool,
    pub device_path: String,
}

/// What a subsystem reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsystemState {
    pub nqn: String,
    /// `None` when the attribute could not be read.
    pub allow_any_host: Option<bool>,
    /// Host NQNs linked into `allowed_hosts/`, sorted.
    pub hosts: Vec<String>,
    pub namespaces: Vec<NamespaceState>,
    /// IDs of the ports it is linked to.
    pub ports: Vec<String>,
}

/// Everything one read script printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    pub ports: Vec<PortState>,
    pub subsystems: Vec<SubsystemState>,
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// Parses what [`Nvmet::read`] prints. Strict: a line it does not know, or
/// a subsystem not closed by `end` (output cut short), is an error rather
/// than a state with hosts or links missing. Total: never panics.
pub fn parse_dump(text: &str) -> Result<Dump, String> {
    let mut dump = Dump::default();
    let mut open: Option<SubsystemState> = None;
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || {
            format!(
                "unexpected line {:?}",
                line.chars().take(120).collect::<String>()
            )
        };
        match (word, open.as_mut()) {
            ("port", None) => {
                let mut fields = rest.split(' ');
                let mut p = PortState {
                    id: fields.next().unwrap_or_default().to_string(),
                    ..PortState::default()
                };
                for field in fields {
                    let (k, v) = field.split_once('=').ok_or_else(bad)?;
                    let slot = match k {
                        "trtype" => &mut p.trtype,
                        "adrfam" => &mut p.adrfam,
                        "traddr" => &mut p.traddr,
                        "trsvcid" => &mut p.trsvcid,
                        _ => return Err(bad()),
                    };
                    *slot = v.to_string();
                }
                if p.id.is_empty() {
                    return Err(bad());
                }
                dump.ports.push(p);
            }
            ("subsystem", None) if !rest.is_empty() => {
                open = Some(SubsystemState {
                    nqn: rest.to_string(),
                    ..SubsystemState::default()
                });
            }
            ("allow_any_host", Some(s)) => s.allow_any_host = flag(rest),
            ("host", Some(s)) if !rest.is_empty() => s.hosts.push(rest.to_string()),
            ("link", Some(s)) if !rest.is_empty() => s.ports.push(rest.to_string()),
            ("namespace", Some(s)) => {
                let (nsid, rest) = rest.split_once(' ').ok_or_else(bad)?;
                let (enable, device) = rest.split_once(' ').ok_or_else(bad)?;
                let enable = enable.strip_prefix("enable=").ok_or_else(bad)?;
                let device = device.strip_prefix("device=").ok_or_else(bad)?;
                s.namespaces.push(NamespaceState {
                    nsid: nsid.to_string(),
                    enabled: flag(enable) == Some(true),
                    device_path: device.to_string(),
                });
            }
            ("end", Some(_)) if rest.is_empty() => {
                if let Some(mut s) = open.take() {
                    s.hosts.sort();
                    dump.subsystems.push(s);
                }
            }
            _ => return Err(bad()),
        }
    }
    if let Some(s) = open {
        return Err(format!("the listing of {:?} was cut short", s.nqn));
    }
    Ok(dump)
}

/// The scripts for one configfs root and port.
#[derive(Debug, Clone)]
pub struct Nvmet {
    /// The configfs root, validated as a plain absolute path.
    pub root: String,
    pub port: PortSpec,
}

/// Which subsystems a read lists.
#[derive(Debug, Clone, Copy)]
pub enum Select<'a> {
    /// Exactly this one.
    One(&'a Nqn),
    /// Every one whose NQN starts with this.
    Prefix(&'a str),
}

impl Nvmet {
    /// The start of every script: English errors, the root in `$R`, and a
    /// clear failure (never "not found") when there is no nvmet tree.
    fn prelude(&self) -> String {
        format!(
            "export LC_ALL=C\nR={root}\n\
             if [ ! -d \"$R/subsystems\" ] || [ ! -d \"$R/ports\" ]; then \
             echo \"no nvmet configfs at $R (is the nvmet module loaded and configfs mounted?)\" >&2; \
             exit {EXIT_NOT_READY}; fi\n",
            root = quote(&self.root)
        )
    }

    /// `$S`: the subsystem's directory.
    fn subsystem(nqn: &Nqn) -> String {
        format!("S=\"$R/subsystems/\"{}\n", quote(nqn.as_str()))
    }

    /// Lists the ports and the selected subsystems, one round trip.
    pub fn read(&self, select: Select<'_>) -> String {
        let glob = match select {
            Select::One(nqn) => quote(nqn.as_str()),
            Select::Prefix(p) => format!("{}*", quote(p)),
        };
        format!(
            "{prelude}\
for p in \"$R\"/ports/*; do if [ -d \"$p\" ]; then \
printf 'port %s trtype=%s adrfam=%s traddr=%s trsvcid=%s\\n' \"${{p##*/}}\" \
\"$(cat \"$p/addr_trtype\" 2>/dev/null)\" \"$(cat \"$p/addr_adrfam\" 2>/dev/null)\" \
\"$(cat \"$p/addr_traddr\" 2>/dev/null)\" \"$(cat \"$p/addr_trsvcid\" 2>/dev/null)\"; fi; done
cd \"$R/subsystems\"
for s in {glob}; do if [ -d \"$s\" ]; then
printf 'subsystem %s\\n' \"$s\"
printf 'allow_any_host %s\\n' \"$(cat \"$s/attr_allow_any_host\" 2>/dev/null)\"
for h in \"$s\"/allowed_hosts/*; do if [ -L \"$h\" ]; then printf 'host %s\\n' \"${{h##*/}}\"; fi; done
for n in \"$s\"/namespaces/*; do if [ -d \"$n\" ]; then \
printf 'namespace %s enable=%s device=%s\\n' \"${{n##*/}}\" \"$(cat \"$n/enable\" 2>/dev/null)\" \
\"$(cat \"$n/device_path\" 2>/dev/null)\"; fi; done
for p in \"$R\"/ports/*; do if [ -L \"$p/subsystems/$s\" ]; then printf 'link %s\\n' \"${{p##*/}}\"; fi; done
printf 'end\\n'
fi; done
",
            prelude = self.prelude()
        )
    }

    /// The steps that admit `hosts` to the subsystem in `$S`.
    fn allow_steps(hosts: &[Nqn]) -> String {
        hosts
            .iter()
            .map(|h| {
                let h = quote(h.as_str());
                format!(
                    "[ -d \"$R/hosts/\"{h} ] || mkdir \"$R/hosts/\"{h}\n\
                     [ -L \"$S/allowed_hosts/\"{h} ] || ln -s \"$R/hosts/\"{h} \"$S/allowed_hosts/\"{h}\n"
                )
            })
            .collect()
    }

    /// Exports `device` (the volume `lv_path`, `vg/lv`, activated first if
    /// it is not) as subsystem `nqn` with namespace 1, admitting `hosts`
    /// (others already admitted stay; with `exact` they are removed), and
    /// links it to the port. Refuses (never rewrites) a namespace enabled
    /// on another device or a port in use with another address.
    pub fn export(
        &self,
        nqn: &Nqn,
        device: &str,
        lv_path: &str,
        hosts: &[Nqn],
        exact: bool,
    ) -> String {
        let p = &self.port;
        let dev = quote(device);
        let port_attr = |attr: &str, value: &str| {
            let value = quote(value);
            format!(
                "if [ \"$(cat \"$P/{attr}\" 2>/dev/null)\" != {value} ]; then \
                 if [ -n \"$(ls \"$P/subsystems\")\" ]; then \
                 echo \"nvmet port {id} is in use with {attr}=$(cat \"$P/{attr}\"), not \"{value} >&2; exit {EXIT_NOT_READY}; fi; \
                 echo {value} > \"$P/{attr}\"; fi\n",
                id = p.id
            )
        };
        format!(
            "{prelude}set -e\n{subsystem}\
[ -b {dev} ] || lvchange -ay -K {lv}
if [ ! -b {dev} ]; then echo {dev}\" is not a block device\" >&2; exit {EXIT_NOT_READY}; fi
[ -d \"$S\" ] || mkdir \"$S\"
[ \"$(cat \"$S/attr_allow_any_host\" 2>/dev/null)\" = 0 ] || echo 0 > \"$S/attr_allow_any_host\"
{allow}{only}\
N=\"$S/namespaces/{NSID}\"
[ -d \"$N\" ] || mkdir \"$N\"
if [ \"$(cat \"$N/enable\" 2>/dev/null)\" = 1 ]; then
d=$(cat \"$N/device_path\")
if [ \"$d\" != {dev} ]; then echo \"namespace {NSID} of $S is enabled on $d, not \"{dev} >&2; exit {EXIT_NOT_READY}; fi
else
echo {dev} > \"$N/device_path\"
echo 1 > \"$N/enable\"
fi
P=\"$R/ports/{id}\"
[ -d \"$P\" ] || mkdir \"$P\"
{trtype}{adrfam}{traddr}{trsvcid}\
[ -L \"$P/subsystems/\"{nqn} ] || ln -s \"$S\" \"$P/subsystems/\"{nqn}
",
            prelude = self.prelude(),
            subsystem = Self::subsystem(nqn),
            lv = quote(lv_path),
            allow = Self::allow_steps(hosts),
            only = if exact {
                Self::only_steps(hosts)
            } else {
                String::new()
            },
            id = p.id,
            trtype = port_attr("addr_trtype", "tcp"),
            adrfam = port_attr("addr_adrfam", p.adrfam()),
            traddr = port_attr("addr_traddr", &p.addr.to_string()),
            trsvcid = port_attr("addr_trsvcid", &p.service.to_string()),
            nqn = quote(nqn.as_str()),
        )
    }

    /// The step that removes every allowed host of `$S` but `hosts`.
    fn only_steps(hosts: &[Nqn]) -> String {
        let keep: String = hosts
            .iter()
            .map(|h| format!("{}) ;; ", quote(h.as_str())))
            .collect();
        format!(
            "for h in \"$S\"/allowed_hosts/*; do if [ -L \"$h\" ]; then \
             case \"${{h##*/}}\" in {keep}*) rm \"$h\" ;; esac; fi; done\n"
        )
    }

    /// Admits `hosts` to an exported subsystem; fails ("not found") when
    /// the subsystem is not there.
    pub fn allow(&self, nqn: &Nqn, hosts: &[Nqn]) -> String {
        format!(
            "{prelude}set -e\n{subsystem}\
if [ ! -d \"$S\" ]; then echo \"$S: No such file or directory\" >&2; exit 2; fi
{allow}",
            prelude = self.prelude(),
            subsystem = Self::subsystem(nqn),
            allow = Self::allow_steps(hosts),
        )
    }

    /// Removes `hosts` from the allowed hosts (those not there are fine),
    /// then, when `cut`, cuts every connection to the subsystem: unlinks it
    /// from each port it is linked to, which makes the kernel tear down
    /// every controller of it on that port, and links it back to this
    /// port. Hosts still allowed reconnect by themselves; removed ones are
    /// refused. A retry after a cut that stopped half way links it back.
    pub fn revoke(&self, nqn: &Nqn, hosts: &[Nqn], cut: bool) -> String {
        let mut s = format!(
            "{prelude}set -e\n{subsystem}if [ -d \"$S\" ]; then\n",
            prelude = self.prelude(),
            subsystem = Self::subsystem(nqn)
        );
        for h in hosts {
            let h = quote(h.as_str());
            s.push_str(&format!(
                "if [ -L \"$S/allowed_hosts/\"{h} ]; then rm \"$S/allowed_hosts/\"{h}; fi\n"
            ));
        }
        if cut {
            let n = quote(nqn.as_str());
            s.push_str(&format!(
                "for p in \"$R\"/ports/*; do if [ -L \"$p/subsystems/\"{n} ]; then rm \"$p/subsystems/\"{n}; fi; done\n\
                 ln -s \"$S\" \"$R/ports/{id}/subsystems/\"{n}\n",
                id = self.port.id
            ));
        }
        s.push_str("fi\n");
        s
    }

    /// Removes the export: unlinks it from every port (its connections
    /// end), removes its hosts and namespaces and the subsystem. Nothing
    /// to do when it is not there. Host entries under `hosts/` stay: other
    /// subsystems may admit them.
    pub fn unexport(&self, nqn: &Nqn) -> String {
        let n = quote(nqn.as_str());
        format!(
            "{prelude}set -e\n{subsystem}\
if [ -d \"$S\" ]; then
for p in \"$R\"/ports/*; do if [ -L \"$p/subsystems/\"{n} ]; then rm \"$p/subsystems/\"{n}; fi; done
for h in \"$S\"/allowed_hosts/*; do if [ -L \"$h\" ]; then rm \"$h\"; fi; done
for ns in \"$S\"/namespaces/*; do if [ -d \"$ns\" ]; then echo 0 > \"$ns/enable\"; rmdir \"$ns\"; fi; done
rmdir \"$S\"
fi
",
            prelude = self.prelude(),
            subsystem = Self::subsystem(nqn),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the read script prints for a port and one export with a host
    /// (the format is this module's own; the values as configfs shows them).
    const DUMP: &str = "port 1 trtype=tcp adrfam=ipv4 traddr=10.0.0.5 trsvcid=4420
port 2 trtype= adrfam= traddr= trsvcid=
subsystem nqn.2000-02.com.mikrotik:pvc-1
allow_any_host 0
host nqn.2014-08.org.nvmexpress:uuid:b
host nqn.2014-08.org.nvmexpress:uuid:a
namespace 1 enable=1 device=/dev/vg0/pvc-1
link 1
end
subsystem nqn.2000-02.com.mikrotik:pvc-2
allow_any_host 0
end
";

    #[test]
    fn a_listing_reads_ports_hosts_namespaces_and_links() {
        let d = parse_dump(DUMP).unwrap();
        assert_eq!(d.ports.len(), 2);
        assert_eq!(d.ports[0].traddr, "10.0.0.5");
        assert_eq!(d.ports[1].trtype, "");
        let s = &d.subsystems[0];
        assert_eq!(s.allow_any_host, Some(false));
        assert_eq!(
            s.hosts,
            vec![
                "nqn.2014-08.org.nvmexpress:uuid:a",
                "nqn.2014-08.org.nvmexpress:uuid:b"
            ]
        );
        assert_eq!(
            s.namespaces,
            vec![NamespaceState {
                nsid: "1".into(),
                enabled: true,
                device_path: "/dev/vg0/pvc-1".into()
            }]
        );
        assert_eq!(s.ports, vec!["1"]);
        assert!(d.subsystems[1].hosts.is_empty() && d.subsystems[1].ports.is_empty());
    }

    #[test]
    fn a_listing_cut_short_or_garbled_is_an_error_not_fewer_hosts() {
        let cut = DUMP.split("end\n").next().unwrap();
        assert!(parse_dump(cut).unwrap_err().contains("cut short"));
        assert!(
            parse_dump("host x\n").is_err(),
            "a host outside a subsystem"
        );
        assert!(parse_dump("subsystem a\nsurprise\nend\n").is_err());
        assert!(parse_dump("port 1 colour=red\n").is_err());
        assert_eq!(parse_dump("").unwrap(), Dump::default());
    }

    proptest! {
        #[test]
        fn the_listing_parser_never_panics(s in any::<String>()) {
            let _ = parse_dump(&s);
        }

        #[test]
        fn the_listing_parser_never_panics_on_listing_shaped_lines(
            lines in proptest::collection::vec(
                ("(port|subsystem|allow_any_host|host|namespace|link|end)", "[ a-z0-9=/.:]{0,20}"),
                0..20,
            )
        ) {
            let text: String = lines.iter().map(|(w, r)| format!("{w} {r}\n")).collect();
            let _ = parse_dump(&text);
        }
    }
}
