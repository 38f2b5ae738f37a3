//! Kept only for benches/attachments, which includes this file by path:
//! the test tiers' shared helpers now live in the `testkit` crate
//! (crates/testkit). Delete this file once the bench uses
//! `testkit::metrics` directly.

/// The whole response of a GET against 127.0.0.1 (`testkit::metrics`).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    testkit::metrics::http_get(port, path).map(|(_, text)| text)
}
