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

/// A registry whose metrics all carry the label `label=value` (one per
/// backend: `backend="lab2"`), gathered with `parent`'s: the same metric
/// names, told apart by the label, in one scrape.
pub fn scoped(parent: &Registry, label: &str, value: &str) -> prometheus::Result<Registry> {
    let labels = std::collections::HashMap::from([(label.to_string(), value.to_string())]);
    let child = Registry::new_custom(None, Some(labels.clone()))?;
    // A registry is known by its descriptors: one naming the label value
    // keeps two scopes apart. It describes no metric of its own.
    let desc = prometheus::core::Desc::new(
        "rds_csi_metric_scope".into(),
        "A group of metrics that share a label.".into(),
        vec![],
        labels,
    )?;
    parent.register(Box::new(Scope {
        registry: child.clone(),
        desc,
    }))?;
    Ok(child)
}

struct Scope {
    registry: Registry,
    desc: prometheus::core::Desc,
}

impl Collector for Scope {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, IntGauge, TextEncoder};

    #[test]
    fn scoped_registries_label_their_metrics_and_are_scraped_as_one() {
        let parent = Registry::new();
        for (backend, up) in [("a", 1), ("b", 0)] {
            let scope = scoped(&parent, "backend", backend).unwrap();
            let g = registered(&scope, IntGauge::new("x_up", "Up.").unwrap()).unwrap();
            g.set(up);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&parent.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("x_up{backend=\"a\"} 1"), "{text}");
        assert!(text.contains("x_up{backend=\"b\"} 0"), "{text}");
        assert_eq!(text.matches("# TYPE x_up").count(), 1, "{text}");
        assert!(!text.contains("rds_csi_metric_scope"), "{text}");
        // The same scope twice would count its metrics twice.
        assert!(scoped(&parent, "backend", "a").is_err());
    }
}
