//! Parser for RouterOS `print detail` output.
//!
//! The CLI prints records meant for people: an index and flag letters, then
//! `key=value` pairs spread over indented continuation lines, with values that
//! may be quoted, may hold spaces (`size=53 687 091 200`,
//! `last-modified=2025-11-11 14:32:41`), and may be cut in the middle when a
//! line reaches the terminal width. Matching lines with regular expressions
//! broke earlier drivers, so this parser tokenizes whole
//! records into key/value pairs and leaves interpretation to typed accessors.
//!
//! The parser is total: any input yields records (possibly none), never a
//! panic. Property tests hold it to that.

use std::fmt;

/// One printed item: its index, flag letters, optional `;;;` comment and its
/// fields in the order they were printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub index: Option<u32>,
    pub flags: String,
    pub comment: Option<String>,
    fields: Vec<(String, String)>,
}

impl Record {
    /// The raw value of a field, quotes removed. Absent fields are `None`;
    /// fields come and go between RouterOS versions, so callers decide
    /// which ones they require.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A field holding a byte count: grouped digits (`53 687 091 200`),
    /// plain bytes, or human units (`50.0GiB`, `1.5GiB`, `10G`).
    pub fn get_bytes(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_size)
    }

    /// A `yes`/`no` (or `true`/`false`) field.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            "yes" | "true" => Some(true),
            "no" | "false" => Some(false),
            _ => None,
        }
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Builds a record from pairs; used by tests and fakes.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Record {
            fields: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Record::default()
        }
    }

    fn push(&mut self, key: String, value: String) {
        // A repeated key keeps the last value, as a person reading it would.
        if let Some(slot) = self.fields.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.fields.push((key, value));
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.fields {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        Ok(())
    }
}

/// Splits `print detail` output into records and parses each one.
///
/// A line that begins with a number starts a new record only when it is not
/// indented past the current record's index column (or follows a blank
/// line). Continuation lines are indented deeper than the index, so a
/// wrapped digit group (`size=53 687 091` then `    200 ...`) continues its
/// value instead of reading as record number 200.
pub fn parse_records(output: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let mut current: Option<RecordText> = None;
    let mut pending_comment: Option<String> = None;
    // A line must be indented less than this to start a new record while a
    // record is open: the column just past the current record's index.
    let mut start_below = 0usize;
    let mut after_blank = true;

    for raw in output.lines() {
        let line = raw.trim_end_matches(['\r', ' ', '\t']);
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            after_blank = true;
            continue;
        }
        let may_start = current.is_none() || after_blank || indent < start_below;
        after_blank = false;
        if trimmed.starts_with("Flags:") || trimmed.starts_with("Columns:") {
            continue;
        }
        if let Some(c) = trimmed.strip_prefix(";;;") {
            // A comment belongs to the record that follows it.
            if let Some(r) = current.take() {
                records.push(r.finish());
            }
            pending_comment = Some(c.trim().to_string());
            continue;
        }
        if let Some((index, flags, rest)) = split_record_start(line).filter(|_| may_start) {
            if let Some(r) = current.take() {
                records.push(r.finish());
            }
            start_below = indent + trimmed.bytes().take_while(u8::is_ascii_digit).count();
            // RouterOS prints an item's comment on its index line:
            // ` 3 X  ;;; text`, the fields following on the next lines.
            if let Some(c) = rest.strip_prefix(";;;") {
                current = Some(RecordText::new(
                    Some(index),
                    flags,
                    Some(c.trim().to_string()),
                ));
                pending_comment = None;
                continue;
            }
            let mut text = RecordText::new(Some(index), flags, pending_comment.take());
            text.push_line(rest);
            current = Some(text);
        } else if let Some(r) = current.as_mut() {
            r.push_line(trimmed);
        } else {
            // Output without an index column (for example a single-item
            // print) still forms one record.
            let mut text = RecordText::new(None, String::new(), pending_comment.take());
            text.push_line(trimmed);
            current = Some(text);
            start_below = indent + 1;
        }
    }
    if let Some(r) = current.take() {
        records.push(r.finish());
    }
    records
}

