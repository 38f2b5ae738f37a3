//! A standalone `rds-csi controller` child process (no Kubernetes:
//! attachment state in memory) and a CSI client connected to it, as the
//! controller and snapshot benchmarks use it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use csi_server::proto::{
    self, controller_client::ControllerClient, identity_client::IdentityClient,
};
use rds_sim::SimHandle;
use tonic::transport::Channel;

use crate::support::{connect_lazy, controller_command, memory_kib, BoxResult, Process, BIN};

pub type Client = ControllerClient<Channel>;

/// The volume ID prefix the controller is started with.
pub const PREFIX: &str = "bench-";

/// A `rds-csi controller` child process and a CSI client connected to it.
pub struct Controller {
    pub process: Process,
    pub client: Client,
}

impl Controller {
    /// Starts `rds-csi controller --standalone` against `sim` with volume
    /// IDs starting with [`PREFIX`], logging to `dir/NAME.log`, and waits
    /// until Probe reports ready.
    pub async fn start(
        dir: &Path,
        name: &str,
        sim: &SimHandle,
        key: &Path,
        max_sessions: Option<u32>,
    ) -> BoxResult<Controller> {
        let sessions = max_sessions.map(|n| format!("--rds-max-sessions={n}"));
        Self::start_with(dir, name, sim, key, sessions.as_slice()).await
    }

    /// [`Controller::start`] with more flags.
    pub async fn start_with(
        dir: &Path,
        name: &str,
        sim: &SimHandle,
        key: &Path,
        flags: &[String],
    ) -> BoxResult<Controller> {
        let sock = dir.join(format!("{name}.sock"));
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let mut cmd = controller_command(&sock, sim, key);
        cmd.arg("--metrics-address")
            .arg("off")
            .arg("--volume-id-prefix")
            .arg(PREFIX)
            // No Kubernetes here: attachment state in memory.
            .arg("--standalone")
            .args(flags);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        let mut ctl = Controller {
            process: Process(child),
            client: ControllerClient::new(connect_lazy(sock.clone())?),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = ctl.process.0.try_wait()? {
                return Err(format!(
                    "controller exited with {status}; see {}",
                    dir.join(format!("{name}.log")).display()
                )
                .into());
            }
            if sock.exists() {
                let mut identity = IdentityClient::new(connect_lazy(sock.clone())?);
                if let Ok(r) = identity.probe(proto::ProbeRequest {}).await {
                    if r.into_inner().ready == Some(true) {
                        return Ok(ctl);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err("controller did not become ready in 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// VmRSS and VmHWM (KiB) after `settle`, once what the last requests
    /// left behind has been freed.
    pub async fn settled_memory(&self, settle: Duration) -> (u64, u64) {
        tokio::time::sleep(settle).await;
        memory_kib(self.process.pid())
    }
}
