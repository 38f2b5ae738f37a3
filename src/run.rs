//! Wiring: builds each service from its flags and runs its tasks until the
//! cancellation token fires. Top-level tasks run under `try_join!`, so one
//! failing stops the process instead of leaving it half alive.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use attachment_manager::cluster::{LogEvents, MemoryStore, StaticNodes};
use attachment_manager::kube_store::{KubeEvents, KubeNodes, KubeStore};
use attachment_manager::QueuedEvents;
use attachment_manager::{
    AttachMetrics, EventSink, Manager, MigrationCheck, NoMigrations, NodeView, Policy, Store,
};
use csi_server::backend::RdsBackend;
use csi_server::backends::Backends;
use csi_server::controller::{ControllerConfig, ControllerService, DEFAULT_MIGRATION_TIMEOUT};
use csi_server::health::Health;
use csi_server::identity::{valid_driver_name, IdentityService};
use csi_server::metrics::RpcMetrics;
use csi_server::node::format_record::{self, FileFormatRecord, KubeFormatRecord};
use csi_server::node::{events, FormatRecord, NodeConfig, NodeEvents, NodeService, OrphanCleanup};
use csi_server::params::ParamDefaults;
use csi_server::proto::controller_server::ControllerServer;
use csi_server::proto::identity_server::IdentityServer;
use csi_server::proto::node_server::NodeServer;
use csi_server::server;
use prometheus::Registry;
use routeros::{ClientConfig, ClientMetrics, ClusterId, HostKeyPolicy, Rds, RosPath, SlotPrefix};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backends::AnyBackend;
use crate::cli::{
    BackendKind, CommonArgs, ControllerArgs, EventsMode, FormatRecordMode, NodeArgs, OrphanMode,
    SimArgs, VERSION,
};

pub const TOPOLOGY_KEY: &str = "rds.csi.srvlab.io/rds";

/// The cluster identity of a `--standalone` controller without
/// `--cluster-id`. It runs no orphan sweep; a cluster's sweep treats its
/// disks as another cluster's and leaves them alone.
pub const STANDALONE_CLUSTER_ID: &str = "standalone";

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received; shutting down"),
            _ = term.recv() => info!("SIGTERM received; shutting down"),
        }
        t.cancel();
    });
    token
}

fn check_common(c: &CommonArgs) -> anyhow::Result<()> {
    if !valid_driver_name(&c.driver_name) {
        bail!("--driver-name {:?} is not a valid CSI driver name (at most 63 characters: letters, digits, '-' and '.', alphanumeric at both ends)", c.driver_name);
    }
    if c.rds_name.is_empty()
        || c.rds_name.len() > 63
        || !c
            .rds_name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        bail!("--rds-name {:?} must be a valid label value", c.rds_name);
    }
    Ok(())
}

/// `host` or `host:port` → `host:port`, and the bare host.
pub(crate) fn split_address(addr: &str) -> anyhow::Result<(String, String)> {
    if addr.is_empty() {
        bail!("--rds-address must not be empty");
    }
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Ok((sa.to_string(), sa.ip().to_string()));
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Ok((
            std::net::SocketAddr::new(ip, 22).to_string(),
            ip.to_string(),
        ));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>()
                .with_context(|| format!("--rds-address {addr:?}: bad port"))?;
            Ok((addr.to_string(), host.to_string()))
        }
        None => Ok((format!("{addr}:22"), addr.to_string())),
    }
}

pub struct ControllerParts {
    pub config: ControllerConfig,
    pub client: ClientConfig,
    /// `--cluster-id`, validated; `None`: the default, found at start.
    pub cluster_id: Option<ClusterId>,
}

