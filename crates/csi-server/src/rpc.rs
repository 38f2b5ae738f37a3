//! What both services do with an RPC's outcome: count and time it by method
//! and gRPC code, log it (a failure that needs an operator, INTERNAL,
//! UNAVAILABLE or DEADLINE_EXCEEDED, as a warning; a refusal as info), and
//! turn the error into a status whose message is the whole cause chain
//! (each service's error type has the one mapping to codes).

use std::future::Future;

use tonic::{Code, Response, Status};
use tracing::{debug, info, warn, Level};

use crate::metrics::RpcMetrics;

/// How an RPC is logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log<'a> {
    /// The volume, when the RPC is about one.
    pub volume: Option<&'a str>,
    /// The level of a "done" line on success (INFO or DEBUG); none: only
    /// failures are logged.
    pub done: Option<Level>,
}

/// Runs `work` as the RPC `rpc`, timed from the first poll.
pub async fn run<T, E: Into<Status>>(
    metrics: &RpcMetrics,
    rpc: &'static str,
    log: Log<'_>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<Response<T>, Status> {
    let timer = metrics.start(rpc);
    let result = work.await;
    let volume = log.volume;
    match result {
        Ok(resp) => {
            timer.finish(Code::Ok);
            match log.done {
                Some(Level::INFO) => info!(rpc, volume, "done"),
                Some(_) => debug!(rpc, volume, "done"),
                None => {}
            }
            Ok(Response::new(resp))
        }
        Err(e) => {
            let status: Status = e.into();
            let code = status.code();
            timer.finish(code);
            if matches!(
                code,
                Code::Internal | Code::Unavailable | Code::DeadlineExceeded
            ) {
                warn!(rpc, volume, code = ?code, error = %status.message(), "RPC failed");
            } else {
                info!(rpc, volume, code = ?code, error = %status.message(), "RPC refused");
            }
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;

    fn count(registry: &Registry, method: &str, code: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "rds_csi_rpc_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| {
                let l = m.get_label();
                l.iter()
                    .any(|p| p.name() == "method" && p.value() == method)
                    && l.iter().any(|p| p.name() == "code" && p.value() == code)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[tokio::test]
    async fn every_outcome_is_counted_under_its_code_and_an_error_becomes_its_status() {
        let registry = Registry::new();
        let metrics = RpcMetrics::register(&registry).unwrap();
        let ok = run(&metrics, "NodeStageVolume", Log::default(), async {
            Ok::<_, Status>(1)
        })
        .await
        .unwrap();
        assert_eq!(ok.into_inner(), 1);
        let err = run(&metrics, "NodeStageVolume", Log::default(), async {
            Err::<(), _>(Status::unavailable("the RDS does not answer"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(err.message(), "the RDS does not answer");
        assert_eq!(count(&registry, "NodeStageVolume", "OK"), 1);
        assert_eq!(count(&registry, "NodeStageVolume", "Unavailable"), 1);
    }
}