/// Recognizes ` 12 XR  key=value ...`: an index, optional flag letters, then
/// the first fields.
fn split_record_start(line: &str) -> Option<(u32, String, &str)> {
    let t = line.trim_start();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let after = &t[digits..];
    // The index must be followed by whitespace (or end the line).
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let index: u32 = t[..digits].parse().ok()?;
    let mut rest = after.trim_start();
    let mut flags = String::new();
    // Flag letters are a short run of upper-case letters (or `*`) standing
    // alone before the first `key=`.
    let word_len = rest.find([' ', '\t']).unwrap_or(rest.len());
    let word = &rest[..word_len];
    if !word.is_empty()
        && word.len() <= 6
        && !word.contains('=')
        && word.chars().all(|c| c.is_ascii_uppercase() || c == '*')
    {
        flags = word.to_string();
        rest = rest[word_len..].trim_start();
    }
    Some((index, flags, rest))
}

struct RecordText {
    record: Record,
    tokens: Vec<Token>,
}

#[derive(Debug)]
enum Token {
    /// `key=value` (value possibly still open when a quote spans lines).
    Pair {
        key: String,
        value: String,
        open_quote: bool,
    },
}

impl RecordText {
    fn new(index: Option<u32>, flags: String, comment: Option<String>) -> Self {
        RecordText {
            record: Record {
                index,
                flags,
                comment,
                fields: Vec::new(),
            },
            tokens: Vec::new(),
        }
    }

    fn push_line(&mut self, line: &str) {
        let mut rest = line;
        let mut first_on_line = true;
        while !rest.is_empty() {
            // Continue a quoted value that was cut at the end of the last line.
            if let Some(Token::Pair {
                value, open_quote, ..
            }) = self.tokens.last_mut()
            {
                if *open_quote {
                    let (chunk, closed, remaining) = take_quoted(rest);
                    value.push_str(&chunk);
                    *open_quote = !closed;
                    rest = remaining.trim_start();
                    first_on_line = false;
                    continue;
                }
            }
            let end = next_token_end(rest);
            let word = &rest[..end];
            if let Some((key, after_eq)) = split_key(word) {
                let value_text = &rest[key.len() + 1..];
                let _ = after_eq;
                let (value, open, remaining) = if let Some(q) = value_text.strip_prefix('"') {
                    let (chunk, closed, remaining) = take_quoted(q);
                    (chunk, !closed, remaining)
                } else {
                    let vend = value_text.find([' ', '\t']).unwrap_or(value_text.len());
                    (value_text[..vend].to_string(), false, &value_text[vend..])
                };
                self.tokens.push(Token::Pair {
                    key: key.to_string(),
                    value,
                    open_quote: open,
                });
                rest = remaining.trim_start();
            } else {
                // A bare word continues the previous value: a digit group, the
                // time of a date, or the tail of a value cut at the line end.
                if let Some(Token::Pair { value, .. }) = self.tokens.last_mut() {
                    let joins_without_space = first_on_line && !looks_like_time(word);
                    if !joins_without_space && !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(word);
                }
                rest = rest[end..].trim_start();
            }
            first_on_line = false;
        }
    }

    fn finish(mut self) -> Record {
        for Token::Pair { key, value, .. } in self.tokens {
            self.record.push(key, value);
        }
        self.record
    }
}

/// Reads a quoted value (after its opening quote) up to the closing quote,
/// honouring backslash escapes. Returns the text, whether the quote closed,
/// and what follows.
fn take_quoted(s: &str) -> (String, bool, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            '"' => return (out, true, &s[i + 1..]),
            _ => out.push(c),
        }
    }
    (out, false, "")
}

fn next_token_end(s: &str) -> usize {
    s.find([' ', '\t']).unwrap_or(s.len())
}

/// `key=...` where key is a RouterOS property name.
fn split_key(word: &str) -> Option<(&str, &str)> {
    let eq = word.find('=')?;
    let key = &word[..eq];
    let valid = !key.is_empty()
        && key.as_bytes()[0].is_ascii_alphabetic()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then(|| (key, &word[eq + 1..]))
}