pub fn controller_parts(args: &ControllerArgs) -> anyhow::Result<ControllerParts> {
    check_common(&args.common)?;
    let (ssh_addr, host) = split_address(&args.rds_address)?;
    let host_key = match (&args.rds_host_key, args.rds_insecure_skip_host_key_check) {
        (Some(fp), false) => HostKeyPolicy::Pinned(fp.clone()),
        (Some(_), true) => bail!("--rds-host-key and --rds-insecure-skip-host-key-check contradict each other; give one"),
        (None, true) => HostKeyPolicy::InsecureAcceptAny,
        (None, false) => bail!(
            "--rds-host-key is required: pin the RDS host key fingerprint (ssh-keygen -lf on the RDS host key), \
             or pass --rds-insecure-skip-host-key-check for a lab"
        ),
    };
    let volume_path = RosPath::new(&args.volume_path).context("--volume-path")?;
    let root = match &args.volume_path_root {
        Some(r) => RosPath::new(r).context("--volume-path-root")?,
        None => {
            RosPath::new(&format!("/{}", volume_path.mount_point())).context("--volume-path")?
        }
    };
    let volume_path = volume_path
        .under(&root)
        .context("--volume-path must lie under --volume-path-root")?;
    crate::nvmet::check_flags(args)?;
    // With nvmet, nodes connect where the kernel target listens.
    let (default_address, nvme_port) = match args.backend {
        BackendKind::Rds => (host, args.nvme_port),
        BackendKind::Nvmet => crate::nvmet::listen(args)?,
    };
    let nvme_address = csi_server::params::parse_address(
        "--nvme-address",
        args.nvme_address.as_deref().unwrap_or(&default_address),
    )
    .map_err(|e| anyhow::anyhow!("{e} (set --nvme-address)"))?;
    let max_volume_bytes = routeros::parse_size(&args.max_volume_size)
        .with_context(|| format!("--max-volume-size {:?} is not a size", args.max_volume_size))?;
    routeros::Nqn::new(&format!("{}x", args.naming.nqn_prefix)).context("--nqn-prefix")?;
    let cluster_id = args
        .cluster_id
        .as_deref()
        .map(ClusterId::new)
        .transpose()
        .context("--cluster-id")?;
    let mut client = ClientConfig::new(ssh_addr, args.rds_user.clone(), host_key);
    client.max_channels = args.rds_max_sessions.max(1);
    client.command_timeout = args.rds_command_timeout;
    client.connect_timeout = args.rds_connect_timeout;
    Ok(ControllerParts {
        config: ControllerConfig {
            defaults: ParamDefaults {
                nvme_address,
                nvme_port,
                volume_path,
                volume_path_root: root,
            },
            max_volume_bytes,
            volume_id_prefix: SlotPrefix::new(&args.naming.volume_id_prefix)
                .context("--volume-id-prefix")?,
            nqn_prefix: args.naming.nqn_prefix.clone(),
            topology: (TOPOLOGY_KEY.into(), args.common.rds_name.clone()),
            max_list_entries: 1000,
            qualifier: String::new(),
        },
        client,
        cluster_id,
    })
}

/// One backend of the controller, ready to serve.
struct MemberParts {
    name: String,
    args: ControllerArgs,
    parts: ControllerParts,
    backend: Arc<AnyBackend>,
    /// Where its metrics go: labelled `backend=<name>` when there are
    /// several backends.
    scope: Registry,
}

/// The default backend's flags and parts, then each backend of
/// `--backends-file`'s with its name in its volume IDs and its own
/// topology key.
fn all_parts(args: &ControllerArgs) -> anyhow::Result<Vec<(ControllerArgs, ControllerParts)>> {
    let default = controller_parts(args).context("the default backend")?;
    let mut all = vec![(args.clone(), default)];
    let Some(path) = &args.common.backends_file else {
        return Ok(all);
    };
    for entry in crate::backends::read(path, &args.common.rds_name)? {
        let a = entry.controller_args(args);
        let mut parts = controller_parts(&a)
            .with_context(|| format!("backend {} of --backends-file", entry.name))?;
        let qualifier = csi_server::backends::qualifier(&entry.name, false);
        parts.config.volume_id_prefix =
            SlotPrefix::new(&format!("{qualifier}{}", args.naming.volume_id_prefix))
                .with_context(|| format!("backend {}: volume ID prefix", entry.name))?;
        parts.config.qualifier = qualifier;
        parts.config.topology = (crate::backends::topology_key(&entry.name), "true".into());
        all.push((a, parts));
    }
    Ok(all)
}

