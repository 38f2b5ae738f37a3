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
    /// CreateVolume.
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
    },
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
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub fn capability(cap: &CapArgs) -> proto::VolumeCapability {
    let mode = if cap.multi_node {
        Mode::MultiNodeMultiWriter
    } else {
        Mode::SingleNodeWriter
    };
    proto::VolumeCapability {
        access_type: Some(if cap.block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: cap.fs_type.clone(),
                mount_flags: vec![],
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

fn size(s: &str) -> anyhow::Result<i64> {
    let b = routeros::parse_size(s).with_context(|| format!("{s:?} is not a size"))?;
    i64::try_from(b).context("size too large")
}

pub fn describe_volume(v: &proto::Volume) -> String {
    let mut ctx: Vec<_> = v
        .volume_context
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    ctx.sort();
    format!(
        "{} {} bytes ({:.2} GiB) context: {}",
        v.volume_id,
        v.capacity_bytes,
        v.capacity_bytes as f64 / (1u64 << 30) as f64,
        ctx.join(" ")
    )
}

pub async fn run(args: CsiArgs) -> anyhow::Result<()> {
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
            for c in caps.capabilities {
                if let Some(proto::plugin_capability::Type::Service(s)) = c.r#type {
                    let t = proto::plugin_capability::service::Type::try_from(s.r#type)
                        .map(|t| t.as_str_name())
                        .unwrap_or("?");
                    println!("capability: {t}");
                }
            }
            let probe = identity.probe(proto::ProbeRequest {}).await?.into_inner();
            println!("ready: {}", probe.ready.unwrap_or(true));
        }
        Call::Capabilities => {
            let caps = ctl
                .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
                .await?
                .into_inner();
            for c in caps.capabilities {
                if let Some(proto::controller_service_capability::Type::Rpc(r)) = c.r#type {
                    let t = proto::controller_service_capability::rpc::Type::try_from(r.r#type)
                        .map(|t| t.as_str_name())
                        .unwrap_or("?");
                    println!("{t}");
                }
            }
        }
        Call::Create {
            name,
            size: s,
            params,
            cap,
        } => {
            let v = ctl
                .create_volume(proto::CreateVolumeRequest {
                    name,
                    capacity_range: Some(proto::CapacityRange {
                        required_bytes: size(&s)?,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![capability(&cap)],
                    parameters: params.into_iter().collect::<HashMap<_, _>>(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("created {}", describe_volume(&v.volume.unwrap_or_default()));
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
                .controller_expand_volume(proto::ControllerExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    capacity_range: Some(proto::CapacityRange {
                        required_bytes: size(&s)?,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
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
                    let nodes = e.status.map(|s| s.published_node_ids).unwrap_or_default();
                    println!(
                        "{} published to [{}]",
                        describe_volume(&e.volume.unwrap_or_default()),
                        nodes.join(", ")
                    );
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
            let nodes = r.status.map(|s| s.published_node_ids).unwrap_or_default();
            println!(
                "{} published to [{}]",
                describe_volume(&r.volume.unwrap_or_default()),
                nodes.join(", ")
            );
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
            let mut ctx: Vec<_> = r
                .publish_context
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            ctx.sort();
            println!("published {volume_id} to {node}: {}", ctx.join(" "));
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
