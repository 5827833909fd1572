//! The modules' dependencies point one way (`docs/architecture.md`,
//! "Modules and which way they depend"): codecs, then `bus` and `metrics`,
//! then `conn`, then the threads (`shard`, `link`, `net`), then `node`.
//! This test reads every source file under `src/<module>/` and fails on an
//! import of a module at the same rank or above, so a cycle cannot come
//! back unnoticed.

use std::collections::BTreeSet;
use std::path::Path;

/// Each module's rank; an import must go to a strictly lower rank.
const RANKS: &[(&str, u32)] = &[
    ("ws", 0),
    ("auth", 0),
    ("rooms", 0),
    ("limits", 0),
    ("history", 0),
    ("presence", 0),
    ("tls", 0),
    ("protocol", 1),
    ("config", 1),
    ("http", 2),
    ("metrics", 3),
    ("bus", 4),
    ("conn", 5),
    ("shard", 6),
    ("link", 6),
    ("net", 6),
    ("node", 7),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Every `crate::<module>` named in code (not comments) under `dir`.
fn imports(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            imports(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
}

#[test]
fn module_imports_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let module = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(own) = rank(&module) else {
            wrong.push(format!("src/{module}/ has no rank in tests/layering.rs"));
            continue;
        };
        seen += 1;
        let mut used = BTreeSet::new();
        imports(&path, &mut used);
        for dep in used.iter().filter(|d| **d != module) {
            match rank(dep) {
                Some(r) if r < own => {}
                Some(_) => wrong.push(format!("{module} imports {dep}, which is not below it")),
                None => wrong.push(format!("{module} imports crate::{dep}, which has no rank")),
            }
        }
    }
    assert_eq!(seen, RANKS.len(), "every ranked module was found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