pub async fn controller(args: ControllerArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let all = all_parts(&args)?;
    let registry = Registry::new();
    let mut members = Vec::new();
    let mut clients = Vec::new();
    // The orphan sweep reads the default RDS's disks and files itself.
    let mut sweep_rds = None;
    // With several backends each one's metrics carry `backend=<name>`;
    // one backend's are as they always were, without the label.
    let several = all.len() > 1;
    for (i, (a, parts)) in all.into_iter().enumerate() {
        let name = a.common.rds_name.clone();
        let scope = match several {
            true => csi_server::metrics::scoped(&registry, "backend", &name)?,
            false => registry.clone(),
        };
        let key = routeros::load_key(&a.rds_key_file)
            .with_context(|| format!("backend {name}: --rds-key-file"))?;
        let client = routeros::Client::new(
            parts.client.clone(),
            key,
            Some(ClientMetrics::register(&scope)?),
        );
        clients.push(client.clone());
        let backend = match a.backend {
            BackendKind::Rds => {
                let rds = Rds::new(client);
                if i == 0 {
                    sweep_rds = Some(rds.clone());
                }
                AnyBackend::Rds(
                    RdsBackend::new(rds, parts.config.defaults.volume_path_root.clone())
                        .with_fencing(a.rds_fencing),
                )
            }
            BackendKind::Nvmet => AnyBackend::Nvmet(Box::new(crate::nvmet::backend(&a, client)?)),
        };
        members.push(MemberParts {
            name,
            args: a,
            parts,
            backend: Arc::new(backend),
            scope,
        });
    }
    if args.orphan_reconciler && sweep_rds.is_none() {
        info!("orphan volume sweep off: it reads RouterOS disks and files, and the default backend is not an RDS");
    }
    if args.orphan_reconciler && members.len() > 1 {
        info!("the orphan volume sweep covers the default backend only");
    }
    let result = serve_controller(&args, members, registry, sweep_rds, &cancel).await;
    for client in clients {
        client.close().await;
    }
    result
}

