//! `--backends-file`: more storage servers behind one controller, beside
//! the default one the flags describe.
//!
//! The file is JSON: `{"backends": [ENTRY, ...]}`. An entry is a `name`
//! and the controller's own per-backend flags by their long names without
//! the dashes (`"backend": "nvmet"`, `"rds-address": "10.0.0.3"`,
//! `"rds-key-file": "/etc/rds-csi/backends/lab2/id_ed25519"`, ...);
//! an unknown key is an error, and what is not given takes the flag's
//! default (never the default backend's value: a second server is not
//! assumed to look like the first). Both the controller and the node plugin
//! read it: the controller to serve the backends, the node to learn which
//! it can reach and which NVMe subsystems are the driver's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use storage::{
    Backend, Capabilities, Capacity, CopySpec, IdPrefix, NewVolume, Place, PoolInfo, Result,
    SnapshotSpec, Volume, VolumeId, VolumeMeta,
};

use crate::cli::{BackendKind, ControllerArgs};

/// The topology key of a backend other than the default: a node that can
/// reach it reports `<key>=true`, and its volumes require it.
pub fn topology_key(name: &str) -> String {
    format!("rds.csi.srvlab.io/backend-{name}")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    backends: Vec<Entry>,
}

/// One backend of the file. Field names are the controller's flags'.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Entry {
    pub name: String,
    #[serde(default)]
    pub backend: Kind,
    pub rds_address: String,
    pub rds_user: Option<String>,
    pub rds_key_file: PathBuf,
    pub rds_host_key: Option<String>,
    #[serde(default)]
    pub rds_insecure_skip_host_key_check: bool,
    pub rds_max_sessions: Option<usize>,
    pub nvme_address: Option<String>,
    pub nvme_port: Option<u16>,
    pub volume_path: Option<String>,
    pub volume_path_root: Option<String>,
    #[serde(default)]
    pub rds_fencing: bool,
    pub nvmet_volume_group: Option<String>,
    pub nvmet_thin_pool: Option<String>,
    pub nvmet_listen_address: Option<std::net::IpAddr>,
    pub nvmet_port: Option<u16>,
    #[serde(default)]
    pub nvmet_sudo: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Rds,
    Nvmet,
}

/// Reads and checks the backends file: names valid, unique, and not the
/// default backend's (`default_name`, `--rds-name`).
pub fn read(path: &Path, default_name: &str) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--backends-file {}", path.display()))?;
    parse(&text, default_name).with_context(|| format!("--backends-file {}", path.display()))
}

pub fn parse(text: &str, default_name: &str) -> anyhow::Result<Vec<Entry>> {
    let file: File = serde_json::from_str(text).context("not a backends file")?;
    let mut seen = vec![default_name.to_string()];
    for e in &file.backends {
        csi_server::backends::valid_name(&e.name).map_err(anyhow::Error::msg)?;
        if seen.contains(&e.name) {
            bail!(
                "backend {:?} is named twice (the default backend is --rds-name {default_name:?})",
                e.name
            );
        }
        seen.push(e.name.clone());
    }
    Ok(file.backends)
}

impl Entry {
    /// The controller's flags for this backend: `base`'s for everything
    /// that is not per backend (cluster, attachment rules, naming), the
    /// entry's or the flag defaults for the rest.
    pub fn controller_args(&self, base: &ControllerArgs) -> ControllerArgs {
        use clap::Parser;
        // The flag defaults, exactly as clap gives them.
        let defaults = crate::cli::Cli::try_parse_from([
            "rds-csi",
            "controller",
            "--rds-address",
            "x",
            "--rds-key-file",
            "x",
        ])
        .ok()
        .and_then(|c| match c.command {
            crate::cli::Cmd::Controller(a) => Some(*a),
            _ => None,
        })
        .expect("the controller's flags parse with their defaults");
        let mut a = base.clone();
        a.common.rds_name = self.name.clone();
        a.backend = match self.backend {
            Kind::Rds => BackendKind::Rds,
            Kind::Nvmet => BackendKind::Nvmet,
        };
        a.rds_address = self.rds_address.clone();
        a.rds_user = self.rds_user.clone().unwrap_or(defaults.rds_user);
        a.rds_key_file = self.rds_key_file.clone();
        a.rds_host_key = self.rds_host_key.clone();
        a.rds_insecure_skip_host_key_check = self.rds_insecure_skip_host_key_check;
        a.rds_max_sessions = self.rds_max_sessions.unwrap_or(defaults.rds_max_sessions);
        a.nvme_address = self.nvme_address.clone();
        a.nvme_port = self.nvme_port.unwrap_or(defaults.nvme_port);
        a.volume_path = self.volume_path.clone().unwrap_or(defaults.volume_path);
        a.volume_path_root = self.volume_path_root.clone();
        a.rds_fencing = self.rds_fencing;
        a.nvmet.nvmet_volume_group = self.nvmet_volume_group.clone();
        a.nvmet.nvmet_thin_pool = self.nvmet_thin_pool.clone();
        a.nvmet.nvmet_listen_address = self.nvmet_listen_address;
        a.nvmet.nvmet_port = self.nvmet_port.unwrap_or(defaults.nvmet.nvmet_port);
        a.nvmet.nvmet_sudo = self.nvmet_sudo;
        a
    }

