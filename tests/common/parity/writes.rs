//! From `MONITOR` lines to the writes a parity run compares, and the diff of one record's.

use std::collections::{BTreeMap, HashMap};

/// Which commands are writes, as the Redis server says (`COMMAND INFO`: the `write` flag),
/// plus `PUBLISH` and `SPUBLISH`. A script's commands reach `MONITOR` one by one, so `EVAL`
/// itself is not counted.
#[derive(Default)]
pub(super) struct Classifier {
    known: HashMap<String, bool>,
}

impl Classifier {
    pub(super) async fn is_write(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
        command: &str,
    ) -> anyhow::Result<bool> {
        let name = command.to_ascii_lowercase();
        if let Some(write) = self.known.get(&name) {
            return Ok(*write);
        }
        let info: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(&name)
            .query_async(conn)
            .await?;
        let flags: Vec<String> = match info {
            redis::Value::Array(mut entries) if !entries.is_empty() => match entries.remove(0) {
                redis::Value::Array(fields) if fields.len() > 2 => {
                    redis::from_redis_value(fields[2].clone()).unwrap_or_default()
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let write = flags.iter().any(|f| f == "write") || name == "publish" || name == "spublish";
        self.known.insert(name, write);
        Ok(write)
    }
}

/// The command of a `MONITOR` line (`1700000000.000001 [0 127.0.0.1:5000] "DEL" "k"`), its
/// arguments unescaped; none if the line is not one.
pub fn parse_monitor_line(line: &str) -> Option<Vec<String>> {
    let (_, rest) = line.split_once("] ")?;
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(_) => return None,
        }
        let mut arg: Vec<u8> = Vec::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => arg.push(b'\n'),
                    'r' => arg.push(b'\r'),
                    't' => arg.push(b'\t'),
                    'a' => arg.push(7),
                    'b' => arg.push(8),
                    'x' => {
                        let hex: String = [chars.next()?, chars.next()?].iter().collect();
                        arg.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    c => arg.extend(c.to_string().as_bytes()),
                },
                c => arg.extend(c.to_string().as_bytes()),
            }
        }
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    if args.is_empty() {
        return None;
    }
    args[0] = args[0].to_ascii_uppercase();
    Some(args)
}

/// A write as compared: the command name upper-cased; a `DEL` or `UNLINK` of several keys is
/// one `DEL` per key (deleting is deleting, however batched).
pub fn normalise(command: Vec<String>) -> Vec<Vec<String>> {
    match command[0].as_str() {
        "DEL" | "UNLINK" => command[1..]
            .iter()
            .map(|key| vec!["DEL".to_owned(), key.clone()])
            .collect(),
        _ => vec![command],
    }
}

/// The writes of one record that only one side issued (as multisets).
pub(super) struct Diff {
    only_legacy: Vec<Vec<String>>,
    only_family: Vec<Vec<String>>,
    both: usize,
}

impl Diff {
    pub(super) fn of(legacy: &[Vec<String>], family: &[Vec<String>]) -> Self {
        let mut counts: BTreeMap<&Vec<String>, i64> = BTreeMap::new();
        for w in legacy {
            *counts.entry(w).or_default() += 1;
        }
        for w in family {
            *counts.entry(w).or_default() -= 1;
        }
        let mut diff = Self {
            only_legacy: Vec::new(),
            only_family: Vec::new(),
            both: 0,
        };
        for (w, n) in counts {
            let side = if n > 0 {
                &mut diff.only_legacy
            } else {
                &mut diff.only_family
            };
            side.extend(std::iter::repeat_n(w.clone(), n.unsigned_abs() as usize));
        }
        diff.both = legacy.len() - diff.only_legacy.len();
        diff
    }

    pub(super) fn is_empty(&self) -> bool {
        self.only_legacy.is_empty() && self.only_family.is_empty()
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (mark, side, writes) in [
            ('-', "legacy only", &self.only_legacy),
            ('+', "family only", &self.only_family),
        ] {
            for w in writes {
                let shown: Vec<String> = w
                    .iter()
                    .map(|a| {
                        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                            format!("{a:?}")
                        } else {
                            a.clone()
                        }
                    })
                    .collect();
                writeln!(f, "  {mark} {side}: {}", shown.join(" "))?;
            }
        }
        writeln!(f, "    (both: {} write(s))", self.both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_parse_with_their_escapes() {
        assert_eq!(
            parse_monitor_line(r#"1700000000.000001 [0 127.0.0.1:5000] "del" "a b" "q\"\\\x01""#),
            Some(vec!["DEL".into(), "a b".into(), "q\"\\\u{1}".into()])
        );
        assert_eq!(
            parse_monitor_line(r#"1700000000.000001 [0 lua] "SET" "k" """#),
            Some(vec!["SET".into(), "k".into(), String::new()])
        );
        assert_eq!(parse_monitor_line("OK"), None);
    }

    #[test]
    fn deletions_compare_key_by_key() {
        let one = normalise(vec!["UNLINK".into(), "a".into(), "b".into()]);
        let diff = Diff::of(
            &one,
            &[
                vec!["DEL".into(), "b".into()],
                vec!["DEL".into(), "c".into()],
            ],
        );
        assert_eq!(diff.only_legacy, [vec!["DEL".to_owned(), "a".to_owned()]]);
        assert_eq!(diff.only_family, [vec!["DEL".to_owned(), "c".to_owned()]]);
        assert_eq!(diff.both, 1);
    }
}
