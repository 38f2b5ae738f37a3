//! Command-line interface. Every service flag also reads an environment
//! variable, so the Helm chart can set either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("RDS_CSI_GIT_COMMIT"));

#[derive(Parser, Debug)]
#[command(name = "rds-csi", version = VERSION, about = "Kubernetes CSI driver for NVMe/TCP volumes on a MikroTik ROSE Data Server")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "RDS_CSI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `info,routeros=debug`).
    #[arg(long, env = "RDS_CSI_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the CSI identity and controller services (talks to the storage
    /// server: an RDS, or a Linux host with --backend nvmet).
    Controller(Box<ControllerArgs>),
    /// Run the CSI identity and node services (on every node).
    Node(Box<NodeArgs>),
    /// Run the RouterOS simulator: the RDS disk CLI over real SSH.
    Sim(SimArgs),
    /// Start a simulator and a controller in-process and walk a volume
    /// through its whole life over CSI, printing each step.
    Demo(DemoArgs),
    /// Call CSI RPCs by hand against a running driver.
    Csi(crate::client::CsiArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// CSI endpoint (unix socket).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    /// CSI driver name. The default matches the existing Go driver, so its
    /// volumes keep working.
    #[arg(long, env = "RDS_CSI_DRIVER_NAME", default_value = "rds.csi.srvlab.io")]
    pub driver_name: String,
    /// Address for /metrics, /healthz and /readyz; `off` disables it.
    #[arg(long, env = "RDS_CSI_METRICS_ADDRESS", default_value = "0.0.0.0:9809")]
    pub metrics_address: String,
    /// Topology value every volume and node of this RDS share (key
    /// `rds.csi.srvlab.io/rds`).
    #[arg(long, env = "RDS_CSI_RDS_NAME", default_value = "default")]
    pub rds_name: String,
    /// More storage servers beside the default one (JSON; see
    /// docs/configuration.md#several-backends). The controller serves
    /// them; the node plugin reports which it can reach and treats their
    /// volumes' subsystems as the driver's. Give both the same file.
    #[arg(long, env = "RDS_CSI_BACKENDS_FILE")]
    pub backends_file: Option<PathBuf>,
}

impl CommonArgs {
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.metrics_address.as_str() {
            "off" | "" => Ok(None),
            a => {
                Ok(Some(a.parse().map_err(|e| {
                    anyhow::anyhow!("--metrics-address {a:?}: {e}")
                })?))
            }
        }
    }
}

/// How the driver names its volumes, on the RDS and on the node: the
/// controller and the node plugin must be given the same values.
#[derive(Args, Debug, Clone)]
pub struct NamingArgs {
    /// Volume IDs (CreateVolume names) must start with this; ListVolumes
    /// shows only these, and the node plugin calls a subsystem the driver's
    /// only when its NQN is --nqn-prefix followed by such an ID. The
    /// external-provisioner's default is `pvc`. Must be the same for the
    /// controller and the node plugin.
    #[arg(long, env = "RDS_CSI_VOLUME_ID_PREFIX", default_value = "pvc-")]
    pub volume_id_prefix: String,
    /// NQN prefix; a volume's NQN is this followed by its ID. The node
    /// plugin connects only subsystems whose NQN starts with it, and only
    /// they are ever disconnected. Must be the same for the controller and
    /// the node plugin.
    #[arg(
        long,
        env = "RDS_CSI_NQN_PREFIX",
        default_value = "nqn.2000-02.com.mikrotik:"
    )]
    pub nqn_prefix: String,
}

