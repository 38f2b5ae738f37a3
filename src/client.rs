//! A small CSI client for people: call the driver's RPCs by hand.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use csi_server::proto::{
    self,
    controller_client::ControllerClient,
    identity_client::IdentityClient,
    node_client::NodeClient,
    volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume},
};
use tonic::transport::Channel;

mod snapshots;
pub use snapshots::{describe_snapshot, SourceArgs};

#[derive(Args, Debug)]
pub struct CsiArgs {
    /// CSI endpoint of the driver to call.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    #[command(subcommand)]
    pub call: Call,
}

#[derive(Args, Debug, Clone)]
pub struct CapArgs {
    /// Raw block instead of a filesystem.
    #[arg(long)]
    pub block: bool,
    /// Multi-node writer (raw block only).
    #[arg(long)]
    pub multi_node: bool,
    /// Filesystem type for filesystem volumes.
    #[arg(long, default_value = "ext4")]
    pub fs_type: String,
}

#[derive(Subcommand, Debug)]
pub enum Call {
    /// GetPluginInfo, GetPluginCapabilities and Probe.
    Info,
    /// ControllerGetCapabilities.
    Capabilities,
    /// CreateVolume, empty or from a snapshot or a volume.
    Create {
        name: String,
        /// Size, e.g. `1.5G`, `2GiB` or bytes.
        #[arg(long, default_value = "1G")]
        size: String,
        /// StorageClass parameter `key=value` (repeatable).
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        cap: CapArgs,
        #[command(flatten)]
        source: snapshots::SourceArgs,
        /// Write the returned volume context to this file, one `key=value`
        /// per line (what the node calls' --context-file reads).
        #[arg(long)]
        context_out: Option<PathBuf>,
    },
    #[command(flatten)]
    Snapshot(snapshots::SnapshotCall),
    /// DeleteVolume.
    Delete { volume_id: String },
    /// ControllerExpandVolume.
    Expand {
        volume_id: String,
        #[arg(long)]
        size: String,
    },
    /// ListVolumes (follows every page).
    List {
        #[arg(long, default_value_t = 0)]
        max_entries: i32,
    },
    /// ControllerGetVolume.
    Get { volume_id: String },
    /// GetCapacity.
    Capacity,
    /// ControllerPublishVolume.
    Publish {
        volume_id: String,
        #[arg(long)]
        node: String,
        #[command(flatten)]
        cap: CapArgs,
    },
    /// ControllerUnpublishVolume.
    Unpublish {
        volume_id: String,
        #[arg(long)]
        node: String,
    },
    /// NodeGetInfo (against a node plugin's endpoint).
    NodeInfo,
    /// NodeStageVolume: connect, and for a filesystem volume probe, format
    /// if definitively empty, and mount at the staging path.
    NodeStage {
        volume_id: String,
        #[arg(long)]
        staging_path: String,
        #[command(flatten)]
        cap: NodeCapArgs,
        #[command(flatten)]
        ctx: NodeCtxArgs,
    },
    /// NodePublishVolume: bind mount from the staging path, or a device
    /// node for a raw block volume.
    NodePublish {
        volume_id: String,
        #[arg(long)]
        staging_path: String,
        #[arg(long)]
        target_path: String,
        #[arg(long)]
        readonly: bool,
        #[command(flatten)]
        cap: NodeCapArgs,
        #[command(flatten)]
        ctx: NodeCtxArgs,
    },
    /// NodeStageVolume then NodePublishVolume on one connection, as kubelet
    /// does when a pod starts; prints the time of the two RPCs as this
    /// client saw them (gRPC included, this process's start not).
    NodeMount {
        volume_id: String,
        #[arg(long)]
        staging_path: String,
        #[arg(long)]
        target_path: String,
        #[command(flatten)]
        cap: NodeCapArgs,
        #[command(flatten)]
        ctx: NodeCtxArgs,
    },
    /// NodeUnpublishVolume then NodeUnstageVolume on one connection, as
    /// kubelet does when a pod is gone; prints the time of the two RPCs.
    NodeUnmount {
        volume_id: String,
        #[arg(long)]
        staging_path: String,
        #[arg(long)]
        target_path: String,
    },
    /// NodeUnpublishVolume.
    NodeUnpublish {
        volume_id: String,
        #[arg(long)]
        target_path: String,
    },
    /// NodeUnstageVolume: unmount the staging path and disconnect.
    NodeUnstage {
        volume_id: String,
        #[arg(long)]
        staging_path: String,
    },
    /// NodeExpandVolume: rescan, then grow the filesystem online.
    NodeExpand {
        volume_id: String,
        #[arg(long)]
        volume_path: String,
        /// The size the volume must have reached (e.g. `2G`).
        #[arg(long)]
        size: Option<String>,
        /// Raw block volume (nothing to grow beyond the rescan).
        #[arg(long)]
        block: bool,
        #[arg(long)]
        staging_path: Option<String>,
    },
    /// NodeGetVolumeStats: usage and volume condition.
    NodeStats {
        volume_id: String,
        #[arg(long)]
        volume_path: String,
    },
    /// NodeGetCapabilities.
    NodeCaps,
}