/// The controller over its backends until `cancel`; `rds`: the default
/// RDS's client for the orphan sweep, when the default backend is one.
async fn serve_controller(
    args: &ControllerArgs,
    members: Vec<MemberParts>,
    registry: Registry,
    rds: Option<Rds>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let parts = &members[0].parts;
    let healths = members
        .iter()
        .map(|m| Health::register(&m.scope).map(|h| h.named(&m.name)))
        .collect::<prometheus::Result<Vec<_>>>()?;
    let health = match healths.len() {
        1 => healths[0].clone(),
        _ => Health::any_of(&healths)?,
    };
    let policy = Policy {
        grace_period: args.attachment_grace_period,
        allow_unverified_second_node: args.allow_unverified_migration,
    };
    let mut watchers = tokio::task::JoinSet::new();
    let cluster = cluster_parts(args, &mut watchers).await?;
    // Known now (flag, standalone) or once the API server answers.
    let identity = Arc::new(OnceLock::new());
    if let Some(id) = known_cluster_id(parts, cluster.kube.is_none())? {
        let _ = identity.set(id);
    }
    let nodes = cluster.nodes.clone();
    let event_queue = cluster.event_queue.clone();
    let manager = Arc::new(Manager::new(
        policy,
        cluster.store,
        cluster.nodes,
        cluster.migrations,
        cluster.events,
        AttachMetrics::register(&registry)?,
    ));
    if let Some((client, kube_nodes)) = cluster.kube.clone() {
        let stale = Arc::new(reconciler::StaleAttachments::new(
            manager.clone(),
            kube_nodes,
            client.clone(),
            reconciler::StaleConfig {
                interval: args.attachment_reconcile_interval,
                not_ready_after: args.not_ready_threshold,
            },
            reconciler::ReconcilerMetrics::register(&registry)?,
            // Sweeps after the default backend comes back.
            healths[0].recovered(),
        ));
        watchers.spawn(stale.run(cancel.clone()));
        let mut orphans = None;
        if let (true, Some(rds)) = (args.orphan_reconciler, &rds) {
            use reconciler::orphans::{KubePvs, LogOnly, OrphanReport, PodEvents};
            let report: Box<dyn OrphanReport> = match PodEvents::from_env(client.clone()) {
                Some(events) => Box::new(events),
                None => Box::new(LogOnly),
            };
            let (backend, pvs) = (
                Arc::new(rds.clone()),
                KubePvs::new(client.clone(), args.common.driver_name.clone()),
            );
            let (locks, recent) = (manager.locks().clone(), manager.recent_creates().clone());
            let metrics = reconciler::OrphanMetrics::register(&registry)?;
            let (interval, delete, grace_period) = (
                args.orphan_reconcile_interval,
                args.orphan_delete,
                args.orphan_grace_period,
            );
            let (volume_prefix, volume_path) = (
                parts.config.volume_id_prefix.clone(),
                parts.config.defaults.volume_path.clone(),
            );
            orphans = Some(move |cluster_id| {
                info!(delete, ?interval, "orphan volume sweep on");
                Arc::new(reconciler::OrphanSweeper::new(
                    backend,
                    pvs,
                    locks,
                    recent,
                    reconciler::OrphanConfig {
                        interval,
                        delete,
                        grace_period,
                        volume_prefix,
                        volume_path,
                        cluster_id,
                    },
                    metrics,
                    report,
                ))
            });
        }
        // The orphan sweep starts once the cluster's identity is known.
        let (identity, cancel) = (identity.clone(), cancel.clone());
        watchers.spawn(async move {
            let id = match identity.get() {
                Some(id) => id.clone(),
                None => match resolve_cluster_id(&client, &cancel).await {
                    Some(id) => identity.get_or_init(|| id).clone(),
                    None => return,
                },
            };
            if let Some(make) = orphans {
                make(id).run(cancel).await;
            }
        });
    }
    let mut services = Vec::new();
    let mut health_tasks = Vec::new();
    let mut rpc_metrics = Vec::new();
    for (m, health) in members.iter().zip(&healths) {
        let metrics = RpcMetrics::register(&m.scope)?;
        rpc_metrics.push(metrics.clone());
        let service = Arc::new(
            ControllerService::new(
                m.parts.config.clone(),
                m.backend.clone(),
                nodes.clone(),
                manager.clone(),
                cluster.grouper.clone(),
                metrics,
            )
            .with_cluster_id(identity.clone()),
        );
        // Which copy methods the pool allows, read in the background so an
        // unreachable server does not hold up the socket.
        tokio::spawn({
            let service = service.clone();
            async move { service.detect_pool().await }
        });
        health_tasks.push(health.clone().run(
            m.backend.clone(),
            m.parts.config.pool(),
            args.health_interval,
            m.parts.client.command_timeout,
            cancel.clone(),
        ));
        info!(
            backend = %m.name,
            kind = ?m.args.backend,
            server = %m.parts.client.address,
            volume_id_prefix = %m.parts.config.volume_id_prefix,
            topology = %format!("{}={}", m.parts.config.topology.0, m.parts.config.topology.1),
            "backend configured"
        );
        services.push(csi_server::backends::Member {
            name: m.name.clone(),
            service,
        });
    }
    // What is refused before a backend is chosen: counted without a
    // backend label (one backend's metrics have none anyway).
    let router_metrics = match members.len() {
        1 => rpc_metrics.swap_remove(0),
        _ => RpcMetrics::register(&registry)?,
    };
    let controller = Backends::new(services, router_metrics)?;
    let identity = IdentityService::new(&args.common.driver_name, VERSION, true, health.clone());
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller));
    let path = server::socket_path(&args.common.endpoint)?;
    let listener = server::bind_unix(&path)?;
    info!(
        version = VERSION,
        endpoint = %path.display(),
        backends = members.len(),
        driver = %args.common.driver_name,
        "controller started"
    );
    let metrics_addr = args.common.metrics_addr()?;
    let health_task = futures::future::join_all(health_tasks);
    let result = tokio::try_join!(
        serve_csi_and_metrics(router, listener, metrics_addr, registry, health, cancel),
        async {
            health_task.await;
            Ok(())
        },
        async {
            manager
                .run(std::time::Duration::from_secs(1), cancel.clone())
                .await;
            Ok(())
        },
    );
    cancel.cancel();
    watchers.shutdown().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), event_queue.flush()).await;
    let _ = std::fs::remove_file(&path);
    result.map(drop)
}

/// The cluster identity known at start: `--cluster-id`, or without
/// Kubernetes [`STANDALONE_CLUSTER_ID`]. `None`: read it from the API server
/// ([`resolve_cluster_id`]).
fn known_cluster_id(
    parts: &ControllerParts,
    standalone: bool,
) -> anyhow::Result<Option<ClusterId>> {
    let (id, from) = match (&parts.cluster_id, standalone) {
        (Some(id), _) => (id.clone(), "--cluster-id"),
        (None, true) => (ClusterId::new(STANDALONE_CLUSTER_ID)?, "standalone default"),
        (None, false) => return Ok(None),
    };
    info!(cluster_id = %id, from, "cluster identity: written on every disk this controller creates; the orphan sweep acts only on disks that carry it");
    Ok(Some(id))
}

