//! Differential test against the reference parser, the real `@bgm38/wiki` 0.3.3 from npm: both
//! parse the same corpus (every conformance input plus [`GENERATED_CASES`] pseudo-random,
//! wiki-like texts), and must agree on every result. Two rejections agree whatever their line or
//! message; an acceptance agrees when type and fields are equal in `@bgm38/wiki`'s shape.
//!
//! Needs Node.js 18+ and npm (`npm ci` runs once, in `$CARGO_TARGET_DIR/wiki-differential/`);
//! without them the test fails rather than skips, because this is what proves that a worker built
//! on this crate acts on exactly the subjects the TypeScript one does.
//!
//! # Layout
//! - [`reference_results`]: installs `tests/differential/` and runs its `parse.mjs` once.
//! - [`Generator`]: the seeded generator of wiki-like texts, biased toward the tricky cases.
//! - [`agrees_with_bgm38_wiki`]: the test.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::{env, fs, thread};

use bangumi_wiki::parse;
use common::{UPSTREAM_SUITE_ENV, UpstreamWiki, own_suite_dir, wiki_files};
use serde_json::{Value, json};

/// How many generated texts the corpus holds besides the conformance inputs.
const GENERATED_CASES: usize = 25_000;
/// The generator's seed; fixed, so a failure reproduces.
const SEED: u64 = 0xB638_5EED;
const INSTALL_HINT: &str = "the differential test needs Node.js 18+ and npm on PATH: install \
                            Node.js 18 or newer (e.g. `apt-get install nodejs npm`)";

#[test]
fn agrees_with_bgm38_wiki() {
    let mut corpus = conformance_inputs();
    let conformance = corpus.len();
    let mut generator = Generator::new(SEED);
    corpus.extend((0..GENERATED_CASES).map(|_| generator.wiki_like()));

    let theirs = reference_results(&corpus);
    assert_eq!(
        theirs.len(),
        corpus.len(),
        "parse.mjs answered a different number of inputs"
    );

    let mut accepted = 0;
    let mut mismatches = Vec::new();
    for (input, theirs) in corpus.iter().zip(&theirs) {
        let ours = match parse(input) {
            Ok(wiki) => {
                accepted += 1;
                serde_json::to_value(UpstreamWiki::from(&wiki)).expect("a wiki serialises")
            }
            Err(_) => json!({ "error": true }),
        };
        if &ours != theirs {
            mismatches.push(format!(
                "input {input:?}\n  ours:   {ours}\n  theirs: {theirs}"
            ));
        }
    }
    println!(
        "differential: {} inputs ({conformance} conformance + {GENERATED_CASES} generated), \
         {accepted} accepted and {} rejected by us, {} agree with @bgm38/wiki",
        corpus.len(),
        corpus.len() - accepted,
        corpus.len() - mismatches.len(),
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} inputs disagree with @bgm38/wiki; the first ones:\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    // The generator must reach both sides, or agreement proves little.
    assert!(accepted > corpus.len() / 5 && accepted < corpus.len() * 4 / 5);
}

/// Every `.wiki` of our conformance suite, and of the upstream one when it is given.
fn conformance_inputs() -> Vec<String> {
    let mut dirs = vec![own_suite_dir()];
    dirs.extend(env::var_os(UPSTREAM_SUITE_ENV).map(PathBuf::from));
    dirs.iter()
        .flat_map(|dir| [dir.join("valid"), dir.join("invalid")])
        .flat_map(|dir| wiki_files(&dir))
        .map(|path| fs::read_to_string(&path).expect("a conformance input is UTF-8"))
        .collect()
}

/// `@bgm38/wiki`'s result for each input, in its own shape, or `{"error": true}`.
fn reference_results(inputs: &[String]) -> Vec<Value> {
    let version = Command::new("node").arg("--version").output();
    let version = match version {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        _ => panic!("`node --version` failed: {INSTALL_HINT}"),
    };
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 18,
        "found Node.js {}: {INSTALL_HINT}",
        version.trim()
    );

    let dir = install_dir();
    let mut input = String::new();
    for text in inputs {
        input.push_str(&serde_json::to_string(text).expect("a string serialises"));
        input.push('\n');
    }
    let mut child = Command::new("node")
        .arg("parse.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("starting node: {error}: {INSTALL_HINT}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("node runs to its end");
    writer
        .join()
        .expect("the writer thread")
        .expect("writing to node");
    assert!(
        output.status.success(),
        "parse.mjs failed: {}",
        output.status
    );
    String::from_utf8(output.stdout)
        .expect("parse.mjs writes UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("parse.mjs writes JSON lines"))
        .collect()
}

/// `tests/differential/` copied to `$CARGO_TARGET_DIR/wiki-differential/` (or a temporary
/// directory), with `npm ci` run when `node_modules` is missing or the lock file changed.
fn install_dir() -> PathBuf {
    let dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(env::temp_dir, PathBuf::from)
        .join("wiki-differential");
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {dir:?}: {error}"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let lock_changed = fs::read(dir.join("package-lock.json")).ok()
        != fs::read(source.join("package-lock.json")).ok();
    for file in ["package.json", "package-lock.json", "parse.mjs"] {
        fs::copy(source.join(file), dir.join(file))
            .unwrap_or_else(|error| panic!("copying {file} to {dir:?}: {error}"));
    }
    if lock_changed || !dir.join("node_modules/@bgm38/wiki/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|error| panic!("running npm: {error}: {INSTALL_HINT}"));
        assert!(status.success(), "`npm ci` in {dir:?} failed: {status}");
    }
    dir
}

/// A SplitMix64 generator of wiki-like texts: an opening line, fields, arrays and a closing line,
/// joined by `\n`, `\r\n` or a lone `\r`, and padded with characters JavaScript trims (U+3000,
/// U+FEFF, U+2028) and some it does not (U+0085, U+200B). Each text has its own `noise`: the
/// chance that any one part of it is taken from the parts that break a rule, so the corpus holds
/// clean texts, texts with one slip, and texts with many.
struct Generator {
    state: u64,
    noise: usize,
}

/// Each list of parts is a pair: (parts that keep the text valid, parts that may break it).
type Parts = (&'static [&'static str], &'static [&'static str]);