/// The capability of a node call.
#[derive(Args, Debug, Clone)]
pub struct NodeCapArgs {
    /// Raw block instead of a filesystem.
    #[arg(long)]
    pub block: bool,
    /// Filesystem type (ext4 or xfs); empty lets the node use the volume
    /// context's fsType, then ext4.
    #[arg(long)]
    pub fs_type: Option<String>,
    /// Multi-node writer (raw block only).
    #[arg(long)]
    pub multi_node: bool,
    /// A mount option (repeatable).
    #[arg(long = "mount-flag")]
    pub mount_flags: Vec<String>,
}

/// The volume context of a node call.
#[derive(Args, Debug, Clone)]
pub struct NodeCtxArgs {
    /// File of `key=value` lines, as `create --context-out` writes it.
    #[arg(long)]
    pub context_file: Option<PathBuf>,
    /// A volume context entry `key=value` (repeatable; wins over the file).
    #[arg(long = "context", value_parser = parse_kv)]
    pub context: Vec<(String, String)>,
}

impl NodeCtxArgs {
    fn load(&self) -> anyhow::Result<HashMap<String, String>> {
        let mut m = match &self.context_file {
            Some(p) => parse_context(
                &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
            )
            .with_context(|| format!("{}", p.display()))?,
            None => HashMap::new(),
        };
        m.extend(self.context.iter().cloned());
        Ok(m)
    }
}

/// `key=value` lines; blank lines and `#` comments are skipped.
pub fn parse_context(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("line {}: {line:?} is not key=value", n + 1))?;
        m.insert(k.trim().to_string(), v.to_string());
    }
    Ok(m)
}

/// The context as sorted `key=value` lines.
pub fn format_context(ctx: &HashMap<String, String>) -> anyhow::Result<String> {
    let mut lines: Vec<String> = Vec::new();
    for (k, v) in ctx {
        if k.contains(['=', '\n']) || v.contains('\n') {
            anyhow::bail!("context entry {k:?} cannot be written as one key=value line");
        }
        lines.push(format!("{k}={v}\n"));
    }
    lines.sort();
    Ok(lines.concat())
}

fn stage_request(
    volume_id: &str,
    staging_path: &str,
    cap: &NodeCapArgs,
    ctx: &NodeCtxArgs,
) -> anyhow::Result<proto::NodeStageVolumeRequest> {
    Ok(proto::NodeStageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging_path.to_string(),
        volume_capability: Some(node_capability(cap)),
        volume_context: ctx.load()?,
        ..Default::default()
    })
}

fn publish_request(
    volume_id: &str,
    staging_path: &str,
    target_path: &str,
    cap: &NodeCapArgs,
    ctx: &NodeCtxArgs,
) -> anyhow::Result<proto::NodePublishVolumeRequest> {
    Ok(proto::NodePublishVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging_path.to_string(),
        target_path: target_path.to_string(),
        volume_capability: Some(node_capability(cap)),
        volume_context: ctx.load()?,
        ..Default::default()
    })
}

fn unpublish_request(volume_id: &str, target_path: &str) -> proto::NodeUnpublishVolumeRequest {
    proto::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target_path.to_string(),
    }
}

fn unstage_request(volume_id: &str, staging_path: &str) -> proto::NodeUnstageVolumeRequest {
    proto::NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging_path.to_string(),
    }
}

