//! PHP `unserialize` for the PHP-serialised values still in Bangumi's tables (the PHP site
//! wrote `a:…:{…}` timeline memos and privacy settings), into the same [`Js`] value the JSON
//! form parses to, as server-private's `decode()` does with `@trim21/php-serialize`.
//!
//! Supported: `N;`, `b:`, `i:`, `d:`, `s:` (length in bytes, UTF-8 content), `a:` (integer and
//! string keys; a PHP list `0…n-1` becomes an array, anything else an object). Objects (`O:`),
//! references (`r:`/`R:`) and custom serialisation (`C:`) never occur in these columns and are errors.

use crate::Js;

/// Why a text is not a PHP-serialised value, with the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PHP unserialize at byte {at}: {what}")]
pub struct PhpError {
    /// Byte offset.
    pub at: usize,
    /// What was expected.
    pub what: &'static str,
}

/// Parses the whole of `text` as one value.
pub fn unserialize(text: &str) -> Result<Js, PhpError> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = p.value(0)?;
    if p.at != p.bytes.len() {
        return Err(p.error("end of input"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &'static str) -> PhpError {
        PhpError { at: self.at, what }
    }

    fn eat(&mut self, byte: u8, what: &'static str) -> Result<(), PhpError> {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Text up to (not including) `end`, consuming `end`.
    fn until(&mut self, end: u8, what: &'static str) -> Result<&str, PhpError> {
        let start = self.at;
        let len = self.bytes[start..]
            .iter()
            .position(|b| *b == end)
            .ok_or_else(|| self.error(what))?;
        self.at = start + len + 1;
        std::str::from_utf8(&self.bytes[start..start + len])
            .map_err(|_| PhpError { at: start, what })
    }

    fn value(&mut self, depth: usize) -> Result<Js, PhpError> {
        if depth > 64 {
            return Err(self.error("nesting deeper than 64"));
        }
        let tag = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.error("a value"))?;
        self.at += 1;
        if tag == b'N' {
            self.eat(b';', "`;` after N")?;
            return Ok(Js::Null);
        }
        self.eat(b':', "`:` after the type")?;
        match tag {
            b'b' => match self.until(b';', "a boolean")? {
                "0" => Ok(Js::Bool(false)),
                "1" => Ok(Js::Bool(true)),
                _ => Err(self.error("b:0 or b:1")),
            },
            b'i' => {
                let text = self.until(b';', "an integer")?;
                text.parse::<i64>()
                    .map(|n| Js::Number(n.into()))
                    .map_err(|_| self.error("an integer"))
            }
            b'd' => {
                let text = self.until(b';', "a float")?;
                let n: f64 = text.parse().map_err(|_| self.error("a float"))?;
                // A JS number: integral values print without a fraction.
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Ok(Js::Number((n as i64).into()))
                } else {
                    serde_json::Number::from_f64(n)
                        .map(Js::Number)
                        .ok_or_else(|| self.error("a finite float"))
                }
            }
            b's' => Ok(Js::String(self.string()?)),
            b'a' => self.array(depth),
            _ => Err(PhpError {
                at: self.at - 2,
                what: "one of N b i d s a",
            }),
        }
    }

    /// After `s:`: `len:"bytes";`.
    fn string(&mut self) -> Result<String, PhpError> {
        let len: usize = self
            .until(b':', "a string length")?
            .parse()
            .map_err(|_| self.error("a string length"))?;
        self.eat(b'"', "`\"` opening a string")?;
        let end = self.at + len;
        let bytes = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| self.error("string bytes"))?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| self.error("UTF-8 string bytes"))?
            .to_owned();
        self.at = end;
        self.eat(b'"', "`\"` closing a string")?;
        self.eat(b';', "`;` after a string")?;
        Ok(text)
    }

    /// After `a:`: `n:{key value …}`.
    fn array(&mut self, depth: usize) -> Result<Js, PhpError> {
        let n: usize = self
            .until(b':', "an array length")?
            .parse()
            .map_err(|_| self.error("an array length"))?;
        self.eat(b'{', "`{` opening an array")?;
        let mut entries: Vec<(String, Js)> = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let key = match self.value(depth + 1)? {
                Js::Number(n) => n.to_string(),
                Js::String(s) => s,
                _ => return Err(self.error("an integer or string key")),
            };
            let value = self.value(depth + 1)?;
            Js::set(&mut entries, key, value);
        }
        self.eat(b'}', "`}` closing an array")?;
        let is_list = entries
            .iter()
            .enumerate()
            .all(|(i, (k, _))| *k == i.to_string());
        Ok(if is_list && !entries.is_empty() {
            Js::Array(entries.into_iter().map(|(_, v)| v).collect())
        } else {
            Js::Object(entries)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memos_from_the_php_site() {
        let v = unserialize(r#"a:4:{s:10:"subject_id";s:3:"123";s:10:"collect_id";i:9;s:15:"collect_comment";s:3:"好";s:12:"collect_rate";i:0;}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.to_json(),
            r#"{"subject_id":"123","collect_id":9,"collect_comment":"好","collect_rate":0}"#
        );
        let batch = unserialize(r#"a:2:{i:5;a:1:{s:3:"uid";i:5;}i:3;a:1:{s:3:"uid";i:3;}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(batch.to_json(), r#"{"3":{"uid":3},"5":{"uid":5}}"#);
    }

    #[test]
    fn scalars_and_lists() {
        let ok = |s: &str| {
            unserialize(s)
                .unwrap_or_else(|e| panic!("{s}: {e}"))
                .to_json()
        };
        assert_eq!(ok("N;"), "null");
        assert_eq!(ok("b:1;"), "true");
        assert_eq!(ok("i:-4;"), "-4");
        assert_eq!(ok("d:2;"), "2");
        assert_eq!(ok("d:0.5;"), "0.5");
        assert_eq!(ok(r#"a:2:{i:0;s:1:"a";i:1;s:1:"b";}"#), r#"["a","b"]"#);
        assert_eq!(ok("a:0:{}"), "{}");
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            unserialize("s:5:\"ab\";").map_err(|e| e.what),
            Err("string bytes")
        );
        assert!(unserialize("O:8:\"stdClass\":0:{}").is_err());
        assert!(unserialize("i:1;x").is_err());
    }
}
