//! The Python venv with the `openai` package and torch + transformers, made by scripts/test.sh.

use std::path::PathBuf;

/// `FLINT_PYTHON`, else `$FLINT_CACHE/venv/bin/python`. Absent is a failure that says how to
/// make it, unless `FLINT_SKIP_PYTHON=1` (then `None`).
pub fn python() -> Option<PathBuf> {
    let path =
        std::env::var_os("FLINT_PYTHON").map_or_else(|| flint::cache_dir().join("venv/bin/python"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("FLINT_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("FLINT_SKIP_PYTHON=1: skipping the Python check ({} is absent)", path.display());
        return None;
    }
    panic!("{} is absent: run scripts/test.sh (it makes the venv), or set FLINT_SKIP_PYTHON=1", path.display());
}