#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Which storage server the volumes live on: `rds`, a MikroTik RDS
    /// (RouterOS disks; Go-compatible volume IDs), or `nvmet`, a Linux
    /// host's LVM thin pool exported through the kernel NVMe target (see
    /// the --nvmet-* flags). The --rds-* SSH flags (address, user, key,
    /// host key, sessions, timeouts) name the storage server's SSH for
    /// either.
    #[arg(long, env = "RDS_CSI_BACKEND", value_enum, default_value_t = BackendKind::Rds)]
    pub backend: BackendKind,
    /// The storage server's SSH address, `host` or `host:port` (port 22 by
    /// default): the RDS, or the Linux host with --backend nvmet.
    #[arg(long, env = "RDS_ADDRESS")]
    pub rds_address: String,
    /// The storage server's SSH user (with --backend nvmet: root, or a user
    /// allowed `sudo -n sh` with --nvmet-sudo).
    #[arg(long, env = "RDS_USER", default_value = "csi")]
    pub rds_user: String,
    /// OpenSSH private key file for the storage server's SSH user.
    #[arg(long, env = "RDS_KEY_FILE")]
    pub rds_key_file: PathBuf,
    /// Pinned SHA-256 fingerprint of the storage server's SSH host key
    /// (`SHA256:...`, as printed by `ssh-keygen -lf`). Required unless
    /// host-key checking is explicitly disabled.
    #[arg(
        long,
        env = "RDS_HOST_KEY",
        conflicts_with = "rds_insecure_skip_host_key_check"
    )]
    pub rds_host_key: Option<String>,
    /// Accept any storage server host key. Insecure: anyone on the path
    /// can impersonate the server. For labs only.
    #[arg(
        long,
        env = "RDS_INSECURE_SKIP_HOST_KEY_CHECK",
        default_value_t = false
    )]
    pub rds_insecure_skip_host_key_check: bool,
    /// Concurrent SSH channels on the one connection to the storage server.
    #[arg(long, env = "RDS_MAX_SESSIONS", default_value_t = 8)]
    pub rds_max_sessions: usize,
    /// Deadline for one command on the storage server.
    #[arg(long, env = "RDS_COMMAND_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub rds_command_timeout: Duration,
    /// Deadline for connecting and authenticating.
    #[arg(long, env = "RDS_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub rds_connect_timeout: Duration,
    /// NVMe/TCP target address given to nodes (default: the host of
    /// --rds-address; with --backend nvmet, --nvmet-listen-address).
    /// StorageClass `nvmeAddress` overrides it.
    #[arg(long, env = "RDS_NVME_ADDRESS")]
    pub nvme_address: Option<String>,
    /// Default NVMe/TCP port. StorageClass `nvmePort` overrides it. With
    /// --backend nvmet, --nvmet-port is the only port.
    #[arg(long, env = "RDS_NVME_PORT", default_value_t = 4420)]
    pub nvme_port: u16,
    /// Default directory of backing files. StorageClass `volumePath`
    /// overrides it.
    #[arg(
        long,
        env = "RDS_VOLUME_PATH",
        default_value = "/storage-pool/metal-csi"
    )]
    pub volume_path: String,
    /// Directory every `volumePath` must lie under (default: the pool, the
    /// first component of --volume-path).
    #[arg(long, env = "RDS_VOLUME_PATH_ROOT")]
    pub volume_path_root: Option<String>,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub nvmet: NvmetArgs,
    /// Largest volume CreateVolume and expansion accept (bytes or a size
    /// such as `16T`).
    #[arg(long, env = "RDS_CSI_MAX_VOLUME_SIZE", default_value = "16T")]
    pub max_volume_size: String,
    /// Node IDs that exist (repeat or comma-separate), each optionally
    /// with its NVMe host NQN as `NODE=HOSTNQN` (standalone mode; what
    /// --rds-fencing admits). Publishing to any other node is NOT_FOUND.
    /// Empty: every node is taken to exist.
    #[arg(long = "node", env = "RDS_CSI_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// How often the backend health (and pool capacity) is polled.
    #[arg(long, env = "RDS_CSI_HEALTH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// Kubeconfig file. Without it: the in-cluster configuration, then
    /// $KUBECONFIG and ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run without Kubernetes: attachment state in memory only (lost on
    /// restart), nodes from --node, no KubeVirt verification, events only
    /// logged. For demos and conformance runs, never for production.
    #[arg(long, env = "RDS_CSI_STANDALONE", default_value_t = false)]
    pub standalone: bool,
    /// After a volume is released on one node, a publish on another node
    /// within this period is counted and timed as a handoff.
    #[arg(long, env = "RDS_CSI_ATTACHMENT_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub attachment_grace_period: Duration,
    /// Admit any second node for raw-block multi-node volumes, without a
    /// verified KubeVirt migration. Only for clusters without KubeVirt.
    #[arg(
        long,
        env = "RDS_CSI_ALLOW_UNVERIFIED_MIGRATION",
        default_value_t = false
    )]
    pub allow_unverified_migration: bool,
    /// Fence at the RDS: each disk's NVMe/TCP export admits only the host
    /// NQNs of the nodes that hold the volume (RouterOS's
    /// nvme-tcp-server-allow-host-name), and a host that loses its place
    /// has its sessions cut. Opt-in: the property's semantics on real
    /// hardware are unverified (docs/attachments.md). Every node plugin
    /// must record its host NQN on its Node first.
    #[arg(long, env = "RDS_CSI_RDS_FENCING", default_value_t = false, action = clap::ArgAction::Set)]
    pub rds_fencing: bool,
    /// Period of the stale-attachment sweep: it releases holders whose
    /// VolumeAttachment no longer exists and reports attachments on deleted
    /// or long NotReady nodes. It also runs at start and after every backend
    /// reconnect; out-of-service taints are acted on at once through a
    /// watch, and a Node deletion triggers a pass and a report (a deleted
    /// Node alone releases nothing).
    #[arg(long, env = "RDS_CSI_ATTACHMENT_RECONCILE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub attachment_reconcile_interval: Duration,
    /// Report (event and metric, no action) attachments on nodes NotReady
    /// for longer than this.
    #[arg(long, env = "RDS_CSI_NOT_READY_THRESHOLD", default_value = "5m", value_parser = humantime::parse_duration)]
    pub not_ready_threshold: Duration,
    /// Serialize publishes for the volumes of one KubeVirt VM.
    #[arg(long, env = "RDS_CSI_VMI_GROUPER", default_value_t = true, action = clap::ArgAction::Set)]
    pub vmi_grouper: bool,
    /// Sweep for orphan volumes (backend disks with --volume-id-prefix that
    /// no PersistentVolume references) and orphan backing files under
    /// --volume-path. Report-only unless --orphan-delete is set. Needs
    /// Kubernetes (off in --standalone).
    #[arg(long, env = "RDS_CSI_ORPHAN_RECONCILER", default_value_t = true, action = clap::ArgAction::Set)]
    pub orphan_reconciler: bool,
    /// Period of the orphan sweep.
    #[arg(long, env = "RDS_CSI_ORPHAN_RECONCILE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub orphan_reconcile_interval: Duration,
    /// Delete orphan volumes of this cluster (--cluster-id) found on two
    /// consecutive sweeps that have had no PersistentVolume for longer than
    /// --orphan-grace-period. Volumes of other clusters, volumes with no
    /// cluster identity, volumes whose PersistentVolume had reclaim policy
    /// Retain, and orphan files are never deleted.
    #[arg(long, env = "RDS_CSI_ORPHAN_DELETE", default_value_t = false, action = clap::ArgAction::Set)]
    pub orphan_delete: bool,
    /// Least time since the sweep first found a volume without a
    /// PersistentVolume (recorded on the disk), and since CreateVolume last
    /// returned it, before the volume may be deleted.
    #[arg(long, env = "RDS_CSI_ORPHAN_GRACE_PERIOD", default_value = "1h", value_parser = humantime::parse_duration)]
    pub orphan_grace_period: Duration,
    /// This cluster's identity, written into the comment of every disk the
    /// controller creates; the orphan sweep only ever acts on disks that
    /// carry it. Default: the UID of the kube-system namespace (read at
    /// start), or `standalone` with --standalone. 1 to 63 letters, digits,
    /// '-', '_' or '.', a letter or digit at both ends.
    #[arg(long, env = "RDS_CSI_CLUSTER_ID")]
    pub cluster_id: Option<String>,
}

