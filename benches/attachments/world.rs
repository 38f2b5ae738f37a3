//! The run's world (API server, simulator, key, names) and the
//! `rds-csi controller` child processes it spawns.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use csi_server::proto::controller_client::ControllerClient;
use rds_sim::SimHandle;
use serde_json::json;

use crate::support::{connect_lazy, controller_command, BoxResult, Process, BIN};
use crate::{Csi, LABEL, NODES};

/// A `rds-csi controller` child process.
pub struct Controller {
    pub process: Process,
    pub csi: Csi,
    pub log: PathBuf,
    /// When it was spawned, on the monotonic and on the wall clock.
    pub started: Instant,
    pub started_wall: jiff::Timestamp,
    pub metrics_port: u16,
}

/// What the controller logged when its attachment state was rebuilt.
pub struct Rebuilt {
    /// From spawn to the log line (wall clock of the line's timestamp).
    pub since_spawn: Duration,
    /// The rebuild itself, as the controller measured it.
    pub elapsed: String,
    pub attached: u64,
}

pub struct World {
    pub dir: PathBuf,
    pub sim: SimHandle,
    pub key: PathBuf,
    pub kubeconfig: PathBuf,
    pub driver: String,
    pub run: String,
    pub client: kube::Client,
    pub apiserver_pid: Option<u32>,
    pub etcd_pid: Option<u32>,
    /// etcd's client port (its /metrics), when this benchmark started it.
    pub etcd_port: Option<u16>,
}

impl World {
    pub fn spawn(&self, name: &str) -> BoxResult<Controller> {
        self.spawn_with(name, &[])
    }

    /// A controller with the world's Kubernetes, JSON logs in `DIR/NAME.log`
    /// and metrics on a free port, plus `args`.
    pub fn spawn_with(&self, name: &str, args: &[&str]) -> BoxResult<Controller> {
        let sock = self.dir.join(format!("{name}.sock"));
        let metrics_port = free_port()?;
        let log = self.dir.join(format!("{name}.log"));
        let started_wall = jiff::Timestamp::now();
        let started = Instant::now();
        let child = controller_command(&sock, &self.sim, &self.key)
            .arg("--driver-name")
            .arg(&self.driver)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("RDS_CSI_LOG", "info")
            .env("RDS_CSI_LOG_FORMAT", "json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        Ok(Controller {
            process: Process(child),
            csi: ControllerClient::new(connect_lazy(sock)?),
            log,
            started,
            started_wall,
            metrics_port,
        })
    }

    pub fn node(&self, i: usize) -> String {
        format!("{}-n{:02}", self.run, i % NODES)
    }

    pub fn volume(&self, i: usize) -> String {
        format!("pvc-{}-{i:04}", self.run)
    }

    pub fn labels(&self) -> serde_json::Value {
        json!({ LABEL: self.run })
    }
}

impl Controller {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits for the "attachment state rebuilt" log line.
    pub async fn rebuilt(&mut self, timeout: Duration) -> BoxResult<Rebuilt> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let msg = v["fields"]["message"].as_str().unwrap_or_default();
                if !msg.starts_with("attachment state rebuilt") {
                    continue;
                }
                let at: jiff::Timestamp = v["timestamp"]
                    .as_str()
                    .ok_or("log line without a timestamp")?
                    .parse()?;
                let since = at.duration_since(self.started_wall);
                return Ok(Rebuilt {
                    since_spawn: Duration::try_from(since).unwrap_or_default(),
                    elapsed: v["fields"]["elapsed"].as_str().unwrap_or("?").to_string(),
                    attached: v["fields"]["attached"].as_u64().unwrap_or(0),
                });
            }
            if let Some(status) = self.process.0.try_wait()? {
                return Err(format!(
                    "controller exited with {status}; see {}:\n{text}",
                    self.log.display()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no \"attachment state rebuilt\" within {timeout:?}; see {}",
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn free_port() -> BoxResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
