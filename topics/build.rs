//! Embeds every `families/*.toml` file: the directory is the list of families, so adding one is
//! adding its file. Writes `$OUT_DIR/families.rs`, a `FILES` table of `(file name, contents)` in
//! file-name order, read by `src/lib.rs`.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("families");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            entry.file_name().to_string_lossy().into_owned()
        })
        .filter(|name| name.ends_with(".toml"))
        .collect();
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        let path = dir.join(file);
        println!("cargo::rerun-if-changed={}", path.display());
        let _ = writeln!(table, "    ({file:?}, include_str!({:?})),", path.display());
    }
    table.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("families.rs");
    std::fs::write(&out, table).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
