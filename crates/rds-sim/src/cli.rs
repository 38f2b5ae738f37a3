//! Parsing of one RouterOS CLI command line as received in an SSH `exec`.
//!
//! Only the grammar the driver needs is understood; anything else becomes a
//! RouterOS-style syntax error rather than a guess, so a client bug shows up
//! as an error in tests instead of as a silently different action. The parser
//! works on `char`s and never indexes by byte, so no input can make it panic.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    NotEq,
    Match,
}

/// One `key<op>value` test from a `where` clause or a `[find ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    pub key: String,
    pub op: Op,
    pub value: String,
    /// 1-based column of the key, for error messages.
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    Find(Vec<Cond>),
}

/// A `key=value` command argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arg {
    pub key: String,
    pub value: Value,
    pub col: usize,
}

/// Which items a `set`, `remove` or `monitor-traffic` acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `[find ...]`: matching nothing is not an error in RouterOS.
    Find(Vec<Cond>),
    /// Names (or numbers) given directly: each must exist.
    Items(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Print {
    pub count_only: bool,
    pub conds: Vec<Cond>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Empty,
    DiskAdd(Vec<Arg>),
    DiskSet {
        target: Option<Target>,
        args: Vec<Arg>,
    },
    DiskRemove(Option<Target>),
    DiskPrint(Print),
    DiskMonitorTraffic {
        target: Option<Target>,
        once: bool,
    },
    /// `/disk copy src=... dst=...`: a byte copy between two disks.
    DiskCopy(Vec<Arg>),
    FilePrint(Print),
    FileRemove(Option<Target>),
    NvmeConnectionPrint(Print),
    SubvolumeAdd(Vec<Arg>),
    SubvolumePrint(Print),
    SubvolumeRemove(Option<Target>),
}

/// Errors RouterOS reports before running anything; the text matches the
/// real console's, with 1-based columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyntaxError {
    BadCommandName { word: String, col: usize },
    ExpectedCommandName { col: usize },
    ExpectedEndOfCommand { col: usize },
    Syntax { col: usize },
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxError::BadCommandName { word, col } => {
                write!(f, "bad command name {word} (line 1 column {col})")
            }
            SyntaxError::ExpectedCommandName { col } => {
                write!(f, "expected command name (line 1 column {col})")
            }
            SyntaxError::ExpectedEndOfCommand { col } => {
                write!(f, "expected end of command (line 1 column {col})")
            }
            SyntaxError::Syntax { col } => write!(f, "syntax error (line 1 column {col})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Quoted(String),
    Bracket { inner: Vec<char>, inner_col: usize },
    Op(Op),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    kind: Kind,
    /// 1-based column of the first character.
    col: usize,
    /// Column just past the last character, to tell `a=b` from `a= b`.
    end: usize,
}

fn is_word_char(c: char) -> bool {
    !(c.is_whitespace()
        || matches!(
            c,
            '"' | '[' | ']' | '=' | '~' | '!' | ';' | '(' | ')' | '{' | '}' | '<' | '>'
        ))
}

/// Splits a line into tokens. `base` is the column of `chars[0]` minus one,
/// so errors inside a `[...]` point at the right place of the whole line.
fn lex(chars: &[char], base: usize) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = base + i + 1;
        if c == '\n' || c == '\r' {
            return Err(SyntaxError::ExpectedEndOfCommand { col });
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '"' => {
                let (text, next) = lex_quoted(chars, i).ok_or(SyntaxError::Syntax { col })?;
                tokens.push(Token {
                    kind: Kind::Quoted(text),
                    col,
                    end: base + next + 1,
                });
                i = next;
            }
            '[' => {
                let close = find_bracket_end(chars, i).ok_or(SyntaxError::Syntax { col })?;
                tokens.push(Token {
                    kind: Kind::Bracket {
                        inner: chars[i + 1..close].to_vec(),
                        inner_col: col + 1,
                    },
                    col,
                    end: base + close + 2,
                });
                i = close + 1;
            }
            '=' | '~' => {
                let op = if c == '=' { Op::Eq } else { Op::Match };
                tokens.push(Token {
                    kind: Kind::Op(op),
                    col,
                    end: col + 1,
                });
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token {
                    kind: Kind::Op(Op::NotEq),
                    col,
                    end: col + 2,
                });
                i += 2;
            }
            ';' => return Err(SyntaxError::ExpectedEndOfCommand { col }),
            c if !is_word_char(c) => return Err(SyntaxError::Syntax { col }),
            _ => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Word(chars[start..i].iter().collect()),
                    col,
                    end: base + i + 1,
                });
            }
        }
    }
    Ok(tokens)
}

