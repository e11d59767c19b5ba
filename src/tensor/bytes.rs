//! Where a weight file's bytes live: memory-mapped natively, owned in the browser.

use crate::{Error, Result};
use std::ops::Deref;
use std::path::Path;

/// Immutable bytes of a whole weight file.
pub enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Maps the file read-only (natively) or reads it whole (wasm32).
    pub fn open(path: &Path) -> Result<Bytes> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only; flint never writes a model file while it is loaded.
            // Truncation by another process under our feet is outside what mmap can guard.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Ok(Bytes::Mapped(map))
        }
        #[cfg(target_arch = "wasm32")]
        {
            std::fs::read(path).map(Bytes::Owned).map_err(|e| Error::io(path, e))
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes::Owned(v)
    }
}