    /// Where nodes connect for this backend's volumes: the NVMe/TCP
    /// address and port the controller puts in their volume context.
    pub fn portal(&self) -> anyhow::Result<(String, u16)> {
        Ok(match self.backend {
            Kind::Rds => {
                let host = match &self.nvme_address {
                    Some(a) => a.clone(),
                    None => crate::run::split_address(&self.rds_address)?.1,
                };
                (host, self.nvme_port.unwrap_or(4420))
            }
            Kind::Nvmet => {
                let addr = self.nvmet_listen_address.with_context(|| {
                    format!("backend {}: nvmet-listen-address is required", self.name)
                })?;
                let host = self.nvme_address.clone().unwrap_or(addr.to_string());
                (host, self.nvmet_port.unwrap_or(4420))
            }
        })
    }
}

/// The backend kinds one controller can serve, as one type.
pub enum AnyBackend {
    Rds(csi_server::backend::RdsBackend),
    Nvmet(Box<linux_target::NvmetBackend>),
}

/// Each method: the same call on whichever backend it is.
macro_rules! delegate {
    ($($(#[$m:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        $(#[$m])*
        fn $name(&self $(, $arg: $ty)*) -> $ret {
            match self {
                AnyBackend::Rds(b) => b.$name($($arg),*),
                AnyBackend::Nvmet(b) => b.$name($($arg),*),
            }
        }
    )*};
}

macro_rules! delegate_async {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        async fn $name(&self $(, $arg: $ty)*) -> $ret {
            match self {
                AnyBackend::Rds(b) => b.$name($($arg),*).await,
                AnyBackend::Nvmet(b) => b.$name($($arg),*).await,
            }
        }
    )*};
}

impl Backend for AnyBackend {
    delegate! {
        fn capabilities(&self) -> Capabilities;
        fn location(&self, id: &VolumeId, place: &Place) -> Result<String>;
    }
    delegate_async! {
        fn get_volume(&self, id: &VolumeId) -> Result<Option<Volume>>;
        fn create_volume(&self, spec: &NewVolume) -> Result<()>;
        fn delete_volume(&self, id: &VolumeId, known: Option<&Volume>) -> Result<()>;
        fn expand_volume(&self, id: &VolumeId, size_bytes: u64) -> Result<()>;
        fn list_volumes(&self, prefix: &IdPrefix) -> Result<Vec<Volume>>;
        fn capacity(&self, pool: &str) -> Result<Capacity>;
        fn pool_info(&self, pool: &str) -> Result<PoolInfo>;
        fn copy(&self, spec: &CopySpec) -> Result<()>;
        fn snapshot_volume(&self, spec: &SnapshotSpec) -> Result<bool>;
        fn start_copy(&self, source: &VolumeId, target: &VolumeId) -> Result<()>;
        fn set_meta(&self, id: &VolumeId, meta: &VolumeMeta) -> Result<()>;
        fn set_allowed_hosts(&self, id: &VolumeId, hosts: &[storage::Nqn]) -> Result<()>;
        fn cut_sessions(&self, id: &VolumeId) -> Result<()>;
    }
}

/// Which backends a node can reach: whether each backend's NVMe/TCP
/// portal answers a TCP connection at start (the node reports its
/// topology once, when kubelet registers it). A refused connection is an
/// answer: the host is there, it just does not listen yet (a Linux
/// target listens only once it exports a first volume). No answer within
/// `timeout`, or no route, is unreachable.
pub async fn reachable(
    entries: &[Entry],
    timeout: std::time::Duration,
) -> HashMap<String, anyhow::Result<()>> {
    let mut out = HashMap::new();
    for e in entries {
        let result = async {
            let (host, port) = e.portal()?;
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            let outcome = tokio::time::timeout(timeout, connect)
                .await
                .map(|r| r.map(drop));
            answered(&format!("{host}:{port}"), timeout, outcome)
        }
        .await;
        out.insert(e.name.clone(), result);
    }
    out
}