fn looks_like_time(word: &str) -> bool {
    let parts: Vec<&str> = word.split(':').collect();
    (parts.len() == 2 || parts.len() == 3)
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a RouterOS size: `53 687 091 200`, `1073741824`, `50.0GiB`,
/// `1.5GiB`, `10G`, `512M`, `512.0MiB`, `2T`, `100KiB`.
///
/// Human-unit values are rounded to the nearest byte; they are what RouterOS
/// shows, so callers that need exact sizes should prefer byte fields such as
/// `size=`.
pub fn parse_size(text: &str) -> Option<u64> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    let split = compact
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(compact.len());
    let (num, unit) = compact.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        "p" | "pib" | "pb" => 1 << 50,
        _ => return None,
    };
    if let Some((int, frac)) = num.split_once('.') {
        let int: u64 = int.parse().ok()?;
        let frac_digits = frac.len().min(12) as u32;
        let frac_val: u64 = if frac_digits == 0 {
            0
        } else {
            frac[..frac_digits as usize].parse().ok()?
        };
        let scale = 10u64.pow(frac_digits);
        let whole = int.checked_mul(mult)?;
        let part = (frac_val as u128 * mult as u128 + (scale as u128 / 2)) / scale as u128;
        whole.checked_add(u64::try_from(part).ok()?)
    } else {
        num.parse::<u64>().ok()?.checked_mul(mult)
    }
}

/// `n` with its digits grouped by three, as RouterOS prints sizes.
#[cfg(test)]
pub(crate) fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_DISK: &str = r#" 0  type=file slot="pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3" slot-default="" parent="" fs=-
    model="/storage-pool/metal-csi/pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3.img"
    size=53 687 091 200 mount-filesystem=yes sector-size=512
    nvme-tcp-export=yes nvme-tcp-server-port=4420
    nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
    nvme-tcp-server-allow-host-name="" file-path=/storage-pool/metal-csi/pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3.img
    file-size=50.0GiB file-offset=0
