//! Per-RPC metrics: a counter by method and gRPC code, and a latency
//! histogram by method.

use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Registers `metric` with `registry` and hands it back, so a metric is
/// made and registered in one expression.
pub fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

#[derive(Clone)]
pub struct RpcMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
    copy_methods: IntGaugeVec,
}

impl RpcMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let calls = IntCounterVec::new(
            Opts::new(
                "rds_csi_rpc_total",
                "CSI RPCs handled, by method and gRPC status code.",
            ),
            &["method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rds_csi_rpc_duration_seconds",
                "CSI RPC latency, by method.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["method"],
        )?;
        let copy_methods = IntGaugeVec::new(
            Opts::new(
                "rds_csi_pool_copy_methods",
                "1 for each way of copying a disk (snapshots, clones) the storage pool allows, as read at start.",
            ),
            &["method"],
        )?;
        Ok(RpcMetrics {
            calls: registered(registry, calls)?,
            duration: registered(registry, duration)?,
            copy_methods: registered(registry, copy_methods)?,
        })
    }

    /// The copy methods the pool allows (controller, at start).
    pub fn set_copy_methods(&self, methods: &[storage::CopyMethod]) {
        self.copy_methods.reset();
        for m in methods {
            self.copy_methods.with_label_values(&[m.as_str()]).set(1);
        }
    }

    /// Metrics that go nowhere, for tests that do not look at them.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    pub fn start(&self, method: &'static str) -> RpcTimer {
        RpcTimer {
            metrics: self.clone(),
            method,
            started: Instant::now(),
        }
    }
}

pub struct RpcTimer {
    metrics: RpcMetrics,
    method: &'static str,
    started: Instant,
}

impl RpcTimer {
    pub fn finish(self, code: tonic::Code) {
        // gRPC's own spelling of the code names: "OK", "InvalidArgument", ...
        let code = match code {
            tonic::Code::Ok => "OK".to_string(),
            other => format!("{other:?}"),
        };
        self.metrics
            .calls
            .with_label_values(&[self.method, &code])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[self.method])
            .observe(self.started.elapsed().as_secs_f64());
    }
}