/// Whether a connection attempt to `portal` got an answer: made, or
/// refused; `Err(())`: none within `timeout`.
fn answered(
    portal: &str,
    timeout: std::time::Duration,
    outcome: std::result::Result<std::io::Result<()>, tokio::time::error::Elapsed>,
) -> anyhow::Result<()> {
    match outcome {
        Err(_) => bail!("no answer from {portal} within {timeout:?}"),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Ok(Err(e)) => Err(e).with_context(|| format!("connect to {portal}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB2: &str = r#"{"backends": [
        {"name": "lab2", "rds-address": "10.0.0.2", "rds-key-file": "/k/lab2",
         "rds-host-key": "SHA256:abc"},
        {"name": "linux1", "backend": "nvmet", "rds-address": "10.0.0.3:2222",
         "rds-user": "root", "rds-key-file": "/k/linux1", "rds-insecure-skip-host-key-check": true,
         "nvmet-volume-group": "vg0", "nvmet-thin-pool": "pool0",
         "nvmet-listen-address": "10.0.1.3", "nvmet-port": 4421}
    ]}"#;

    #[test]
    fn a_file_names_backends_with_the_controllers_own_flags() {
        let b = parse(LAB2, "default").unwrap();
        let names: Vec<&str> = b.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["lab2", "linux1"]);
        assert_eq!(b[0].portal().unwrap(), ("10.0.0.2".to_string(), 4420));
        assert_eq!(b[1].portal().unwrap(), ("10.0.1.3".to_string(), 4421));
        assert_eq!(b[1].backend, Kind::Nvmet);
    }

    #[tokio::test]
    async fn a_node_reports_the_backends_whose_host_answers() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let entry = |name: &str, addr: &str, port: u16| {
            let text = format!(
                r#"{{"backends": [{{"name": "{name}", "rds-address": "{addr}:22",
                    "rds-key-file": "/k", "nvme-port": {port}}}]}}"#
            );
            parse(&text, "default").unwrap().remove(0)
        };
        let entries = [
            entry("listening", "127.0.0.1", open.local_addr().unwrap().port()),
            // The host answers with a refusal: there, not listening yet.
            entry("refusing", "127.0.0.1", closed_port),
        ];
        let reached = reachable(&entries, std::time::Duration::from_secs(2)).await;
        assert!(reached["listening"].is_ok());
        assert!(reached["refusing"].is_ok());
        // No answer, no route: unreachable, with the portal in the reason.
        // (Built by hand: whether a real address stays silent depends on
        // the network the test runs in.)
        let t = std::time::Duration::from_secs(3);
        let elapsed = tokio::time::timeout(std::time::Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        let why = format!(
            "{:#}",
            answered("192.0.2.1:4420", t, Err(elapsed)).unwrap_err()
        );
        assert!(why.contains("no answer from 192.0.2.1:4420"), "{why}");
        let no_route = std::io::Error::from(std::io::ErrorKind::HostUnreachable);
        assert!(answered("192.0.2.1:4420", t, Ok(Err(no_route))).is_err());
    }

    proptest::proptest! {
        /// Whatever the file holds, reading it answers (never panics), and
        /// whatever it accepts has valid, unique names.
        #[test]
        fn any_file_is_read_without_panicking(text in ".{0,200}", name in "[a-z0-9-]{0,40}") {
            let _ = parse(&text, "default");
            let doc = format!(r#"{{"backends": [{{"name": "{name}", "rds-address": "h", "rds-key-file": "k"}}]}}"#);
            if let Ok(b) = parse(&doc, "default") {
                proptest::prop_assert!(csi_server::backends::valid_name(&b[0].name).is_ok());
                proptest::prop_assert_ne!(b[0].name.as_str(), "default");
            }
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, why) in [
            (
                r#"{"backends": [{"name": "lab2", "rds-adress": "x", "rds-key-file": "k"}]}"#,
                "unknown field",
            ),
            (
                r#"{"backends": [{"name": "Lab2", "rds-address": "x", "rds-key-file": "k"}]}"#,
                "lowercase",
            ),
            (
                r#"{"backends": [{"name": "default", "rds-address": "x", "rds-key-file": "k"}]}"#,
                "named twice",
            ),
            (
                r#"{"backends": [{"name": "a", "backend": "zfs", "rds-address": "x", "rds-key-file": "k"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"backends": [{"name": "a", "rds-key-file": "k"}]}"#,
                "rds-address",
            ),
            ("backends: []", "not a backends file"),
        ] {
            let err = format!("{:#}", parse(text, "default").unwrap_err());
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
