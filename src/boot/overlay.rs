//! The pxe-init overlay: the repository's `overlay/` tree, embedded in the
//! binary, packed into a reproducible gzip'd newc CPIO that iPXE loads as a
//! second initrd on top of the stock Proxmox installer initrd.
//!
//! Same binary, same bytes, every time: fixed order, mtime 0, owner 0:0,
//! fixed inode numbers, a gzip header without time stamp or file name. The
//! Nix derivation calls `provisioning overlay build`, so the Nix build and the
//! tests produce byte-identical archives. This module never reads the
//! `overlay/` directory at run time and never rewrites what it embeds.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

/// One entry of the embedded overlay tree.
#[derive(Debug, Clone, Copy)]
pub struct OverlayEntry {
    /// Path inside the archive, relative, `/`-separated, no leading `./`.
    pub path: &'static str,
    /// Permission bits (the file type is added when packing).
    pub mode: u32,
    /// `None` for a directory.
    pub contents: Option<&'static [u8]>,
}

/// The overlay tree, in archive order (parents before children). A test
/// checks that it lists exactly the files under `overlay/`.
pub const ENTRIES: &[OverlayEntry] = &[OverlayEntry {
    path: "pxe-init",
    mode: 0o755,
    contents: Some(include_bytes!("../../overlay/pxe-init")),
}];

/// The text of the embedded `/pxe-init`.
pub fn pxe_init() -> &'static [u8] {
    include_bytes!("../../overlay/pxe-init")
}

const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
/// gzip's "OS" header byte for Unix, set explicitly so the bytes do not
/// depend on the compressor's default.
const GZIP_OS_UNIX: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot write the overlay to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn write_cpio<W: Write>(mut w: W) -> io::Result<W> {
    for (index, entry) in ENTRIES.iter().enumerate() {
        let (kind, data, nlink): (u32, &[u8], u32) = match entry.contents {
            Some(data) => (S_IFREG, data, 1),
            None => (S_IFDIR, &[], 2),
        };
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{} is larger than 4 GiB", entry.path)))?;
        let ino = u32::try_from(index + 1).map_err(|_| io::Error::other("too many entries"))?;
        let mut writer = cpio::newc::Builder::new(entry.path)
            .ino(ino)
            .mode(kind | (entry.mode & 0o7777))
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(0)
            .write(w, size);
        writer.write_all(data)?;
        w = writer.finish()?;
    }
    cpio::newc::trailer(w)
}

fn write_overlay<W: Write>(w: W) -> io::Result<W> {
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNIX)
        .write(w, Compression::best());
    write_cpio(gz)?.finish()
}

/// The overlay as a gzip'd newc CPIO archive.
pub fn build_overlay() -> Vec<u8> {
    // Writing into a Vec cannot fail, and the entries are compile-time
    // constants far below the CPIO size limit, so this never errors.
    write_overlay(Vec::new()).unwrap_or_default()
}

/// Writes the overlay to `path` atomically (a temporary file next to it,
/// then a rename), so a reader never sees half an archive.
pub fn build_to(path: &Path) -> Result<(), OverlayError> {
    let err = |source| OverlayError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = build_overlay();
    let file_name = path
        .file_name()
        .ok_or_else(|| err(io::Error::other("not a file path")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_through_the_cpio_reader() {
        let gz = build_overlay();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut rest = &raw[..];
        let mut names = Vec::new();
        loop {
            let mut reader = cpio::newc::Reader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry();
            names.push((e.name().to_owned(), e.mode(), e.uid(), e.gid(), e.mtime()));
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            assert_eq!(data, pxe_init());
            rest = reader.finish().unwrap();
        }
        assert_eq!(names, vec![("pxe-init".to_owned(), 0o100755, 0, 0, 0)]);
    }
}
