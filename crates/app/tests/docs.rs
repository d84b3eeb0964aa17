//! The docs' lists of what the code decides, held to the code: the crate
//! table of docs/architecture.md to the manifests, the rejection reasons of
//! docs/operations.md to the domain's. A crate, a dependency or a reason
//! added without its line fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orders_domain::RejectReason;

const ARCHITECTURE: &str = include_str!("../../../docs/architecture.md");
const OPERATIONS: &str = include_str!("../../../docs/operations.md");

/// The workspace's `crates/` directory.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_owned()
}

/// Each workspace crate's package name, and the `orders-*` crates its
/// manifest lists under `[dependencies]` (dev-dependencies left out).
fn manifests() -> Vec<(String, BTreeSet<String>)> {
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).expect("crates/ readable") {
        let manifest = entry.expect("an entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{} names no package", manifest.display()));
        let mut section = "";
        let mut depends = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[dependencies]"
                && let Some(dependency) = line.split(['.', ' ', '=']).next()
                && dependency.starts_with("orders-")
            {
                depends.insert(dependency.to_owned());
            }
        }
        crates.push((name, depends));
    }
    crates
}

/// The `orders-*` names in `text`.
fn crate_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("orders-"))
        .map(str::to_owned)
        .collect()
}

/// The crate table's rows in order: each crate and the `orders-*` crates its
/// "depends on" cell names ("all of the above": every crate of the rows
/// before it).
fn crate_table() -> Vec<(String, BTreeSet<String>)> {
    let mut rows: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in ARCHITECTURE.lines() {
        let Some(row) = line.strip_prefix("| `orders-") else {
            continue;
        };
        let name = format!("orders-{}", &row[..row.find('`').expect("a closing `")]);
        let depends_on = line
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .expect("cells");
        let mut named = crate_names(depends_on);
        if depends_on.contains("all of the above") {
            named.extend(rows.iter().map(|(above, _)| above.clone()));
        }
        rows.push((name, named));
    }
    rows
}

#[test]
fn the_crate_table_names_every_crate_and_its_own_dependencies() {
    let manifests = manifests();
    let table = crate_table();

    let documented: BTreeSet<&String> = table.iter().map(|(name, _)| name).collect();
    let built: BTreeSet<&String> = manifests.iter().map(|(name, _)| name).collect();
    assert_eq!(
        documented, built,
        "docs/architecture.md's crate table lists other crates than crates/"
    );
    for (name, depends) in &manifests {
        let (_, named) = table
            .iter()
            .find(|(row, _)| row == name)
            .expect("a row, checked above");
        assert_eq!(
            named, depends,
            "docs/architecture.md: the dependencies of {name} (left) are not its manifest's (right)"
        );
    }
}

#[test]
fn operations_md_names_every_rejection_reason() {
    let row = OPERATIONS
        .lines()
        .find(|l| l.starts_with("| `orders_messages_rejected_total{reason}`"))
        .expect("docs/operations.md has a row for orders_messages_rejected_total");

    for reason in RejectReason::ALL {
        assert!(
            row.contains(&format!("`{}`", reason.as_str())),
            "the orders_messages_rejected_total row of docs/operations.md does not name {reason}"
        );
    }
}