"#;

    #[test]
    fn a_real_disk_record_parses_into_typed_fields() {
        let recs = parse_records(REAL_DISK);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.index, Some(0));
        assert_eq!(r.get("type"), Some("file"));
        assert_eq!(
            r.get("slot"),
            Some("pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
        );
        assert_eq!(r.get("slot-default"), Some(""));
        assert_eq!(r.get("fs"), Some("-"));
        assert_eq!(r.get_bytes("size"), Some(53_687_091_200));
        assert_eq!(r.get_bytes("file-size"), Some(50 << 30));
        assert_eq!(r.get_bool("nvme-tcp-export"), Some(true));
        assert_eq!(r.get("nvme-tcp-server-port"), Some("4420"));
        assert_eq!(
            r.get("nvme-tcp-server-nqn"),
            Some("nqn.2000-02.com.mikrotik:pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
        );
        assert_eq!(r.get("nvme-tcp-server-allow-host-name"), Some(""));
        assert_eq!(
            r.get("file-path"),
            Some("/storage-pool/metal-csi/pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3.img")
        );
        assert_eq!(r.get("file-offset"), Some("0"));
        // Fields real disks do not have are simply absent.
        assert_eq!(r.get("status"), None);
        assert_eq!(r.get("creation-time"), None);
    }

    #[test]
    fn a_value_wrapped_mid_way_is_joined_back() {
        let out = " 0  type=file slot=\"pvc-a\" file-path=/storage-pool/metal-csi/pvc-aaaaaaaa-bbbb-cccc-dd\n    dd-eeeeeeeeeeee.img file-size=1.5GiB\n";
        let r = &parse_records(out)[0];
        assert_eq!(
            r.get("file-path"),
            Some("/storage-pool/metal-csi/pvc-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee.img")
        );
        assert_eq!(r.get_bytes("file-size"), Some(3 << 29));
    }

    #[test]
    fn a_wrapped_digit_group_parses_whole() {
        let out = " 0  type=file slot=\"pvc-a\" slot-default=\"\" parent=\"\" fs=- size=53 687 091\n    200 mount-filesystem=yes sector-size=512\n    file-size=50.0GiB\n";
        let recs = parse_records(out);
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(recs[0].get_bytes("size"), Some(53_687_091_200));
        assert_eq!(recs[0].get("mount-filesystem"), Some("yes"));
        assert_eq!(recs[0].get_bytes("file-size"), Some(50 << 30));
    }

    #[test]
    fn a_wrapped_digit_group_in_a_list_keeps_the_records_apart() {
        // Wide index column, flags, and a wrap right after the first group.
        let out = "Flags: X - disabled\n  9 X  slot=\"a\" size=1\n      073 741 824 x=1\n\n 10    slot=\"b\" size=2 147\n      483 648\n\n100    slot=\"c\"\n";
        let recs = parse_records(out);
        assert_eq!(recs.len(), 3, "{recs:?}");
        assert_eq!(recs[0].get_bytes("size"), Some(1 << 30));
        assert_eq!(recs[0].get("x"), Some("1"));
        assert_eq!(recs[1].index, Some(10));
        assert_eq!(recs[1].get_bytes("size"), Some(2 << 30));
        assert_eq!(recs[2].index, Some(100));
    }

    #[test]
    fn records_without_blank_lines_between_them_still_split() {
        let out = " 0  slot=\"a\"\n    size=1 024\n 1  slot=\"b\"\n    size=2 048\n";
        let recs = parse_records(out);
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(recs[1].get_bytes("size"), Some(2048));
    }

    #[test]
    fn a_quoted_value_wrapped_mid_way_is_joined_back() {
        let out = " 0  slot=\"pvc-a\" nvme-tcp-server-nqn=\"nqn.2000-02.com.mikrotik:pvc-aaaa\n    bbbb\" port=4420\n";
        let r = &parse_records(out)[0];
        assert_eq!(
            r.get("nvme-tcp-server-nqn"),
            Some("nqn.2000-02.com.mikrotik:pvc-aaaabbbb")
        );
        assert_eq!(r.get("port"), Some("4420"));
    }

    #[test]
    fn the_capacity_sample_parses_grouped_digits_and_percent() {
        let out = " 0  type=partition slot=\"storage-pool\" mount-point=\"storage-pool\"\n    size=7 949 127 950 336 free=5 963 595 964 416 use=25%\n";
        let r = &parse_records(out)[0];
        assert_eq!(r.get_bytes("size"), Some(7_949_127_950_336));
        assert_eq!(r.get_bytes("free"), Some(5_963_595_964_416));
        assert_eq!(r.get("use"), Some("25%"));
    }

    #[test]
    fn the_file_sample_keeps_the_date_and_time_together() {
        let out = " 0 name=storage-pool/metal-csi/pvc-1.img type=.img file size=10.0GiB last-modified=2025-11-11 14:32:41\n";
        let r = &parse_records(out)[0];
        assert_eq!(r.get("name"), Some("storage-pool/metal-csi/pvc-1.img"));
        assert_eq!(r.get("type"), Some(".img file"));
        assert_eq!(r.get_bytes("size"), Some(10 << 30));
        assert_eq!(r.get("last-modified"), Some("2025-11-11 14:32:41"));
    }

    #[test]
    fn a_time_wrapped_onto_the_next_line_keeps_its_space() {
        let out = " 0 name=a.img last-modified=jan/02/2025\n    10:30:45 size=1G\n";
        let r = &parse_records(out)[0];
        assert_eq!(r.get("last-modified"), Some("jan/02/2025 10:30:45"));
    }

    #[test]
    fn several_records_with_flags_header_and_comments_are_split() {
        let out = "Flags: X - disabled, R - running \n 0 R  slot=\"a\" size=1 073 741 824\n\n;;; imported\n 1 X  slot=\"b\" size=2G\n 12    slot=\"c\"\n";
        let recs = parse_records(out);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].flags, "R");
        assert_eq!(recs[0].get_bytes("size"), Some(1 << 30));
        assert_eq!(recs[1].flags, "X");
        assert_eq!(recs[1].comment.as_deref(), Some("imported"));
        assert_eq!(recs[1].get_bytes("size"), Some(2 << 30));
        assert_eq!(recs[2].index, Some(12));
        assert_eq!(recs[2].get("slot"), Some("c"));
    }

    #[test]
    fn a_comment_on_the_index_line_belongs_to_that_record() {
        let out = " 0    slot=\"a\"\n\n 1 X  ;;; rds-csi created=2026-11-22T07:10:05Z\n      slot=\"b\" size=2G\n\n 2    slot=\"c\"\n";
        let recs = parse_records(out);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].comment, None);
        assert_eq!(recs[1].flags, "X");
        assert_eq!(
            recs[1].comment.as_deref(),
            Some("rds-csi created=2026-11-22T07:10:05Z")
        );
        assert_eq!(recs[1].get("slot"), Some("b"));
        assert_eq!(recs[2].comment, None);
    }

    #[test]
    fn a_value_containing_disabled_does_not_drop_the_record() {
        // An earlier driver filtered lines containing "disabled" and lost
        // fields; here the word is just data.
        let out = " 0  slot=\"disabled-vol\" comment=\"not disabled\" size=1G\n";
        let r = &parse_records(out)[0];
        assert_eq!(r.get("slot"), Some("disabled-vol"));
        assert_eq!(r.get("comment"), Some("not disabled"));
    }

    #[test]
    fn empty_output_means_no_records() {
        assert!(parse_records("").is_empty());
        assert!(parse_records("\n  \n").is_empty());
        assert!(parse_records("Flags: X - disabled\n").is_empty());
    }

    #[test]
    fn escaped_quotes_inside_values_are_unescaped() {
        let r = &parse_records(" 0 comment=\"say \\\"hi\\\"\" a=b\n")[0];
        assert_eq!(r.get("comment"), Some("say \"hi\""));
        assert_eq!(r.get("a"), Some("b"));
    }

    #[test]
    fn sizes_parse_in_every_form_seen() {
        assert_eq!(parse_size("53 687 091 200"), Some(53_687_091_200));
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("50.0GiB"), Some(50 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(1536 << 20));
        assert_eq!(parse_size("512.0MiB"), Some(512 << 20));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("100KiB"), Some(100 << 10));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("-"), None);
        assert_eq!(parse_size("1.2.3G"), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    mod never_panics {
        use super::super::*;
        use proptest::prelude::*;

        use crate::record::group_digits as group;

        proptest! {
            #[test]
            fn parse_records_never_panics_on_any_text(s in any::<String>()) {
                let _ = parse_records(&s);
            }

            #[test]
            fn parse_records_never_panics_on_routeros_like_text(
                s in r#"([ 0-9A-Z]{0,4}( [a-z-]{1,12}=("[^"\n]{0,20}"?|[a-z0-9./: -]{0,20}))*\n?){0,8}"#
            ) {
                let _ = parse_records(&s);
            }

            #[test]
            fn parse_size_never_panics(s in any::<String>()) {
                let _ = parse_size(&s);
            }

            #[test]
            fn a_size_wrapped_at_any_group_reads_whole(
                n in any::<u64>(),
                cut in any::<prop::sample::Index>(),
                index in 0u32..2000,
            ) {
                let grouped = group(n);
                let spaces: Vec<usize> =
                    grouped.match_indices(' ').map(|(i, _)| i).collect();
                let text = match spaces.get(cut.index(spaces.len().max(1))) {
                    Some(&at) => format!("{}\n      {}", &grouped[..at], &grouped[at + 1..]),
                    None => grouped.clone(),
                };
                let out = format!("{index:>3}  a=b size={text} x=y\n\n{:>3}  a=c\n", index + 1);
                let recs = parse_records(&out);
                prop_assert_eq!(recs.len(), 2, "{:?}", recs);
                prop_assert_eq!(recs[0].get_bytes("size"), Some(n));
                prop_assert_eq!(recs[0].get("x"), Some("y"));
                prop_assert_eq!(recs[1].get("a"), Some("c"));
            }

            #[test]
            fn grouped_digits_round_trip(n in any::<u64>()) {
                let out = format!(" 0  size={} x=y\n", group(n));
                let r = &parse_records(&out)[0];
                prop_assert_eq!(r.get_bytes("size"), Some(n));
                prop_assert_eq!(r.get("x"), Some("y"));
            }
        }
    }
}