fn node_capability(cap: &NodeCapArgs) -> proto::VolumeCapability {
    let fs_type = cap.fs_type.clone().unwrap_or_default();
    volume_capability(cap.block, cap.multi_node, fs_type, cap.mount_flags.clone())
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub fn capability(cap: &CapArgs) -> proto::VolumeCapability {
    volume_capability(cap.block, cap.multi_node, cap.fs_type.clone(), vec![])
}

/// Raw block or a filesystem (`fs_type`, `mount_flags`); single-node
/// writer unless `multi_node`.
fn volume_capability(
    block: bool,
    multi_node: bool,
    fs_type: String,
    mount_flags: Vec<String>,
) -> proto::VolumeCapability {
    let mode = if multi_node {
        Mode::MultiNodeMultiWriter
    } else {
        Mode::SingleNodeWriter
    };
    proto::VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type,
                mount_flags,
                volume_mount_group: String::new(),
            })
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// Connects to a CSI unix socket.
pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let path: PathBuf = csi_server::server::socket_path(endpoint)?;
    let channel = tonic::transport::Endpoint::try_from("http://[::]:0")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    Ok(channel)
}

/// ControllerExpandVolume of `volume_id` to at least `bytes`.
pub fn expand_request(volume_id: &str, bytes: i64) -> proto::ControllerExpandVolumeRequest {
    proto::ControllerExpandVolumeRequest {
        volume_id: volume_id.to_string(),
        capacity_range: at_least(bytes),
        ..Default::default()
    }
}

/// The time since `start` of two RPCs called one after the other, the
/// first done after `first_took`: `<all> ms (<first> <ms> ms, <second> <ms> ms)`.
fn two_rpcs(
    start: std::time::Instant,
    first: &str,
    first_took: std::time::Duration,
    second: &str,
) -> String {
    let all = start.elapsed();
    format!(
        "{} ms ({first} {} ms, {second} {} ms)",
        all.as_millis(),
        first_took.as_millis(),
        (all - first_took).as_millis()
    )
}

/// A capacity range of at least `bytes`, no upper limit.
pub fn at_least(bytes: i64) -> Option<proto::CapacityRange> {
    Some(proto::CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    })
}

/// Prints the proto name of each capability type after `prefix`, one a
/// line (`?` for a value this client does not know).
fn print_types<T: TryFrom<i32>>(
    prefix: &str,
    types: impl Iterator<Item = i32>,
    name: fn(&T) -> &'static str,
) {
    for value in types {
        println!("{prefix}{}", T::try_from(value).map_or("?", |t| name(&t)));
    }
}

/// `k=v` pairs sorted, space-separated.
pub fn key_values(map: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(" ")
}

/// A volume and the nodes it is published to, as ListVolumes and
/// ControllerGetVolume report them.
fn describe_published(volume: Option<proto::Volume>, nodes: Option<Vec<String>>) -> String {
    format!(
        "{} published to [{}]",
        describe_volume(&volume.unwrap_or_default()),
        nodes.unwrap_or_default().join(", ")
    )
}

fn size(s: &str) -> anyhow::Result<i64> {
    let b = routeros::parse_size(s).with_context(|| format!("{s:?} is not a size"))?;
    i64::try_from(b).context("size too large")
}

pub fn describe_volume(v: &proto::Volume) -> String {
    format!(
        "{} {} bytes ({:.2} GiB) context: {}",
        v.volume_id,
        v.capacity_bytes,
        v.capacity_bytes as f64 / (1u64 << 30) as f64,
        key_values(&v.volume_context)
    )
}

/// Runs one call. A gRPC failure becomes `error: <Code>: <message>`, so
/// scripts can match the code.
pub async fn run(args: CsiArgs) -> anyhow::Result<()> {
    call(args)
        .await
        .map_err(|e| match e.downcast_ref::<tonic::Status>() {
            Some(s) => anyhow::anyhow!("error: {:?}: {}", s.code(), s.message()),
            None => e,
        })
}