/// The default identity, the UID of the kube-system namespace, read until
/// the API server answers (`None` only when cancelled). Until then
/// CreateVolume answers UNAVAILABLE and no orphan sweep runs.
async fn resolve_cluster_id(
    client: &kube::Client,
    cancel: &CancellationToken,
) -> Option<ClusterId> {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match reconciler::orphans::kube_system_uid(client).await {
            Ok(id) => {
                info!(cluster_id = %id, from = "UID of namespace kube-system", "cluster identity: written on every disk this controller creates; the orphan sweep acts only on disks that carry it");
                return Some(id);
            }
            Err(e) => warn!(
                error = %e,
                retry_in = ?delay,
                "cannot read the default --cluster-id (the UID of namespace {}); new volumes are refused until it is known: allow the controller to get that namespace, or set --cluster-id",
                reconciler::orphans::IDENTITY_NAMESPACE
            ),
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}

/// What the attachment manager reads from and writes to: Kubernetes, or
/// memory in standalone mode.
struct ClusterParts {
    /// The Kubernetes side, absent in standalone mode.
    kube: Option<(kube::Client, KubeNodes)>,
    nodes: Arc<dyn NodeView>,
    store: Arc<dyn Store>,
    migrations: Arc<dyn MigrationCheck>,
    events: Arc<dyn EventSink>,
    /// The queue behind `events` in a cluster, flushed at shutdown.
    event_queue: QueuedEvents,
    grouper: Option<vmi_grouper::KubeVirt>,
}

async fn cluster_parts(
    args: &ControllerArgs,
    watchers: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<ClusterParts> {
    if args.standalone {
        warn!("standalone mode: no Kubernetes; attachment state lives in memory only and is lost on restart");
        if args.nodes.is_empty() {
            warn!("no --node list given: every node ID is taken to exist");
        }
        let mut names = Vec::new();
        let mut host_nqns = Vec::new();
        for node in &args.nodes {
            match node.split_once('=') {
                Some((name, nqn)) => {
                    names.push(name.to_string());
                    host_nqns.push((name, nqn));
                }
                None => names.push(node.clone()),
            }
        }
        let nodes = StaticNodes::new(names);
        for (name, nqn) in host_nqns {
            nodes.set_host_nqn(name, nqn);
        }
        return Ok(ClusterParts {
            kube: None,
            nodes: Arc::new(nodes),
            store: Arc::new(MemoryStore::default()),
            migrations: Arc::new(NoMigrations),
            events: Arc::new(LogEvents::default()),
            event_queue: QueuedEvents::log_only(),
            grouper: None,
        });
    }
    let client = kube_client(
        args.kubeconfig.as_deref(),
        "pass --kubeconfig, or --standalone for a demo",
    )
    .await?;
    let (kube_nodes, drive_nodes) = KubeNodes::start(client.clone());
    watchers.spawn(drive_nodes);
    let (kubevirt, drive_pods) = vmi_grouper::KubeVirt::start(
        client.clone(),
        vmi_grouper::VmiLocks::new(std::time::Duration::from_secs(600)),
    );
    watchers.spawn(drive_pods);
    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    // Events (handoffs, conflicts, migrations) are recorded off the
    // critical path: a publish never waits on the API server for one.
    let event_queue = QueuedEvents::spawn(
        Arc::new(KubeEvents::new(
            client.clone(),
            "rds-csi-controller",
            instance,
        )),
        attachment_manager::events::QUEUE_CAPACITY,
        attachment_manager::events::DELIVERY_TIMEOUT,
    );
    Ok(ClusterParts {
        kube: Some((client.clone(), kube_nodes.clone())),
        nodes: Arc::new(kube_nodes),
        store: Arc::new(KubeStore::new(
            client.clone(),
            args.common.driver_name.clone(),
            DEFAULT_MIGRATION_TIMEOUT,
        )),
        migrations: Arc::new(kubevirt.clone()),
        events: Arc::new(event_queue.clone()),
        event_queue,
        grouper: args.vmi_grouper.then_some(kubevirt),
    })
}

/// A Kubernetes client from the given kubeconfig, or inferred (in-cluster,
/// then $KUBECONFIG, then ~/.kube/config). `hint` says what to do when no
/// configuration is found.
pub async fn kube_client(kubeconfig: Option<&Path>, hint: &str) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.with_context(|| {
            let what =
                "no Kubernetes configuration found (in-cluster, $KUBECONFIG or ~/.kube/config)";
            match hint {
                "" => what.to_string(),
                h => format!("{what}; {h}"),
            }
        })?,
    };
    kube::Client::try_from(config).context("build the Kubernetes client")
}

