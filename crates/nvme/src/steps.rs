//! Where the time of one node operation goes.
//!
//! A node RPC runs inside [`record`]; the code on its path calls [`mark`]
//! right after each step, which charges the time since the previous mark
//! (or since the start) to that step. Repeated steps add up. Outside
//! [`record`], [`mark`] does nothing, so the data path can mark freely.
//! Nothing here changes what the data path does: it only reads the clock.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static CURRENT: RefCell<Steps>;
}

/// One named step: its total time and how many times it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub time: Duration,
    pub count: u32,
}

/// Named durations, in the order the steps first ran.
#[derive(Debug, Clone)]
pub struct Steps {
    start: Instant,
    last: Instant,
    parts: Vec<Part>,
}

impl Default for Steps {
    fn default() -> Self {
        Self::starting_at(Instant::now())
    }
}

impl Steps {
    pub fn starting_at(start: Instant) -> Self {
        Steps {
            start,
            last: start,
            parts: Vec::new(),
        }
    }

    /// Charges the time from the previous mark to `now` to `step`.
    pub fn mark_at(&mut self, step: &'static str, now: Instant) {
        let d = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        match self.parts.iter_mut().find(|p| p.name == step) {
            Some(p) => {
                p.time += d;
                p.count += 1;
            }
            None => self.parts.push(Part {
                name: step,
                time: d,
                count: 1,
            }),
        }
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// From the start to the last mark.
    pub fn total(&self) -> Duration {
        self.last.saturating_duration_since(self.start)
    }
}

/// `blkid=80.1x2 mount=12.3`: milliseconds with one decimal, in order,
/// with `xN` when a step ran N > 1 times.
impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={:.1}", p.name, p.time.as_secs_f64() * 1000.0)?;
            if p.count > 1 {
                write!(f, "x{}", p.count)?;
            }
        }
        Ok(())
    }
}

/// Charges the time since the previous mark to `step`, when the current
/// task runs inside [`record`].
pub fn mark(step: &'static str) {
    let now = Instant::now();
    let _ = CURRENT.try_with(|s| s.borrow_mut().mark_at(step, now));
}

/// Runs `fut` with a fresh set of steps; the time after its last mark is
/// charged to `rest`.
pub async fn record<F: Future>(fut: F) -> (F::Output, Steps) {
    CURRENT
        .scope(RefCell::new(Steps::default()), async move {
            let out = fut.await;
            mark("rest");
            let steps = CURRENT.with(|s| s.borrow().clone());
            (out, steps)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_charge_the_time_since_the_previous_mark_and_add_up() {
        let t0 = Instant::now();
        let mut s = Steps::starting_at(t0);
        s.mark_at("connect", t0 + Duration::from_millis(30));
        s.mark_at("blkid", t0 + Duration::from_millis(45));
        s.mark_at("connect", t0 + Duration::from_millis(50));
        let parts: Vec<(&str, Duration, u32)> = s
            .parts()
            .iter()
            .map(|p| (p.name, p.time, p.count))
            .collect();
        assert_eq!(
            parts,
            vec![
                ("connect", Duration::from_millis(35), 2),
                ("blkid", Duration::from_millis(15), 1)
            ]
        );
        assert_eq!(s.total(), Duration::from_millis(50));
        assert_eq!(s.to_string(), "connect=35.0x2 blkid=15.0");
    }

    #[test]
    fn a_clock_read_out_of_order_never_goes_negative() {
        let t0 = Instant::now();
        let mut s = Steps::starting_at(t0 + Duration::from_millis(5));
        s.mark_at("a", t0);
        assert_eq!(s.parts()[0].time, Duration::ZERO);
        assert_eq!(s.total(), Duration::ZERO);
    }

    #[tokio::test]
    async fn marks_outside_a_recording_are_ignored_and_inside_are_kept() {
        mark("nowhere");
        let ((), steps) = record(async {
            mark("first");
            tokio::task::yield_now().await;
            mark("second");
        })
        .await;
        let names: Vec<&str> = steps.parts().iter().map(|p| p.name).collect();
        assert_eq!(names, vec!["first", "second", "rest"]);
    }
}