async fn call(args: CsiArgs) -> anyhow::Result<()> {
    let channel = connect(&args.endpoint).await?;
    let mut identity = IdentityClient::new(channel.clone());
    let mut ctl = ControllerClient::new(channel.clone());
    match args.call {
        Call::Info => {
            let info = identity
                .get_plugin_info(proto::GetPluginInfoRequest {})
                .await?
                .into_inner();
            println!("name: {}\nversion: {}", info.name, info.vendor_version);
            let caps = identity
                .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
                .await?
                .into_inner();
            let services = caps
                .capabilities
                .into_iter()
                .filter_map(|c| match c.r#type {
                    Some(proto::plugin_capability::Type::Service(s)) => Some(s.r#type),
                    _ => None,
                });
            print_types(
                "capability: ",
                services,
                proto::plugin_capability::service::Type::as_str_name,
            );
            let probe = identity.probe(proto::ProbeRequest {}).await?.into_inner();
            println!("ready: {}", probe.ready.unwrap_or(true));
        }
        Call::Capabilities => {
            let caps = ctl
                .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
                .await?
                .into_inner();
            let rpcs = caps.capabilities.into_iter().filter_map(|c| c.r#type);
            print_types(
                "",
                rpcs.map(|proto::controller_service_capability::Type::Rpc(r)| r.r#type),
                proto::controller_service_capability::rpc::Type::as_str_name,
            );
        }
        Call::Create {
            name,
            size: s,
            params,
            cap,
            source,
            context_out,
        } => {
            let v = ctl
                .create_volume(proto::CreateVolumeRequest {
                    name,
                    capacity_range: at_least(size(&s)?),
                    volume_capabilities: vec![capability(&cap)],
                    parameters: params.into_iter().collect::<HashMap<_, _>>(),
                    volume_content_source: source.content_source(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let v = v.volume.unwrap_or_default();
            if let Some(p) = context_out {
                std::fs::write(&p, format_context(&v.volume_context)?)
                    .with_context(|| format!("write {}", p.display()))?;
            }
            // the source as the driver reports it on the volume
            let from = snapshots::describe_source(v.content_source.as_ref());
            println!("created {}{from}", describe_volume(&v));
        }
        Call::Delete { volume_id } => {
            ctl.delete_volume(proto::DeleteVolumeRequest {
                volume_id: volume_id.clone(),
                secrets: HashMap::new(),
            })
            .await?;
            println!("deleted {volume_id}");
        }
        Call::Expand { volume_id, size: s } => {
            let r = ctl
                .controller_expand_volume(expand_request(&volume_id, size(&s)?))
                .await?
                .into_inner();
            println!(
                "{volume_id}: {} bytes, node expansion required: {}",
                r.capacity_bytes, r.node_expansion_required
            );
        }
        Call::List { max_entries } => {
            let mut token = String::new();
            loop {
                let page = ctl
                    .list_volumes(proto::ListVolumesRequest {
                        max_entries,
                        starting_token: token,
                    })
                    .await?
                    .into_inner();
                for e in page.entries {
                    let nodes = e.status.map(|s| s.published_node_ids);
                    println!("{}", describe_published(e.volume, nodes));
                }
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
        }
        Call::Get { volume_id } => {
            let r = ctl
                .controller_get_volume(proto::ControllerGetVolumeRequest { volume_id })
                .await?
                .into_inner();
            let nodes = r.status.map(|s| s.published_node_ids);
            println!("{}", describe_published(r.volume, nodes));
        }
        Call::Capacity => {
            let r = ctl
                .get_capacity(proto::GetCapacityRequest::default())
                .await?
                .into_inner();
            println!(
                "available: {} bytes, largest volume: {} bytes, smallest: {} bytes",
                r.available_capacity,
                r.maximum_volume_size.unwrap_or_default(),
                r.minimum_volume_size.unwrap_or_default()
            );
        }
        Call::Publish {
            volume_id,
            node,
            cap,
        } => {
            let r = ctl
                .controller_publish_volume(proto::ControllerPublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    node_id: node.clone(),
                    volume_capability: Some(capability(&cap)),
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!(
                "published {volume_id} to {node}: {}",
                key_values(&r.publish_context)
            );
        }
        Call::Unpublish { volume_id, node } => {
            ctl.controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node.clone(),
                secrets: HashMap::new(),
            })
            .await?;
            println!("unpublished {volume_id} from {node}");
        }
        Call::Snapshot(c) => snapshots::call(channel, c).await?,
        Call::NodeStage {
            volume_id,
            staging_path,
            cap,
            ctx,
        } => {
            NodeClient::new(channel)
                .node_stage_volume(stage_request(&volume_id, &staging_path, &cap, &ctx)?)
                .await?;
            println!("staged {volume_id} at {staging_path}");
        }
        Call::NodePublish {
            volume_id,
            staging_path,
            target_path,
            readonly,
            cap,
            ctx,
        } => {
            let mut req = publish_request(&volume_id, &staging_path, &target_path, &cap, &ctx)?;
            req.readonly = readonly;
            NodeClient::new(channel).node_publish_volume(req).await?;
            println!("published {volume_id} at {target_path}");
        }
        Call::NodeMount {
            volume_id,
            staging_path,
            target_path,
            cap,
            ctx,
        } => {
            let stage = stage_request(&volume_id, &staging_path, &cap, &ctx)?;
            let publish = publish_request(&volume_id, &staging_path, &target_path, &cap, &ctx)?;
            let mut node = NodeClient::new(channel);
            let start = std::time::Instant::now();
            node.node_stage_volume(stage).await?;
            let staged = start.elapsed();
            node.node_publish_volume(publish).await?;
            let took = two_rpcs(start, "NodeStageVolume", staged, "NodePublishVolume");
            println!("mounted {volume_id} at {target_path} in {took}");
        }
        Call::NodeUnmount {
            volume_id,
            staging_path,
            target_path,
        } => {
            let mut node = NodeClient::new(channel);
            let start = std::time::Instant::now();
            node.node_unpublish_volume(unpublish_request(&volume_id, &target_path))
                .await?;
            let unpublished = start.elapsed();
            node.node_unstage_volume(unstage_request(&volume_id, &staging_path))
                .await?;
            let took = two_rpcs(
                start,
                "NodeUnpublishVolume",
                unpublished,
                "NodeUnstageVolume",
            );
            println!("unmounted {volume_id} in {took}");
        }
        Call::NodeUnpublish {
            volume_id,
            target_path,
        } => {
            NodeClient::new(channel)
                .node_unpublish_volume(unpublish_request(&volume_id, &target_path))
                .await?;
            println!("unpublished {volume_id} from {target_path}");
        }
        Call::NodeUnstage {
            volume_id,
            staging_path,
        } => {
            NodeClient::new(channel)
                .node_unstage_volume(unstage_request(&volume_id, &staging_path))
                .await?;
            println!("unstaged {volume_id} from {staging_path}");
        }
        Call::NodeExpand {
            volume_id,
            volume_path,
            size: s,
            block,
            staging_path,
        } => {
            let required = match &s {
                Some(s) => size(s)?,
                None => 0,
            };
            let cap = NodeCapArgs {
                block,
                fs_type: None,
                multi_node: false,
                mount_flags: vec![],
            };
            let r = NodeClient::new(channel)
                .node_expand_volume(proto::NodeExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    volume_path,
                    capacity_range: at_least(required),
                    staging_target_path: staging_path.unwrap_or_default(),
                    volume_capability: Some(node_capability(&cap)),
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("expanded {volume_id}: capacity {} bytes", r.capacity_bytes);
        }
        Call::NodeStats {
            volume_id,
            volume_path,
        } => {
            let r = NodeClient::new(channel)
                .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
                    volume_id,
                    volume_path,
                    staging_target_path: String::new(),
                })
                .await?
                .into_inner();
            for u in &r.usage {
                let unit = match proto::volume_usage::Unit::try_from(u.unit) {
                    Ok(proto::volume_usage::Unit::Bytes) => "bytes",
                    Ok(proto::volume_usage::Unit::Inodes) => "inodes",
                    _ => "unknown",
                };
                println!(
                    "{unit} total={} used={} available={}",
                    u.total, u.used, u.available
                );
            }
            if let Some(c) = r.volume_condition {
                println!("condition abnormal={} message={}", c.abnormal, c.message);
            }
        }
        Call::NodeCaps => {
            let r = NodeClient::new(channel)
                .node_get_capabilities(proto::NodeGetCapabilitiesRequest {})
                .await?
                .into_inner();
            let rpcs = r.capabilities.into_iter().filter_map(|c| c.r#type);
            print_types(
                "",
                rpcs.map(|proto::node_service_capability::Type::Rpc(r)| r.r#type),
                proto::node_service_capability::rpc::Type::as_str_name,
            );
        }
        Call::NodeInfo => {
            let r = NodeClient::new(channel)
                .node_get_info(proto::NodeGetInfoRequest {})
                .await?
                .into_inner();
            println!(
                "node id: {}\nmax volumes: {}\ntopology: {:?}",
                r.node_id,
                r.max_volumes_per_node,
                r.accessible_topology.map(|t| t.segments)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_file_round_trips() {
        let ctx: HashMap<String, String> = [
            ("nqn", "nqn.2000-02.com.mikrotik:pvc-1"),
            ("nvmeAddress", "10.0.0.1"),
            ("csi.storage.k8s.io/pvc/name", "a=b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let text = format_context(&ctx).unwrap();
        assert!(
            text.starts_with("csi.storage.k8s.io/pvc/name=a=b\n"),
            "{text}"
        );
        assert_eq!(parse_context(&text).unwrap(), ctx);
        assert_eq!(parse_context("# comment\n\nk=v\r\n").unwrap()["k"], "v");
        assert!(parse_context("novalue\n").is_err());
    }
}
