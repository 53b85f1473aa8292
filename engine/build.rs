//! Embeds the detection rules: every `rules/*.toml` file becomes one entry of
//! `EMBEDDED_RULES`, so adding a rule file needs no code change.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=rules");

    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("rules");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("engine/rules exists")
        .map(|entry| entry.expect("readable rules directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();

    let mut out = String::from(
        "/// Rule files shipped in the binary: (file name, contents).\npub(crate) const EMBEDDED_RULES: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 rule file name");
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded_rules.rs");
    fs::write(target, out).expect("write embedded_rules.rs");
}