const OPENINGS: Parts = (
    &[
        "{{Infobox",
        "{{Infobox animanga/TVAnime",
        "{{Infobox Crt",
        "{{InfoboxAnime",
        "{{Infobox 人物}}",
        "{{Infobox a}} |x=y",
        "{{Infobox }} }}",
    ],
    &["{{infobox", "{{", "Infobox", "", "}}", "\u{85}{{Infobox"],
);
const CLOSINGS: Parts = (
    &["}}", " }} ", "|话数= 25}}", "[a]}}", "}}}", "\n}}"],
    &["}", "", "x", "}}\u{85}", "}\n}}", "}}\n\u{85}"],
);
const KEYS: &[&str] = &[
    "中文名",
    "别名",
    "话数",
    "放送开始",
    "",
    "a",
    "{{键}}",
    "甲|乙",
    "中文名",
];
const VALUES: &[&str] = &[
    "进击的巨人",
    "",
    "{",
    " { ",
    "{}",
    "a=b",
    "b = D",
    "x}}",
    "}}",
    "[a]",
    "|",
    "2013年4月6日",
    "\u{85}值",
    "值\u{3000}",
    "}",
    "{ [a] }",
];
const ITEMS: Parts = (
    &[
        "[進撃の巨人]",
        "[英文名|Attack on Titan]",
        "[官网|a|b]",
        "[]",
        "[|]",
        "[ |x]",
        "[a]]",
        "[[a]",
        "[日文名|]",
        "[}]",
        "[|}}]",
        "[{]",
    ],
    &["[a", "a]", "进击", "|x]", "|a=b", "{", "=", "\u{85}[a]"],
);
const ARRAY_ENDS: Parts = (&["}", "} 其余", "}}", "}{"], &["", "]", "[}"]);
const STRAY_LINES: Parts = (
    &["", "\u{3000}", "\r"],
    &["}", "第二行", "[a]", "\u{85}", "{"],
);
const PADDING: Parts = (
    &[
        " ", "\t", "\u{3000}", "\u{FEFF}", "\u{2028}", "\u{2029}", "\u{A0}", "\r", "\u{B}",
    ],
    &["\u{85}", "\u{180E}", "\u{200B}"],
);

impl Generator {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            noise: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn pick(&mut self, choices: &[&'static str]) -> &'static str {
        choices[self.below(choices.len())]
    }

    /// A part that keeps the text valid, or, with this text's noise, one that may break it.
    fn part(&mut self, (valid, breaking): Parts) -> &'static str {
        let noise = self.noise;
        if self.percent(noise) {
            self.pick(breaking)
        } else {
            self.pick(valid)
        }
    }

    /// Zero to two padding characters.
    fn padding(&mut self) -> String {
        if !self.percent(25) {
            return String::new();
        }
        (0..1 + self.below(2)).map(|_| self.part(PADDING)).collect()
    }

    fn padded(&mut self, text: &str) -> String {
        format!("{}{text}{}", self.padding(), self.padding())
    }

    fn wiki_like(&mut self) -> String {
        self.noise = [0, 0, 1, 3, 10, 40][self.below(6)];
        if self.percent(4) {
            return (0..self.below(40))
                .map(|_| self.pick(common::TOKENS))
                .collect();
        }
        let mut lines = Vec::new();
        if self.percent(15) {
            lines.extend((0..1 + self.below(2)).map(|_| self.padding()));
        }
        let opening = self.part(OPENINGS);
        lines.push(self.padded(opening));
        for _ in 0..self.below(8) {
            self.body_lines(&mut lines);
        }
        let closing = self.part(CLOSINGS);
        lines.push(self.padded(closing));
        if self.percent(15) {
            lines.extend((0..1 + self.below(2)).map(|_| self.padding()));
        }
        let mut text = String::new();
        for (index, line) in lines.iter().enumerate() {
            if index > 0 {
                text.push_str(match self.below(20) {
                    0..=15 => "\n",
                    16..=18 => "\r\n",
                    _ => "\r",
                });
            }
            text.push_str(line);
        }
        text
    }

    fn field_line(&mut self, value: &str) -> String {
        let key = self.pick(KEYS);
        let key = self.padded(key);
        let value = self.padded(value);
        let noise = self.noise;
        if self.percent(noise / 4) {
            format!("|{key}{value}") // no `=`
        } else {
            format!("{}|{key}={value}", self.padding())
        }
    }

    fn body_lines(&mut self, lines: &mut Vec<String>) {
        match self.below(10) {
            0..=4 => {
                let value = self.pick(VALUES);
                lines.push(self.field_line(value));
            }
            5..=7 => {
                lines.push(self.field_line("{"));
                for _ in 0..self.below(4) {
                    if self.percent(15) {
                        lines.push(self.padding());
                    }
                    let item = self.part(ITEMS);
                    lines.push(self.padded(item));
                }
                let end = self.part(ARRAY_ENDS);
                lines.push(self.padded(end));
            }
            _ => {
                let stray = self.part(STRAY_LINES);
                lines.push(self.padded(stray));
            }
        }
    }
}