/// The CSI service on its unix socket and the metrics endpoint, until
/// `cancel` or the first of them fails.
async fn serve_csi_and_metrics(
    router: tonic::transport::server::Router,
    listener: tokio::net::UnixListener,
    metrics_addr: Option<std::net::SocketAddr>,
    registry: Registry,
    health: Health,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    tokio::try_join!(
        async {
            server::serve_grpc(router, listener, cancel.clone())
                .await
                .map_err(anyhow::Error::from)
        },
        serve_metrics(metrics_addr, registry, health, cancel.clone()),
    )
    .map(drop)
}

async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    registry: Registry,
    health: Health,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    match addr {
        Some(a) => server::serve_http(a, registry, health, cancel)
            .await
            .with_context(|| format!("metrics endpoint {a}")),
        None => Ok(()),
    }
}

/// The node's Kubernetes client, when its events or its format record
/// want one (see `--events`, `--format-record`). Said once, at start.
async fn node_kube(args: &NodeArgs) -> anyhow::Result<Option<kube::Client>> {
    let record = args.format_record_file.is_none() && args.format_record != FormatRecordMode::Off;
    if args.events == EventsMode::Off && !record {
        return Ok(None);
    }
    let required = args.events == EventsMode::On
        || (args.format_record_file.is_none() && args.format_record == FormatRecordMode::On);
    Ok(match args.kubeconfig.as_deref() {
        Some(path) => Some(kube_client(Some(path), "").await?),
        None if required => Some(
            kube_client(
                None,
                "pass --kubeconfig, or --events and --format-record auto or off",
            )
            .await?,
        ),
        None => match kube_client(None, "").await {
            Ok(c) => Some(c),
            Err(e) => {
                info!(why = %format!("{e:#}"), "no Kubernetes configuration found");
                None
            }
        },
    })
}

/// Where the node's events go (see `--events`). Said once, at start.
fn node_events(args: &NodeArgs, client: Option<&kube::Client>) -> NodeEvents {
    if args.events == EventsMode::Off {
        info!("--events off: mount failures, format refusals and stale mount recoveries are only logged");
        return NodeEvents::log_only();
    }
    let Some(client) = client else {
        info!("no Kubernetes: node events are only logged");
        return NodeEvents::log_only();
    };
    info!(
        reporter = events::REPORTER,
        "node events are recorded on PVCs"
    );
    let sink = KubeEvents::new(client.clone(), events::REPORTER, Some(args.node_id.clone()))
        .with_action(events::ACTION);
    NodeEvents::spawn(
        Arc::new(sink),
        events::QUEUE_CAPACITY,
        events::DELIVERY_TIMEOUT,
    )
}

/// Where the node keeps the durable format record (see
/// `--format-record`). Said once, at start.
fn node_format_record(
    args: &NodeArgs,
    client: Option<&kube::Client>,
) -> anyhow::Result<Option<Arc<dyn FormatRecord>>> {
    if let Some(path) = &args.format_record_file {
        if args.format_record == FormatRecordMode::Off {
            bail!("--format-record-file contradicts --format-record off");
        }
        warn!(file = %path.display(), "the durable format record is kept in a file (for tests and standalone use only), not on PVs");
        return Ok(Some(Arc::new(FileFormatRecord::new(path))));
    }
    match (args.format_record, client) {
        (FormatRecordMode::Off, _) => {
            warn!("--format-record off: no durable format record; whether a volume may be formatted rests on the probe alone");
            Ok(None)
        }
        (_, Some(client)) => {
            info!(
                annotation = format_record::ANNOTATION,
                "the durable format record is kept on PVs"
            );
            Ok(Some(Arc::new(KubeFormatRecord::new(
                client.clone(),
                args.common.driver_name.clone(),
            ))))
        }
        (_, None) => {
            warn!("no Kubernetes: the durable format record is off; whether a volume may be formatted rests on the probe alone");
            Ok(None)
        }
    }
}

