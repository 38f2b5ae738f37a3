//! Prometheus collectors of the SSH transport.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ClientMetrics {
    pub commands: IntCounterVec,
    pub duration: HistogramVec,
    pub connected: IntGauge,
    pub connects: IntCounterVec,
}

impl ClientMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let commands = IntCounterVec::new(
            Opts::new(
                "rds_csi_ssh_commands_total",
                "RouterOS commands sent over SSH, by command and outcome.",
            ),
            &["command", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rds_csi_ssh_command_duration_seconds",
                "Time from asking for an SSH channel to the last byte of a RouterOS command.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["command"],
        )?;
        let connected = IntGauge::new(
            "rds_csi_ssh_connected",
            "1 while an authenticated SSH connection to the RDS is open.",
        )?;
        let connects = IntCounterVec::new(
            Opts::new(
                "rds_csi_ssh_connects_total",
                "SSH connection attempts to the RDS, by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(connects.clone()))?;
        Ok(ClientMetrics {
            commands,
            duration,
            connected,
            connects,
        })
    }
}
