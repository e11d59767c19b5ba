//! WGSL includes. A kernel's source may hold lines `#include "name.wgsl"`; [`expand`] replaces
//! each with that file of `shaders/` (expanded in turn, each file once) before the source is
//! compiled, so that kernels which differ only in how they read their weights share the rest
//! (the matmul kernels: `matmul_common.wgsl`, `matmul_rows.wgsl`; the readers of the Bits
//! format: `bits_format.wgsl`). An included file holds
//! shared declarations; its header says what its includer must declare.

use crate::{Error, Result};

/// The files `#include` can name.
const INCLUDES: &[(&str, &str)] = &[
    ("matmul_common.wgsl", include_str!("../../shaders/matmul_common.wgsl")),
    ("matmul_rows.wgsl", include_str!("../../shaders/matmul_rows.wgsl")),
    ("matmul_subgroup.wgsl", include_str!("../../shaders/matmul_subgroup.wgsl")),
    ("bits_format.wgsl", include_str!("../../shaders/bits_format.wgsl")),
    ("sincos.wgsl", include_str!("../../shaders/sincos.wgsl")),
];

/// `source` with its `#include` lines replaced by the files they name; a file already included
/// is not included again. An unknown name is an error.
pub fn expand(source: &str) -> Result<String> {
    let mut out = String::with_capacity(source.len());
    let mut seen = Vec::new();
    append(source, &mut out, &mut seen)?;
    Ok(out)
}

fn append<'a>(source: &str, out: &mut String, seen: &mut Vec<&'a str>) -> Result<()> {
    for line in source.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#include") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let name = rest.trim().trim_matches('"');
        let &(name, text): &(&'a str, &'a str) = INCLUDES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| Error::Gpu(format!("a shader includes {name:?}, which is not in gpu::shaders")))?;
        if !seen.contains(&name) {
            seen.push(name);
            append(text, out, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_each_file_once_and_rejects_unknown_names() {
        let twice = "#include \"matmul_rows.wgsl\"\n#include \"matmul_common.wgsl\"\nfn f() {}\n";
        let expanded = expand(twice).unwrap();
        // matmul_rows includes matmul_common itself: one copy in all.
        assert_eq!(expanded.matches("struct Params {").count(), 1);
        assert!(!expanded.lines().any(|l| l.trim_start().starts_with("#include")));
        assert!(expanded.ends_with("fn f() {}\n"));
        let err = expand("#include \"nope.wgsl\"\n").unwrap_err().to_string();
        assert!(err.contains("nope.wgsl"), "{err}");
    }
}