/// Records this node's host NQN on its Node object, retrying with backoff
/// until it lands or the node stops: the controller refuses to publish to
/// nodes that report the same host NQN, and can only see what is recorded.
async fn record_host_nqn(
    client: kube::Client,
    node: String,
    nqn: String,
    cancel: CancellationToken,
) {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match attachment_manager::host_nqn::record_host_nqn(client.clone(), &node, &nqn).await {
            Ok(()) => {
                info!(node, host_nqn = %nqn, "host NQN recorded on the Node");
                return;
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "cannot record the host NQN on the Node")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(300));
    }
}

pub async fn node(args: NodeArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    check_common(&args.common)?;
    if args.node_id.is_empty() || args.node_id.len() > 256 {
        bail!("--node-id must be 1 to 256 characters");
    }
    let prefix = nvme::NqnPrefix::new(&args.naming.nqn_prefix)
        .map_err(|e| anyhow::anyhow!("--nqn-prefix: {e}"))?;
    let mut prefix = prefix
        .with_volume_prefix(&args.naming.volume_id_prefix)
        .map_err(|e| anyhow::anyhow!("--volume-id-prefix: {e}"))?;
    let mut topology = vec![(TOPOLOGY_KEY.to_string(), args.common.rds_name.clone())];
    if let Some(path) = &args.common.backends_file {
        let others = crate::backends::read(path, &args.common.rds_name)?;
        // Their volumes' subsystems are the driver's whether or not the
        // node reaches them now: a connection made before stays managed.
        for e in &others {
            let q = csi_server::backends::qualifier(&e.name, false);
            prefix = prefix
                .also_owning(&format!("{q}{}", args.naming.volume_id_prefix))
                .map_err(|err| anyhow::anyhow!("backend {}: {err}", e.name))?;
        }
        let reached = crate::backends::reachable(&others, args.backend_probe_timeout).await;
        for e in &others {
            match &reached[&e.name] {
                Ok(()) => {
                    info!(backend = %e.name, "backend reachable: its volumes may be scheduled here");
                    topology.push((crate::backends::topology_key(&e.name), "true".into()));
                }
                Err(err) => warn!(
                    backend = %e.name,
                    error = %format!("{err:#}"),
                    "backend unreachable at start: its volumes are not scheduled on this node until the node plugin restarts and reaches it"
                ),
            }
        }
    }
    // A missing or shared host NQN makes the target mix the sessions of
    // different nodes: refuse to start rather than connect (see
    // docs/safety.md#duplicate-host-nqns).
    let host = nvme::HostIdentity::load(&args.host_nqn_file, &args.host_id_file)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        args.staging_root
            .join("plugins")
            .join(&args.common.driver_name)
            .join("volumes")
    });
    let mut dp_config = nvme::Config::new(prefix, host.clone());
    dp_config.timeouts = nvme::Timeouts {
        command: args.command_timeout,
        format: args.format_timeout,
        device: args.device_timeout,
    };
    let data_path = nvme::DataPath::new(
        nvme::RealExec,
        nvme::RealSys::new(args.io_timeout),
        dp_config,
    );
    let registry = Registry::new();
    let health = Health::always_ready();
    let rpc_metrics = RpcMetrics::register(&registry)?;
    // Both modes of the one binary report the plugin's capabilities, which
    // include the controller service: conformance tools ask the node socket
    // whether a controller exists (Kubernetes asks the controller socket).
    let identity = IdentityService::new(&args.common.driver_name, VERSION, true, health.clone());
    let kube = node_kube(&args).await?;
    let events = node_events(&args, kube.as_ref());
    let format_record = node_format_record(&args, kube.as_ref())?;
    match &kube {
        Some(client) => {
            tokio::spawn(record_host_nqn(
                client.clone(),
                args.node_id.clone(),
                host.nqn.clone(),
                cancel.clone(),
            ));
        }
        None => info!("no Kubernetes client: the host NQN is not recorded on the Node"),
    }
    let mut node = NodeService::with_events(
        NodeConfig {
            node_id: args.node_id.clone(),
            max_volumes: args.max_volumes,
            topology,
            state_dir: state_dir.clone(),
            staging_root: args.staging_root.clone(),
            max_ctrl_loss_tmo: args.max_ctrl_loss_tmo,
        },
        data_path,
        rpc_metrics,
        events.clone(),
    );
    if let Some(r) = format_record {
        node = node.with_format_record(r);
    }
    info!(
        host_nqn = %host.nqn,
        host_id = host.id.as_deref().unwrap_or("-"),
        nqn_prefix = %args.naming.nqn_prefix,
        volume_id_prefix = %args.naming.volume_id_prefix,
        state_dir = %state_dir.display(),
        "NVMe host identity"
    );
    // Before serving, so no RPC can race the cleaner.
    let mode = match args.orphan_cleanup {
        OrphanMode::Off => OrphanCleanup::Off,
        OrphanMode::Report => OrphanCleanup::Report,
        OrphanMode::Disconnect => OrphanCleanup::Disconnect,
    };
    match node.clean_orphans(mode).await {
        Ok(r) => info!(
            mode = ?mode,
            kept = r.kept.len(),
            orphans = r.orphans.len(),
            disconnected = r.disconnected.len(),
            failed = r.failed.len(),
            "orphaned NVMe connections checked"
        ),
        Err(e) => warn!(error = %csi_server::error::chain(&e), "orphan check failed; continuing"),
    }
    let scanner = node.clone();
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node));
    let path = server::socket_path(&args.common.endpoint)?;
    let listener = server::bind_unix(&path)?;
    info!(version = VERSION, endpoint = %path.display(), node = %args.node_id, "node plugin started");
    let metrics_addr = args.common.metrics_addr()?;
    let result = tokio::try_join!(
        serve_csi_and_metrics(router, listener, metrics_addr, registry, health, &cancel),
        async {
            scanner
                .run_orphan_scans(mode, args.orphan_cleanup_interval, cancel.clone())
                .await;
            Ok(())
        },
    );
    // Events raised by the last RPCs get a moment to reach the API server.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), events.flush()).await;
    let _ = std::fs::remove_file(&path);
    result.map(drop)
}