/// Reads a double-quoted string starting at `chars[start] == '"'`; returns
/// the unescaped text and the index after the closing quote.
fn lex_quoted(chars: &[char], start: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Some((out, i + 1)),
            '\\' => {
                let next = *chars.get(i + 1)?;
                let hex = chars
                    .get(i + 2)
                    .and_then(|lo| Some((upper_hex(next)?, upper_hex(*lo)?)));
                if let Some((hi, lo)) = hex {
                    out.push(char::from_u32(hi * 16 + lo).unwrap_or('?'));
                    i += 3;
                    continue;
                }
                out.push(match next {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '_' => ' ',
                    other => other,
                });
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// RouterOS writes `\XX` escapes with upper-case digits only, which keeps
/// `\a` and `\b` free to mean bell and backspace.
fn upper_hex(c: char) -> Option<u32> {
    match c {
        '0'..='9' | 'A'..='F' => c.to_digit(16),
        _ => None,
    }
}

/// Index of the `]` matching the `[` at `start`, skipping quoted strings.
fn find_bracket_end(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            '"' => {
                let (_, next) = lex_quoted(chars, i)?;
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Menu {
    Root,
    Disk,
    File,
    Interface,
    NvmeTcp,
    Connection,
    Btrfs,
    Subvolume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    DiskAdd,
    DiskSet,
    DiskRemove,
    DiskPrint,
    DiskMonitor,
    DiskCopy,
    FilePrint,
    FileRemove,
    ConnectionPrint,
    SubvolumeAdd,
    SubvolumePrint,
    SubvolumeRemove,
}

enum Step {
    Menu(Menu),
    Verb(Verb),
}

fn step(menu: Menu, word: &str) -> Option<Step> {
    use Menu as M;
    use Verb as V;
    Some(match (menu, word) {
        (M::Root, "disk") => Step::Menu(M::Disk),
        (M::Root, "file") => Step::Menu(M::File),
        (M::Root, "interface") => Step::Menu(M::Interface),
        (M::Interface, "nvme-tcp") => Step::Menu(M::NvmeTcp),
        (M::NvmeTcp, "connection") => Step::Menu(M::Connection),
        (M::Disk, "btrfs") => Step::Menu(M::Btrfs),
        (M::Btrfs, "subvolume") => Step::Menu(M::Subvolume),
        (M::Subvolume, "add") => Step::Verb(V::SubvolumeAdd),
        (M::Subvolume, "print") => Step::Verb(V::SubvolumePrint),
        (M::Subvolume, "remove") => Step::Verb(V::SubvolumeRemove),
        (M::Disk, verb) => Step::Verb(match verb {
            "add" => V::DiskAdd,
            "set" => V::DiskSet,
            "remove" => V::DiskRemove,
            "print" => V::DiskPrint,
            "monitor-traffic" => V::DiskMonitor,
            "copy" => V::DiskCopy,
            _ => return None,
        }),
        (M::File, "print") => Step::Verb(V::FilePrint),
        (M::File, "remove") => Step::Verb(V::FileRemove),
        (M::Connection, "print") => Step::Verb(V::ConnectionPrint),
        _ => return None,
    })
}

/// Parses one command line.
pub(crate) fn parse(line: &str) -> Result<Command, SyntaxError> {
    let line = line.trim_end_matches(['\r', '\n', ' ', '\t']);
    let chars: Vec<char> = line.chars().collect();
    let tokens = lex(&chars, 0)?;
    if tokens.is_empty() {
        return Ok(Command::Empty);
    }
    let (verb, rest) = resolve_path(&tokens, chars.len() + 1)?;
    let items = items(rest)?;
    let end_col = chars.len() + 1;
    Ok(match verb {
        Verb::DiskAdd => Command::DiskAdd(named_only(items)?),
        Verb::DiskSet => {
            let (target, args) = target_and_args(items, true)?;
            Command::DiskSet { target, args }
        }
        Verb::DiskRemove => Command::DiskRemove(target_and_args(items, false)?.0),
        Verb::DiskPrint => Command::DiskPrint(print(items, end_col)?),
        Verb::DiskMonitor => monitor(items)?,
        Verb::FilePrint => Command::FilePrint(print(items, end_col)?),
        Verb::FileRemove => Command::FileRemove(target_and_args(items, false)?.0),
        Verb::ConnectionPrint => Command::NvmeConnectionPrint(print(items, end_col)?),
        Verb::DiskCopy => Command::DiskCopy(named_only(items)?),
        Verb::SubvolumeAdd => Command::SubvolumeAdd(named_only(items)?),
        Verb::SubvolumePrint => Command::SubvolumePrint(print(items, end_col)?),
        Verb::SubvolumeRemove => Command::SubvolumeRemove(target_and_args(items, false)?.0),
    })
}

/// Walks `/disk add`, `/disk/add`, `disk add` and the like down the menu tree.
fn resolve_path(tokens: &[Token], end_col: usize) -> Result<(Verb, &[Token]), SyntaxError> {
    let mut menu = Menu::Root;
    for (i, tok) in tokens.iter().enumerate() {
        let Kind::Word(word) = &tok.kind else {
            return Err(SyntaxError::ExpectedCommandName { col: tok.col });
        };
        let mut col = tok.col;
        let mut verb = None;
        for seg in word.split('/') {
            let seg_col = col;
            col += seg.chars().count() + 1;
            if seg.is_empty() {
                if seg_col == tok.col {
                    menu = Menu::Root;
                }
                continue;
            }
            if verb.is_some() {
                return Err(SyntaxError::BadCommandName {
                    word: seg.to_string(),
                    col: seg_col,
                });
            }
            match step(menu, seg) {
                Some(Step::Menu(m)) => menu = m,
                Some(Step::Verb(v)) => verb = Some(v),
                None => {
                    return Err(SyntaxError::BadCommandName {
                        word: seg.to_string(),
                        col: seg_col,
                    })
                }
            }
        }
        if let Some(v) = verb {
            return Ok((v, &tokens[i + 1..]));
        }
    }
    Err(SyntaxError::ExpectedCommandName { col: end_col })
}

#[derive(Debug, Clone)]
enum Val {
    Text(String),
    Bracket { inner: Vec<char>, inner_col: usize },
}

#[derive(Debug, Clone)]
enum Item {
    Named {
        key: String,
        op: Op,
        op_col: usize,
        value: Val,
        col: usize,
    },
    Positional {
        value: Val,
        col: usize,
    },
}

fn val_of(kind: &Kind) -> Option<Val> {
    match kind {
        Kind::Word(s) | Kind::Quoted(s) => Some(Val::Text(s.clone())),
        Kind::Bracket { inner, inner_col } => Some(Val::Bracket {
            inner: inner.clone(),
            inner_col: *inner_col,
        }),
        Kind::Op(_) => None,
    }
}

/// Groups tokens into `key=value` pairs and positional values. `key=` with
/// nothing attached means an empty value, as in RouterOS; `key = value` with
/// spaces around the operator is accepted too.
fn items(tokens: &[Token]) -> Result<Vec<Item>, SyntaxError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let tok = &tokens[i];
        let op_next = match tokens.get(i + 1) {
            Some(Token {
                kind: Kind::Op(op),
                col,
                end,
            }) => Some((*op, *col, *end)),
            _ => None,
        };
        match (&tok.kind, op_next) {
            (Kind::Op(_), _) => return Err(SyntaxError::Syntax { col: tok.col }),
            (Kind::Word(key), Some((op, op_col, op_end))) => {
                let spaced = op_col != tok.end;
                let value_tok = tokens
                    .get(i + 2)
                    .filter(|v| !matches!(v.kind, Kind::Op(_)) && (spaced || v.col == op_end));
                let value = value_tok
                    .and_then(|v| val_of(&v.kind))
                    .unwrap_or(Val::Text(String::new()));
                out.push(Item::Named {
                    key: key.clone(),
                    op,
                    op_col,
                    value,
                    col: tok.col,
                });
                i += if value_tok.is_some() { 3 } else { 2 };
                if let Some(Token {
                    kind: Kind::Op(_),
                    col,
                    ..
                }) = tokens.get(i)
                {
                    return Err(SyntaxError::Syntax { col: *col });
                }
            }
            (_, Some((_, op_col, _))) => return Err(SyntaxError::Syntax { col: op_col }),
            (kind, None) => {
                let value = val_of(kind).ok_or(SyntaxError::Syntax { col: tok.col })?;
                out.push(Item::Positional {
                    value,
                    col: tok.col,
                });
                i += 1;
            }
        }
    }
    Ok(out)
}

fn value_of(val: Val) -> Result<Value, SyntaxError> {
    match val {
        Val::Text(s) => Ok(Value::Text(s)),
        Val::Bracket { inner, inner_col } => Ok(Value::Find(parse_find(&inner, inner_col)?)),
    }
}

fn target_of(val: Val) -> Result<Target, SyntaxError> {
    match value_of(val)? {
        Value::Find(conds) => Ok(Target::Find(conds)),
        Value::Text(s) => Ok(Target::Items(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )),
    }
}

fn named_only(items: Vec<Item>) -> Result<Vec<Arg>, SyntaxError> {
    items
        .into_iter()
        .map(|item| match item {
            Item::Named {
                key,
                op: Op::Eq,
                value,
                col,
                ..
            } => Ok(Arg {
                key,
                value: value_of(value)?,
                col,
            }),
            Item::Named { op_col, .. } => Err(SyntaxError::Syntax { col: op_col }),
            Item::Positional { col, .. } => Err(SyntaxError::ExpectedEndOfCommand { col }),
        })
        .collect()
}

/// `set`/`remove`: the item list comes first, positionally or as `numbers=`.
fn target_and_args(
    items: Vec<Item>,
    allow_args: bool,
) -> Result<(Option<Target>, Vec<Arg>), SyntaxError> {
    let mut target = None;
    let mut named = Vec::new();
    for (idx, item) in items.into_iter().enumerate() {
        match item {
            Item::Positional { value, .. } if idx == 0 => target = Some(target_of(value)?),
            Item::Named {
                key,
                op: Op::Eq,
                value,
                ..
            } if key == "numbers" && target.is_none() => target = Some(target_of(value)?),
            Item::Named { col, .. } if !allow_args => {
                return Err(SyntaxError::ExpectedEndOfCommand { col })
            }
            other => named.push(other),
        }
    }
    Ok((target, named_only(named)?))
}

fn monitor(items: Vec<Item>) -> Result<Command, SyntaxError> {
    let mut target = None;
    let mut once = false;
    for item in items {
        match item {
            Item::Positional {
                value: Val::Text(w),
                ..
            } if w == "once" && target.is_some() => once = true,
            Item::Positional { value, .. } if target.is_none() => target = Some(target_of(value)?),
            Item::Named {
                key,
                op: Op::Eq,
                value,
                ..
            } if key == "numbers" && target.is_none() => target = Some(target_of(value)?),
            Item::Named { key, .. } if key == "once" => once = true,
            Item::Named { col, .. } | Item::Positional { col, .. } => {
                return Err(SyntaxError::ExpectedEndOfCommand { col })
            }
        }
    }
    Ok(Command::DiskMonitorTraffic { target, once })
}

fn print(items: Vec<Item>, end_col: usize) -> Result<Print, SyntaxError> {
    let mut print = Print::default();
    let mut iter = items.into_iter();
    while let Some(item) = iter.next() {
        match item {
            Item::Positional {
                value: Val::Text(w),
                col,
            } => match w.as_str() {
                "detail" | "without-paging" | "terse" => {}
                "count-only" => print.count_only = true,
                "where" => {
                    let rest: Vec<Item> = iter.collect();
                    if rest.is_empty() {
                        return Err(SyntaxError::Syntax { col: end_col });
                    }
                    print.conds = conds(rest)?;
                    return Ok(print);
                }
                _ => return Err(SyntaxError::ExpectedEndOfCommand { col }),
            },
            Item::Positional { col, .. } | Item::Named { col, .. } => {
                return Err(SyntaxError::ExpectedEndOfCommand { col })
            }
        }
    }
    Ok(print)
}

/// Conditions of a `where` clause: `key=v`, `key~"re"`, `key!=v`, joined by
/// whitespace or `and`.
fn conds(items: Vec<Item>) -> Result<Vec<Cond>, SyntaxError> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Named {
                key,
                op,
                value: Val::Text(value),
                col,
                ..
            } => out.push(Cond {
                key,
                op,
                value,
                col,
            }),
            Item::Named {
                value: Val::Bracket { inner_col, .. },
                ..
            } => return Err(SyntaxError::Syntax { col: inner_col }),
            Item::Positional {
                value: Val::Text(w),
                ..
            } if w == "and" => {}
            Item::Positional { col, .. } => return Err(SyntaxError::ExpectedEndOfCommand { col }),
        }
    }
    Ok(out)
}