/// `--backend`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A MikroTik RDS over RouterOS.
    Rds,
    /// A Linux host: LVM thin volumes exported by the kernel NVMe target.
    Nvmet,
}

/// Where `--backend nvmet` makes and exports volumes, on the Linux host
/// the --rds-* SSH flags reach.
#[derive(Args, Debug, Clone)]
pub struct NvmetArgs {
    /// The LVM volume group of the thin pool (--backend nvmet).
    #[arg(long, env = "RDS_CSI_NVMET_VOLUME_GROUP")]
    pub nvmet_volume_group: Option<String>,
    /// The LVM thin pool volumes are made in (--backend nvmet).
    #[arg(long, env = "RDS_CSI_NVMET_THIN_POOL")]
    pub nvmet_thin_pool: Option<String>,
    /// The IP address the kernel NVMe target listens on (its port's
    /// traddr), which nodes connect to (--backend nvmet).
    #[arg(long, env = "RDS_CSI_NVMET_LISTEN_ADDRESS")]
    pub nvmet_listen_address: Option<std::net::IpAddr>,
    /// The NVMe/TCP port the kernel target listens on; also the ID of its
    /// configfs port (--backend nvmet).
    #[arg(long, env = "RDS_CSI_NVMET_PORT", default_value_t = 4420)]
    pub nvmet_port: u16,
    /// Run the host's commands through `sudo -n` (the SSH user is not
    /// root) (--backend nvmet).
    #[arg(long, env = "RDS_CSI_NVMET_SUDO", default_value_t = false, action = clap::ArgAction::Set)]
    pub nvmet_sudo: bool,
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// This node's ID, normally the Kubernetes node name.
    #[arg(long, env = "NODE_ID")]
    pub node_id: String,
    /// How long the node waits, at start, for each backend of
    /// --backends-file to accept a TCP connection on its NVMe/TCP port
    /// before it reports the backend unreachable.
    #[arg(long, env = "RDS_CSI_BACKEND_PROBE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub backend_probe_timeout: Duration,
    /// Most volumes this node accepts (0: no limit).
    #[arg(long, env = "RDS_CSI_MAX_VOLUMES", default_value_t = 0)]
    pub max_volumes: i64,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// This node's NVMe host NQN (one line). The node refuses to start when
    /// it is missing or a value known to be shared by many machines.
    #[arg(
        long,
        env = "RDS_CSI_HOST_NQN_FILE",
        default_value = "/etc/nvme/hostnqn"
    )]
    pub host_nqn_file: PathBuf,
    /// This node's NVMe host ID (a UUID). Optional: without the file,
    /// nvme-cli picks one.
    #[arg(long, env = "RDS_CSI_HOST_ID_FILE", default_value = "/etc/nvme/hostid")]
    pub host_id_file: PathBuf,
    /// Kubelet's root directory. At start, the orphan cleaner looks under
    /// it (under `plugins/` when that exists) for device nodes of raw block
    /// volumes.
    #[arg(long, env = "RDS_CSI_STAGING_ROOT", default_value = "/var/lib/kubelet")]
    pub staging_root: PathBuf,
    /// Where the node keeps one record per staged volume (default:
    /// `<staging-root>/plugins/<driver-name>/volumes`). Must survive
    /// restarts of the node plugin.
    #[arg(long, env = "RDS_CSI_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// At start, what to do with NVMe connections under --nqn-prefix that
    /// no staged volume accounts for (not recorded, not mounted, not open,
    /// no device node under --staging-root).
    #[arg(long, env = "RDS_CSI_ORPHAN_CLEANUP", value_enum, default_value_t = OrphanMode::Disconnect)]
    pub orphan_cleanup: OrphanMode,
    /// While serving, how often to look for orphaned connections again
    /// (same rules as at start; in disconnect mode a connection must look
    /// orphaned on two consecutive scans before it is disconnected). 0
    /// turns the periodic scan off.
    #[arg(long, env = "RDS_CSI_ORPHAN_CLEANUP_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub orphan_cleanup_interval: Duration,
    /// Deadline for each nvme-cli and blkid run.
    #[arg(long, env = "RDS_CSI_COMMAND_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,
    /// Deadline for each mkfs, e2fsck, resize2fs and xfs_growfs run.
    #[arg(long, env = "RDS_CSI_FORMAT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub format_timeout: Duration,
    /// How long a block device may take to appear after a connect, or to
    /// reach its new size after a rescan.
    #[arg(long, env = "RDS_CSI_DEVICE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub device_timeout: Duration,
    /// Deadline for each syscall that can wait on a device (reading it,
    /// mount, umount, statfs).
    #[arg(long, env = "RDS_CSI_IO_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub io_timeout: Duration,
    /// Upper bound in seconds for a volume's ctrlLossTmo; -1 ("reconnect
    /// forever") is lowered to it too. Unset: as the volume says. A node
    /// with unreachable targets can hang on shutdown that long.
    #[arg(long, env = "RDS_CSI_MAX_CTRL_LOSS_TMO", value_parser = clap::value_parser!(i32).range(0..=86_400))]
    pub max_ctrl_loss_tmo: Option<i32>,
    /// Kubernetes events on the PVC (MountFailed, FormatRefused,
    /// StaleMountRecovered): `auto` records them when a Kubernetes
    /// configuration is found (--kubeconfig, in-cluster, $KUBECONFIG,
    /// ~/.kube/config) and otherwise only logs them; `on` refuses to start
    /// without one; `off` only logs them.
    #[arg(long, env = "RDS_CSI_EVENTS", value_enum, default_value_t = EventsMode::Auto)]
    pub events: EventsMode,
    /// The durable record that a volume was formatted: the PV annotation
    /// rds.csi.srvlab.io/formatted, read before any mkfs and written before
    /// NodeStageVolume returns; a volume it calls formatted that probes
    /// empty is refused. `auto` keeps it when a Kubernetes configuration is
    /// found and otherwise lets the probe alone decide; `on` refuses to
    /// start without one; `off`: the probe alone decides.
    #[arg(long, env = "RDS_CSI_FORMAT_RECORD", value_enum, default_value_t = FormatRecordMode::Auto)]
    pub format_record: FormatRecordMode,
    /// For tests and standalone use only: keep the format record in this
    /// JSON file (volume ID -> filesystem) instead of on PVs. Same rules;
    /// entries are never removed.
    #[arg(long, env = "RDS_CSI_FORMAT_RECORD_FILE", hide = true)]
    pub format_record_file: Option<PathBuf>,
    /// Kubeconfig file for events and the format record. Without it: the
    /// in-cluster configuration, then $KUBECONFIG and ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// `--format-record`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatRecordMode {
    /// Keep the record on PVs when a Kubernetes configuration is found;
    /// else the probe alone decides.
    Auto,
    /// Keep the record; refuse to start without a Kubernetes configuration.
    On,
    /// No record: the probe alone decides.
    Off,
}

