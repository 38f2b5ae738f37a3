//! Controller starts against thousands of attached VolumeAttachments: how
//! long the rebuild takes, when the first publish succeeds, and the memory.

use std::time::Duration;

use crate::apiserver::api_get;
use crate::memory::{inspect_heap, smaps_summary};
use crate::metrics::{msum, parse_metrics};
use crate::publish::{publish, unpublish, Vol};
use crate::support::{memory_kib, BoxResult};
use crate::world::{Rebuilt, World};
use crate::{REBUILD, STARTS};

/// One controller start against the `REBUILD` attachments.
pub struct Start {
    pub label: String,
    pub rebuilt: Rebuilt,
    pub first_publish: Duration,
    pub rss: u64,
    pub hwm: u64,
    /// `smaps_summary` when RSS was read.
    pub smaps: String,
    /// Server-side time of the controller's LISTs of PVs and of
    /// VolumeAttachments (API server histograms; NaN if not exactly one).
    pub list_pv: (f64, f64),
    pub list_va: (f64, f64),
    /// With `inspect`: the allocator's bytes in use (glibc malloc_stats)
    /// and VmRSS after malloc_trim(0), both through gdb.
    pub heap: Option<(u64, u64)>,
}

pub async fn measure_start(
    w: &World,
    name: &str,
    label: &str,
    inspect: bool,
    probe: &Vol,
) -> BoxResult<Start> {
    let before = parse_metrics(&api_get(w, "/metrics").await);
    let mut ctl = w.spawn(name)?;
    // Publish as the external-attacher would, retrying until it succeeds.
    let mut csi = ctl.csi.clone();
    let first_publish = loop {
        match publish(&mut csi, probe).await {
            Ok(_) => break ctl.started.elapsed(),
            Err(e) => {
                if ctl.started.elapsed() > Duration::from_secs(60) {
                    return Err(format!("no successful publish within 60 s: {e}").into());
                }
                if let Some(status) = ctl.process.0.try_wait()? {
                    return Err(format!("controller exited with {status}").into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let rebuilt = ctl.rebuilt(Duration::from_secs(10)).await?;
    // Let start-up allocations settle before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, hwm) = memory_kib(ctl.pid());
    let smaps = smaps_summary(ctl.pid());
    let heap = if inspect {
        inspect_heap(ctl.pid(), &ctl.log)
    } else {
        None
    };
    unpublish(&mut csi, probe).await?;
    let after = parse_metrics(&api_get(w, "/metrics").await);
    // Every LIST of the kind during the start: the rebuild's pages and,
    // for PVs, the orphan sweep's.
    let list = |resource: &str| {
        let labels = [resource, "verb=\"LIST\"", "scope=\"cluster\""];
        let d = |n: &str| msum(&after, n, &labels) - msum(&before, n, &labels);
        (
            d("apiserver_request_duration_seconds_sum"),
            d("apiserver_request_duration_seconds_count"),
        )
    };
    Ok(Start {
        label: label.to_string(),
        list_pv: list("resource=\"persistentvolumes\""),
        list_va: list("resource=\"volumeattachments\""),
        heap,
        rebuilt,
        first_publish,
        rss,
        hwm,
        smaps,
    })
}

/// `STARTS` controller starts, each publishing one of `vols` as its probe;
/// the last is also inspected with gdb. Every start must have rebuilt all
/// `REBUILD` attachments.
pub async fn starts(w: &World, vols: &[Vol]) -> BoxResult<Vec<Start>> {
    let mut starts = Vec::new();
    for (s, probe) in vols.iter().take(STARTS).enumerate() {
        eprintln!("controller start {} of {STARTS}", s + 1);
        // The last start is also inspected (after its memory is read).
        let label = (s + 1).to_string();
        let inspect = s + 1 == STARTS;
        starts.push(measure_start(w, &format!("rebuild-{s}"), &label, inspect, probe).await?);
    }
    for s in &starts {
        if s.rebuilt.attached != REBUILD as u64 {
            return Err(format!(
                "the controller rebuilt {} attachments, expected {REBUILD}",
                s.rebuilt.attached
            )
            .into());
        }
    }
    Ok(starts)
}
