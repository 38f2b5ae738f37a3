//! Per-VMI mutexes: publishes for volumes of one VM run one at a time, so
//! a VM's disks are decided in a consistent order. Entries nobody holds are
//! evicted after a TTL, so the table follows the VMs in use.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmiKey {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone)]
pub struct VmiLocks {
    inner: Arc<Inner>,
}

struct Inner {
    map: DashMap<VmiKey, (Arc<AsyncMutex<()>>, Instant)>,
    ttl: Duration,
    last_sweep: Mutex<Instant>,
}

impl VmiLocks {
    pub fn new(ttl: Duration) -> Self {
        VmiLocks {
            inner: Arc::new(Inner {
                map: DashMap::new(),
                ttl,
                last_sweep: Mutex::new(Instant::now()),
            }),
        }
    }

    /// Waits for the VMI's turn. Hold the guard for the whole publish.
    pub async fn lock(&self, key: &VmiKey) -> OwnedMutexGuard<()> {
        self.sweep();
        // Clone the Arc out and drop the map reference before awaiting: a
        // DashMap shard lock held across an await deadlocks.
        let mutex = {
            let mut entry = self
                .inner
                .map
                .entry(key.clone())
                .or_insert_with(|| (Arc::new(AsyncMutex::new(())), Instant::now()));
            entry.1 = Instant::now();
            entry.0.clone()
        };
        mutex.lock_owned().await
    }

    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// Drops entries that nobody holds or waits for and that were last
    /// used longer than the TTL ago.
    pub fn sweep(&self) {
        {
            let mut last = self
                .inner
                .last_sweep
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < self.inner.ttl / 4 {
                return;
            }
            *last = Instant::now();
        }
        self.evict_idle();
    }

    /// Evicts idle entries now.
    pub fn evict_idle(&self) {
        let ttl = self.inner.ttl;
        self.inner
            .map
            .retain(|_, (m, used)| Arc::strong_count(m) > 1 || used.elapsed() < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> VmiKey {
        VmiKey {
            namespace: "vms".into(),
            name: n.into(),
        }
    }

    #[tokio::test]
    async fn publishes_of_one_vmi_run_one_at_a_time() {
        let locks = VmiLocks::new(Duration::from_secs(60));
        let g = locks.lock(&key("vm1")).await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock(&key("vm1")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the second publish waits");
        // Another VMI is not blocked.
        let _other = locks.lock(&key("vm2")).await;
        drop(g);
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn idle_entries_are_evicted_after_the_ttl() {
        let locks = VmiLocks::new(Duration::from_millis(20));
        for i in 0..50 {
            drop(locks.lock(&key(&format!("vm{i}"))).await);
        }
        let held = locks.lock(&key("held")).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        locks.evict_idle();
        assert_eq!(locks.len(), 1, "only the held entry stays");
        drop(held);
    }
}