/// `--events`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsMode {
    /// Record events when a Kubernetes configuration is found; else log.
    Auto,
    /// Record events; refuse to start without a Kubernetes configuration.
    On,
    /// Only log events.
    Off,
}

/// `--orphan-cleanup`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanMode {
    /// Do not look.
    Off,
    /// Log orphaned connections, touch nothing.
    Report,
    /// Disconnect them.
    Disconnect,
}

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// SSH listen address.
    #[arg(long, env = "RDS_SIM_LISTEN", default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// Keep disks as sparse files in this directory (default: memory).
    #[arg(long, env = "RDS_SIM_DATA")]
    pub data: Option<PathBuf>,
    /// Public key file allowed to log in. Without one, a client key is
    /// generated under --state-dir and printed.
    #[arg(long, env = "RDS_SIM_AUTHORIZED_KEY")]
    pub authorized_key: Option<PathBuf>,
    /// Where the simulator keeps its host key and generated client key, so
    /// fingerprints stay the same across restarts.
    #[arg(long, env = "RDS_SIM_STATE_DIR", default_value = "/tmp/rds-sim")]
    pub state_dir: PathBuf,
    /// Pool size (bytes or e.g. `8T`).
    #[arg(long, env = "RDS_SIM_POOL_SIZE", default_value = "8T")]
    pub pool_size: String,
    /// Latency added to every command.
    #[arg(long, env = "RDS_SIM_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Export disks for real over NVMe/TCP on this address, through the
    /// Linux kernel NVMe target (needs --data, root, the nvmet and
    /// nvmet-tcp modules and configfs).
    #[arg(long, env = "RDS_SIM_NVMET_ADDR")]
    pub nvmet_addr: Option<std::net::IpAddr>,
    /// The kernel NVMe target's configfs directory.
    #[arg(
        long,
        env = "RDS_SIM_NVMET_CONFIGFS",
        default_value = rds_sim::DEFAULT_CONFIGFS,
        requires = "nvmet_addr"
    )]
    pub nvmet_configfs: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Latency the simulator adds to every RouterOS command.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
}

fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!(
            "rds-csi: --log-level {:?} is not a valid filter ({e}); using info",
            args.log_level
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match &cli.command {
        // The demo prints its own story; keep the driver's logs to warnings.
        Cmd::Demo(_) | Cmd::Csi(_) if cli.log.log_level == "info" => LogArgs {
            log_level: "warn".into(),
            ..cli.log.clone()
        },
        _ => cli.log.clone(),
    };
    init_logging(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rds-csi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Controller(a) => crate::run::controller(*a, crate::run::shutdown_signal()).await,
            Cmd::Node(a) => crate::run::node(*a, crate::run::shutdown_signal()).await,
            Cmd::Sim(a) => crate::run::sim(a, crate::run::shutdown_signal()).await,
            Cmd::Demo(a) => crate::demo::run(a).await,
            Cmd::Csi(a) => crate::client::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rds-csi: {e:#}");
            ExitCode::FAILURE
        }
    }
}
