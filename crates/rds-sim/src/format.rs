//! Text formatting in the style of RouterOS `print detail` output.
//!
//! Everything here is written from the RouterOS facts in `docs/routeros.md`,
//! on purpose without looking at the client crate: the point of the
//! simulator is to be a second, independent opinion about what the wire
//! looks like.

use std::time::{SystemTime, UNIX_EPOCH};

/// RouterOS lays out non-interactive output for an 80 column terminal.
pub(crate) const WIDTH: usize = 80;

/// Whole tokens stop one column short of the edge, so a line reaching column
/// 80 always means a value was cut there and carries on, unspaced, on the next
/// line; a client can tell the two cases apart by length alone.
const FILL: usize = WIDTH - 1;

/// Line ending of RouterOS terminal output, also over `exec`.
pub(crate) const EOL: &str = "\r\n";

/// `53687091200` -> `53 687 091 200`, the way RouterOS prints byte counts.
pub(crate) fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Binary units with one decimal (`50.0GiB`, `1.5GiB`, `512.0MiB`), rounded
/// half up; plain bytes below one KiB.
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut unit = 1024u128;
    let mut idx = 0;
    while idx + 1 < UNITS.len() && u128::from(n) >= unit * 1024 {
        unit *= 1024;
        idx += 1;
    }
    let tenths = (u128::from(n) * 10 + unit / 2) / unit;
    format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[idx])
}

/// Percentage of `part` in `whole`, rounded half up; 0 for an empty whole.
pub(crate) fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    let p = (u128::from(part) * 100 + u128::from(whole) / 2) / u128::from(whole);
    u64::try_from(p).unwrap_or(u64::MAX)
}

/// `2025-11-11 14:32:41` in UTC, the ISO-like form newer RouterOS prints.
pub(crate) fn format_time(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs(),
        Err(_) => 0,
    };
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date from days since 1970-01-01, by counting whole
/// 400-year eras (146 097 days each) and then years inside the era with a
/// calendar that starts in March, so the leap day falls at the end.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// Double-quoted value with RouterOS escapes, so any slot name or NQN a client
/// manages to store prints back as something a parser can read.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A property value together with how RouterOS renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldValue {
    /// Always double-quoted (names, NQNs, models).
    Quoted(String),
    /// Printed as is, even with spaces inside (`type=.img file`).
    Bare(String),
    /// Byte count with grouped thousands.
    Int(u64),
    /// Byte count in human units.
    Size(u64),
    Percent(u64),
    Time(SystemTime),
}

impl FieldValue {
    /// The value a `where` clause compares against: unquoted, and plain
    /// digits for numbers.
    pub(crate) fn raw(&self) -> String {
        match self {
            FieldValue::Quoted(s) | FieldValue::Bare(s) => s.clone(),
            FieldValue::Int(n) | FieldValue::Size(n) => n.to_string(),
            FieldValue::Percent(n) => format!("{n}%"),
            FieldValue::Time(t) => format_time(*t),
        }
    }

    pub(crate) fn render(&self, key: &str) -> String {
        match self {
            FieldValue::Quoted(s) => format!("{key}={}", quote(s)),
            FieldValue::Bare(s) => format!("{key}={s}"),
            FieldValue::Int(n) => format!("{key}={}", group_digits(*n)),
            FieldValue::Size(n) => format!("{key}={}", human_size(*n)),
            FieldValue::Percent(n) => format!("{key}={n}%"),
            FieldValue::Time(t) => format!("{key}={}", format_time(*t)),
        }
    }
}

/// One printed item: flag letters and properties in print order.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub flags: &'static str,
    /// Printed as `;;; text` on the item's first line, fields after it.
    pub comment: Option<String>,
    pub fields: Vec<(&'static str, FieldValue)>,
}