/// The inside of `[...]`: only `find` with optional `where` and conditions.
fn parse_find(inner: &[char], inner_col: usize) -> Result<Vec<Cond>, SyntaxError> {
    let tokens = lex(inner, inner_col - 1)?;
    let Some(first) = tokens.first() else {
        return Err(SyntaxError::ExpectedCommandName { col: inner_col });
    };
    match &first.kind {
        Kind::Word(w) if w == "find" => {}
        Kind::Word(w) => {
            return Err(SyntaxError::BadCommandName {
                word: w.clone(),
                col: first.col,
            })
        }
        _ => return Err(SyntaxError::ExpectedCommandName { col: first.col }),
    }
    let mut items = items(&tokens[1..])?;
    if let Some(Item::Positional {
        value: Val::Text(w),
        ..
    }) = items.first()
    {
        if w == "where" {
            items.remove(0);
        }
    }
    conds(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    #[test]
    fn disk_add_with_quoted_and_bare_values_parses() {
        let cmd = parse(
            r#"/disk add type=file file-path="/storage-pool/a b.img" file-size=10G slot=pvc-1 nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:pvc-1"#,
        )
        .unwrap();
        let Command::DiskAdd(args) = cmd else {
            panic!("not an add: {cmd:?}")
        };
        let get = |k: &str| args.iter().find(|a| a.key == k).map(|a| a.value.clone());
        assert_eq!(get("file-path"), Some(text("/storage-pool/a b.img")));
        assert_eq!(get("file-size"), Some(text("10G")));
        assert_eq!(
            get("nvme-tcp-server-nqn"),
            Some(text("nqn.2000-02.com.mikrotik:pvc-1"))
        );
    }

    #[test]
    fn copy_from_takes_a_find_expression() {
        let cmd =
            parse("/disk add type=file copy-from=[find slot=\"pvc-1\"] file-path=/p/s.img slot=s")
                .unwrap();
        let Command::DiskAdd(args) = cmd else {
            panic!()
        };
        let copy = args.iter().find(|a| a.key == "copy-from").unwrap();
        assert_eq!(
            copy.value,
            Value::Find(vec![Cond {
                key: "slot".into(),
                op: Op::Eq,
                value: "pvc-1".into(),
                col: 37
            }])
        );
    }

    #[test]
    fn set_and_remove_accept_find_and_names() {
        let cmd = parse("/disk set [find where slot=x] file-size=1G").unwrap();
        assert!(
            matches!(cmd, Command::DiskSet { target: Some(Target::Find(ref c)), ref args } if c.len() == 1 && args.len() == 1)
        );
        let cmd = parse("/disk/remove numbers=a,b").unwrap();
        assert_eq!(
            cmd,
            Command::DiskRemove(Some(Target::Items(vec!["a".into(), "b".into()])))
        );
        let cmd = parse("/file remove [find name=\"storage-pool/x.img\"]").unwrap();
        assert!(matches!(cmd, Command::FileRemove(Some(Target::Find(_)))));
    }

    #[test]
    fn btrfs_subvolume_and_disk_copy_commands_parse() {
        let cmd = parse(
            "/disk/btrfs/subvolume/add fs=storage-pool name=snap-1 parent=pvc-1 read-only=yes",
        )
        .unwrap();
        assert!(matches!(cmd, Command::SubvolumeAdd(ref a) if a.len() == 4));
        let cmd = parse("/disk btrfs subvolume print detail where name=pvc-1").unwrap();
        assert!(matches!(cmd, Command::SubvolumePrint(ref p) if p.conds.len() == 1));
        let cmd = parse("/disk/btrfs/subvolume/remove [find where name=pvc-1]").unwrap();
        assert!(matches!(
            cmd,
            Command::SubvolumeRemove(Some(Target::Find(_)))
        ));
        let cmd = parse("/disk/copy src=[find slot=a] dst=b").unwrap();
        assert!(matches!(cmd, Command::DiskCopy(ref a) if a.len() == 2));
        assert!(matches!(
            parse("/disk/btrfs/subvolume/snapshot"),
            Err(SyntaxError::BadCommandName { .. })
        ));
    }

    #[test]
    fn print_where_supports_equal_match_and_not_equal() {
        let cmd = parse(r#"/disk print detail where slot~"^pvc-" and type!=partition"#).unwrap();
        let Command::DiskPrint(p) = cmd else { panic!() };
        assert_eq!(p.conds.len(), 2);
        assert_eq!(p.conds[0].op, Op::Match);
        assert_eq!(p.conds[0].value, "^pvc-");
        assert_eq!(p.conds[1].op, Op::NotEq);
        let cmd = parse("/disk print detail where slot = \"a\"").unwrap();
        let Command::DiskPrint(p) = cmd else { panic!() };
        assert_eq!(p.conds[0].value, "a");
    }

    #[test]
    fn unknown_words_report_their_column() {
        assert_eq!(
            parse("/disk frobnicate").unwrap_err().to_string(),
            "bad command name frobnicate (line 1 column 7)"
        );
        assert_eq!(
            parse("/foo print").unwrap_err().to_string(),
            "bad command name foo (line 1 column 2)"
        );
        assert_eq!(
            parse("/disk print detail bogus").unwrap_err().to_string(),
            "expected end of command (line 1 column 20)"
        );
        assert!(matches!(
            parse("/disk"),
            Err(SyntaxError::ExpectedCommandName { .. })
        ));
    }

    #[test]
    fn malformed_quotes_brackets_and_operators_are_syntax_errors() {
        for bad in [
            "/disk print where slot=\"open",
            "/disk remove [find slot=x",
            "/disk remove ]",
            "/disk add =x",
            "/disk add a=b=c",
            "/disk print; /disk print",
            "/disk print where",
            "/disk remove [frob]",
            "/disk add a\nb",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn escapes_in_quoted_strings_are_decoded() {
        let Command::DiskPrint(p) = parse(r#"/disk print where slot="a\"b\\c\_d\41""#).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.conds[0].value, "a\"b\\c dA");
    }

    #[test]
    fn empty_input_is_an_empty_command() {
        assert_eq!(parse("").unwrap(), Command::Empty);
        assert_eq!(parse("  \r\n").unwrap(), Command::Empty);
    }
}
