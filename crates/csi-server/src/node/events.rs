//! Kubernetes events from the node plugin, recorded on the volume's PVC.
//!
//! An RPC only hands an event to a bounded queue ([`QueuedEvents`], shared
//! with the controller) and goes on: a slow or unreachable API server never
//! delays or fails a stage or publish. Without a sink (no cluster, or events
//! off) events are only logged.
//!
//! The reasons are stable: alerts and runbooks match on them
//! (docs/operations.md lists what to do for each).

pub use attachment_manager::events::{QueuedEvents, DELIVERY_TIMEOUT, QUEUE_CAPACITY};
use attachment_manager::{EventKind, VolumeEvent};

/// The reporting controller of the node plugin's events; the reporting
/// instance is the node's name.
pub const REPORTER: &str = "rds-csi-node";
/// The action of every node event: what the node was doing.
pub const ACTION: &str = "MountVolume";

/// Mounting the volume (staging mount or publish bind mount) failed.
pub const MOUNT_FAILED: &str = "MountFailed";
/// The filesystem safety checks refused to format (or to mount) the device.
pub const FORMAT_REFUSED: &str = "FormatRefused";
/// A staged volume's mount (or device node) pointed at an NVMe device that
/// had vanished; it was moved to the volume's current device.
pub const STALE_MOUNT_RECOVERED: &str = "StaleMountRecovered";

/// The node's event queue: see [`QueuedEvents`].
pub type NodeEvents = QueuedEvents;

/// An event about a staged volume, naming the node it happened on.
pub fn volume_event(
    volume: &str,
    pvc: Option<(String, String)>,
    node: &str,
    kind: EventKind,
    reason: &'static str,
    what: String,
) -> VolumeEvent {
    VolumeEvent {
        volume: volume.to_string(),
        pvc,
        kind,
        reason,
        message: format!("{what} (node {node})"),
    }
}
