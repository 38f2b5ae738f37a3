//! Fault injection: knobs a test turns to make the simulator misbehave the
//! ways a real RDS and its network do.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Live TCP connections, kept as duplicated socket handles so any thread can
/// cut a connection without going through the SSH session that owns it.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    map: Mutex<HashMap<u64, Arc<TcpStream>>>,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<TcpStream>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, id: u64, socket: Arc<TcpStream>) {
        self.lock().insert(id, socket);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Shuts every socket down in both directions: clients see the
    /// connection end with no SSH disconnect message, like a network cut.
    pub(crate) fn drop_all(&self) {
        for (_, socket) in self.lock().drain() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    latency: Duration,
    fail: u32,
    fail_message: String,
    no_space: u32,
    drop: u32,
    hang: u32,
    cut_after_exit: u32,
    ignore_disk_remove: u32,
}

/// What happens to one incoming command instead of a normal reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandFault {
    Drop,
    Hang,
    Fail(String),
    /// Run the command and send its output and exit status, then cut the
    /// connection before the channel's EOF and close.
    CutAfterExit,
}

/// Fault knobs of a running simulator. All methods take `&self` and may be
/// called from any thread while clients are connected.
///
/// Counted faults queue up in a fixed order: a command first consumes a
/// pending drop, else a hang, else a failure, else a cut after the exit
/// status; `no_space_next` only ever applies to `/disk add` and
/// `ignore_disk_remove_next` only to `/disk remove`.
#[derive(Debug, Default)]
pub struct Faults {
    pending: Mutex<Pending>,
    refuse: AtomicBool,
    pub(crate) connections: Arc<Connections>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delay added before every command's reply, failures included.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// The next `n` commands answer `failure: <message>` without acting.
    pub fn fail_next(&self, n: u32, message: &str) {
        let mut p = self.lock();
        p.fail = n;
        p.fail_message = message.to_string();
    }

    /// The next `n` `/disk add` commands answer `failure: not enough space`.
    pub fn no_space_next(&self, n: u32) {
        self.lock().no_space = n;
    }

    /// The next `n` commands cut the whole TCP connection without a reply.
    pub fn drop_next(&self, n: u32) {
        self.lock().drop = n;
    }

    /// The next `n` commands never get a reply; their channel stays open
    /// until the client gives up.
    pub fn hang_next(&self, n: u32) {
        self.lock().hang = n;
    }

    /// The next `n` commands act and send their whole output and exit
    /// status, then the TCP connection is cut before the channel's EOF and
    /// close: a client cannot know the output was complete.
    pub fn cut_after_exit_next(&self, n: u32) {
        self.lock().cut_after_exit = n;
    }

    /// The next `n` `/disk remove` commands answer success but leave the
    /// disk in place, as a remove that silently did not take.
    pub fn ignore_disk_remove_next(&self, n: u32) {
        self.lock().ignore_disk_remove = n;
    }

    /// While on, new connections are closed right after accept and turning
    /// it on cuts the existing ones.
    pub fn refuse_connections(&self, on: bool) {
        // Set the flag before cutting, so a connection accepted in between
        // either is in the map and gets cut or sees the flag and closes.
        self.refuse.store(on, Ordering::SeqCst);
        if on {
            self.connections.drop_all();
        }
    }

    /// Back to normal: no latency, nothing pending, connections accepted.
    pub fn clear(&self) {
        *self.lock() = Pending::default();
        self.refuse.store(false, Ordering::SeqCst);
    }

    pub(crate) fn refusing(&self) -> bool {
        self.refuse.load(Ordering::SeqCst)
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub(crate) fn take_command_fault(&self) -> Option<CommandFault> {
        let mut p = self.lock();
        if take_one(&mut p.drop) {
            Some(CommandFault::Drop)
        } else if take_one(&mut p.hang) {
            Some(CommandFault::Hang)
        } else if take_one(&mut p.fail) {
            Some(CommandFault::Fail(p.fail_message.clone()))
        } else if take_one(&mut p.cut_after_exit) {
            Some(CommandFault::CutAfterExit)
        } else {
            None
        }
    }

    pub(crate) fn take_ignore_disk_remove(&self) -> bool {
        take_one(&mut self.lock().ignore_disk_remove)
    }

    pub(crate) fn take_no_space(&self) -> bool {
        take_one(&mut self.lock().no_space)
    }
}

/// Uses up one of a counted fault: false when none is pending.
fn take_one(pending: &mut u32) -> bool {
    let due = *pending > 0;
    *pending = pending.saturating_sub(1);
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_are_consumed_in_order() {
        let f = Faults::default();
        f.cut_after_exit_next(1);
        f.fail_next(1, "boom");
        f.hang_next(1);
        f.drop_next(1);
        assert_eq!(f.take_command_fault(), Some(CommandFault::Drop));
        assert_eq!(f.take_command_fault(), Some(CommandFault::Hang));
        assert_eq!(
            f.take_command_fault(),
            Some(CommandFault::Fail("boom".into()))
        );
        assert_eq!(f.take_command_fault(), Some(CommandFault::CutAfterExit));
        assert_eq!(f.take_command_fault(), None);
    }

    #[test]
    fn clear_resets_everything() {
        let f = Faults::default();
        f.set_latency(Duration::from_secs(1));
        f.no_space_next(3);
        f.ignore_disk_remove_next(2);
        f.refuse_connections(true);
        f.clear();
        assert_eq!(f.latency(), Duration::ZERO);
        assert!(!f.take_no_space());
        assert!(!f.take_ignore_disk_remove());
        assert!(!f.refusing());
    }
}