/// Loads an OpenSSH private key, or makes and saves a new Ed25519 one.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<russh::keys::PrivateKey> {
    if path.exists() {
        return routeros::load_key(path).map_err(anyhow::Error::from);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)?;
    let pem = key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?;
    write_private(path, pem.as_bytes())?;
    let public = key.public_key().to_openssh()?;
    std::fs::write(path.with_extension("pub"), format!("{public}\n"))?;
    Ok(key)
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

pub async fn sim(args: SimArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let host_key = load_or_create_key(&args.state_dir.join("ssh_host_ed25519_key"))?;
    let (authorized, client_key_path) = match &args.authorized_key {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            let key = russh::keys::PublicKey::from_openssh(text.trim())
                .with_context(|| format!("{} is not an OpenSSH public key", p.display()))?;
            (key, None)
        }
        None => {
            let path = args.state_dir.join("client_ed25519");
            let key = load_or_create_key(&path)?;
            (key.public_key().clone(), Some(path))
        }
    };
    let pool_size = routeros::parse_size(&args.pool_size)
        .with_context(|| format!("--pool-size {:?}", args.pool_size))?;
    if args.nvmet_addr.is_some() && args.data.is_none() {
        bail!("--nvmet-addr needs --data: the kernel target serves backing files");
    }
    let nvmet = args.nvmet_addr.map(|addr| rds_sim::NvmetConfig {
        addr,
        configfs: args.nvmet_configfs.clone(),
    });
    let handle = rds_sim::start(rds_sim::SimConfig {
        listen: args.listen,
        authorized_keys: vec![authorized],
        host_key: Some(host_key),
        storage: match &args.data {
            Some(d) => rds_sim::Storage::Dir(d.clone()),
            None => rds_sim::Storage::Memory,
        },
        pool_size,
        nvmet: nvmet.clone(),
        ..Default::default()
    })
    .await?;
    handle.faults().set_latency(args.latency);
    println!("RouterOS simulator listening on {}", handle.addr());
    println!("host key fingerprint: {}", handle.host_key_fingerprint());
    if let Some(n) = &nvmet {
        println!(
            "exporting disks over NVMe/TCP on {} through {}",
            n.addr,
            n.configfs.display()
        );
    }
    if let Some(p) = client_key_path {
        println!("client key: {}", p.display());
        println!(
            "run a controller against it:\n  rds-csi controller --endpoint unix:///tmp/rds-csi.sock --rds-address {} --rds-key-file {} --rds-host-key {} --metrics-address off",
            handle.addr(),
            p.display(),
            handle.host_key_fingerprint()
        );
    }
    cancel.cancelled().await;
    handle.shutdown().await;
    Ok(())
}