impl Record {
    pub(crate) fn get(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Renders records the way `print detail` does: the item number right-aligned,
/// flag letters, then `key=value` tokens filled greedily with continuation
/// lines indented. A token that does not fit the rest of a line moves to the
/// next one; a token longer than a whole line is cut in the middle at column
/// 80 and carried on over as many lines as it needs, which is the quirk real
/// RouterOS shows with long file paths. A grouped number is filled group by
/// group, so near the edge it wraps between groups (`size=53 687 091`, then
/// `200` on the next line). Each record ends with a blank line.
pub(crate) fn render_records(records: &[Record], out: &mut String) {
    let last = records.len().saturating_sub(1);
    let width = last.to_string().len().max(2);
    for (index, record) in records.iter().enumerate() {
        let tokens: Vec<String> = record
            .fields
            .iter()
            .flat_map(|(k, v)| {
                let text = v.render(k);
                match v {
                    FieldValue::Int(_) => text.split(' ').map(str::to_string).collect(),
                    _ => vec![text],
                }
            })
            .collect();
        render_one(
            index,
            width,
            record.flags,
            record.comment.as_deref(),
            &tokens,
            out,
        );
    }
}

fn render_one(
    index: usize,
    width: usize,
    flags: &str,
    comment: Option<&str>,
    tokens: &[String],
    out: &mut String,
) {
    let indent = " ".repeat(width + 2);
    let mut line = if flags.is_empty() {
        format!("{index:>width$}  ")
    } else {
        format!("{index:>width$} {flags}  ")
    };
    if let Some(comment) = comment {
        // RouterOS keeps the comment on the item's first line, on its own;
        // line breaks inside it would start fake lines, so they are spaced.
        let text: String = comment
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        out.push_str(&line);
        out.push_str(";;; ");
        out.push_str(&text);
        out.push_str(EOL);
        line = indent.clone();
    }
    let mut line_len = line.chars().count();
    let mut has_token = false;
    let fresh_room = FILL.saturating_sub(indent.len());
    for token in tokens {
        let token_len = token.chars().count();
        let sep = usize::from(has_token);
        if line_len + sep + token_len <= FILL {
            if has_token {
                line.push(' ');
            }
            line.push_str(token);
            line_len += sep + token_len;
            has_token = true;
            continue;
        }
        if has_token {
            out.push_str(&line);
            out.push_str(EOL);
            line = indent.clone();
            line_len = indent.len();
        }
        if token_len <= fresh_room {
            line.push_str(token);
            line_len += token_len;
            has_token = true;
            continue;
        }
        let chars: Vec<char> = token.chars().collect();
        let mut rest = &chars[..];
        loop {
            let room = WIDTH.saturating_sub(line_len).max(1);
            let take = room.min(rest.len());
            line.extend(&rest[..take]);
            line_len += take;
            rest = &rest[take..];
            if rest.is_empty() {
                break;
            }
            out.push_str(&line);
            out.push_str(EOL);
            line = indent.clone();
            line_len = indent.len();
        }
        has_token = true;
    }
    out.push_str(&line);
    out.push_str(EOL);
    out.push_str(EOL);
}

/// Output of `monitor-traffic ... once`: names right-aligned before a colon.
pub(crate) fn render_monitor(pairs: &[(&str, String)], out: &mut String) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    for (k, v) in pairs {
        out.push_str(&format!("{k:>width$}: {v}"));
        out.push_str(EOL);
    }
    out.push_str(EOL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn digits_are_grouped_by_thousands() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1 000");
        assert_eq!(group_digits(53_687_091_200), "53 687 091 200");
        assert_eq!(group_digits(7_949_127_950_336), "7 949 127 950 336");
        assert_eq!(group_digits(u64::MAX), "18 446 744 073 709 551 615");
    }

    #[test]
    fn human_sizes_use_binary_units_with_one_decimal() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1024), "1.0KiB");
        assert_eq!(human_size(512 << 20), "512.0MiB");
        assert_eq!(human_size(3 << 29), "1.5GiB");
        assert_eq!(human_size(50 << 30), "50.0GiB");
        assert_eq!(human_size(10 << 40), "10.0TiB");
        assert!(human_size(u64::MAX).ends_with("EiB"));
    }

    #[test]
    fn percent_rounds_half_up_and_survives_zero() {
        assert_eq!(percent(1_985_531_985_920, 7_949_127_950_336), 25);
        assert_eq!(percent(1, 0), 0);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn times_print_as_utc_calendar_dates() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_762_871_561);
        assert_eq!(format_time(t), "2025-11-11 14:32:41");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_time(leap), "2000-02-29 00:00:00");
    }

    #[test]
    fn quoting_escapes_quotes_and_control_characters() {
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("x\u{1}"), "\"x\\01\"");
    }

    #[test]
    fn long_tokens_wrap_in_the_middle_and_lines_stay_within_width() {
        let path = format!("/storage-pool/metal-csi/{}.img", "pvc-".repeat(20));
        let record = Record {
            flags: "",
            comment: None,
            fields: vec![
                ("type", FieldValue::Bare("file".into())),
                ("file-path", FieldValue::Bare(path.clone())),
                ("size", FieldValue::Int(53_687_091_200)),
            ],
        };
        let mut out = String::new();
        render_records(&[record], &mut out);
        let lines: Vec<&str> = out.split(EOL).collect();
        assert!(lines[0].starts_with(" 0  type=file"));
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH));
        let cut: Vec<&&str> = lines
            .iter()
            .filter(|l| l.chars().count() == WIDTH)
            .collect();
        assert_eq!(cut.len(), 1, "only the cut line reaches the edge: {out}");
        assert!(lines
            .iter()
            .skip(1)
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with("    ")));
        assert!(!out.contains(&path), "path should be cut across lines");
        let joined: String = lines.iter().map(|l| l.trim_start()).collect();
        assert!(joined.contains(&format!("file-path={path}")));
        assert!(out.contains("size=53 687 091 200"));
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_grouped_number_at_the_edge_wraps_between_groups() {
        // The line holds ` 0  f=` and 56 filler columns (62), then
        // ` size=53 687 091` (16) reaches column 78; ` 200` would pass 79.
        let filler = "x".repeat(56);
        let rec = Record {
            flags: "",
            comment: None,
            fields: vec![
                ("f", FieldValue::Bare(filler.clone())),
                ("size", FieldValue::Int(53_687_091_200)),
                ("n", FieldValue::Bare("1".into())),
            ],
        };
        let mut out = String::new();
        render_records(&[rec], &mut out);
        assert_eq!(
            out,
            format!(" 0  f={filler} size=53 687 091\r\n    200 n=1\r\n\r\n"),
        );
    }

    #[test]
    fn a_comment_takes_the_first_line_and_the_fields_follow() {
        let rec = Record {
            flags: "",
            comment: Some("rds-csi created=2026-11-22T07:10:05Z\nx".into()),
            fields: vec![("type", FieldValue::Bare("file".into()))],
        };
        let mut out = String::new();
        render_records(&[rec], &mut out);
        assert_eq!(
            out,
            " 0  ;;; rds-csi created=2026-11-22T07:10:05Z x\r\n    type=file\r\n\r\n"
        );
    }

    #[test]
    fn flags_and_wide_indexes_shift_the_first_line() {
        let rec = Record {
            flags: "R",
            comment: None,
            fields: vec![("type", FieldValue::Bare("partition".into()))],
        };
        let mut out = String::new();
        render_records(&[rec], &mut out);
        assert_eq!(out, " 0 R  type=partition\r\n\r\n");

        let recs: Vec<Record> = (0..101)
            .map(|_| Record {
                flags: "",
                comment: None,
                fields: vec![("x", FieldValue::Bare("y".into()))],
            })
            .collect();
        let mut out = String::new();
        render_records(&recs, &mut out);
        assert!(out.starts_with("  0  x=y"));
        assert!(out.contains("100  x=y"));
    }
}
