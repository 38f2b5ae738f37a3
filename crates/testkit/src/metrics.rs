//! Scraping the driver's HTTP endpoints (metrics, probes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A plain HTTP/1.1 GET against 127.0.0.1: the status code and the whole
/// response (headers and body); `None` if nothing answered.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// The `/metrics` page on `port`, empty if nothing answered.
pub fn scrape(port: u16) -> String {
    http_get(port, "/metrics")
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// A metric's value in `scrape`, matched by its name and label text
/// exactly as exposed (`name{label="v"}`); 0 when absent.
pub fn metric(scrape: &str, name_and_labels: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn a_metric_is_found_by_its_exact_name_and_labels() {
        let page = "# HELP x\nrds_up 1\nrds_up_total 7\nrds_calls{rpc=\"a\"} 3\n";
        assert_eq!(metric(page, "rds_up"), 1.0);
        assert_eq!(metric(page, "rds_up_total"), 7.0);
        assert_eq!(metric(page, "rds_calls{rpc=\"a\"}"), 3.0);
        assert_eq!(metric(page, "rds_calls{rpc=\"b\"}"), 0.0);
    }
}
