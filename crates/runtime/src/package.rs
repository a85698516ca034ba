//! Code packages of the process runtime: zip files, checked in full and unpacked once per
//! code hash into a read-only task root.
//!
//! Refused, with a message naming the entry: paths that are absolute or climb out of the root
//! (zip-slip), symbolic links whose target leaves the root, more entries or more unpacked bytes
//! than the limits (the byte count is enforced while reading, so a zip that understates its
//! sizes is caught too), and — for custom runtimes — a package without an executable
//! `bootstrap` at its root. Unpacking goes to a temporary directory that is renamed into place,
//! so a crash leaves either the whole task root or none.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Unpacked size limit (Lambda's: 250 MB).
pub const MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Entries a package may hold.
pub const MAX_ENTRIES: usize = 20_000;

/// Limits applied to one package.
#[derive(Debug, Clone, Copy)]
pub struct PackageLimits {
    pub max_unpacked_bytes: u64,
    pub max_entries: usize,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits { max_unpacked_bytes: MAX_UNPACKED_BYTES, max_entries: MAX_ENTRIES }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("the code is not a valid zip file: {0}")]
    NotAZip(String),
    #[error("zip entry {0:?} has an unsafe path (absolute, or outside the package)")]
    UnsafePath(String),
    #[error("zip entry {0:?} is a link that points outside the package")]
    UnsafeLink(String),
    #[error("the package has more than {0} entries")]
    TooManyEntries(usize),
    #[error("the package unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("a custom runtime package needs an executable file named `bootstrap` at its root")]
    MissingBootstrap,
    #[error("cannot unpack the package: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> PackageError {
    PackageError::Io(e.to_string())
}

/// Whether `target`, a link stored at `link` (both relative to the root), stays inside it.
fn link_stays_inside(link: &Path, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.parent().map_or(0, |p| p.components().count() as i64);
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// One checked entry: where it goes and what it is.
enum Entry {
    Dir(PathBuf),
    File { path: PathBuf, mode: u32, index: usize },
    Link { path: PathBuf, target: String },
}

/// Checks every entry of a package without writing anything.
fn plan(bytes: &[u8], limits: PackageLimits, need_bootstrap: bool) -> Result<Vec<Entry>, PackageError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| PackageError::NotAZip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(PackageError::TooManyEntries(limits.max_entries));
    }
    let mut entries = Vec::with_capacity(zip.len());
    let mut declared: u64 = 0;
    let mut has_bootstrap = false;
    for index in 0..zip.len() {
        let mut file = zip.by_index(index).map_err(|e| PackageError::NotAZip(e.to_string()))?;
        let raw_name = file.name().map(|n| n.to_string()).unwrap_or_default();
        let path = file.enclosed_name().ok_or_else(|| PackageError::UnsafePath(raw_name.clone()))?;
        declared = declared.saturating_add(file.size());
        if declared > limits.max_unpacked_bytes {
            return Err(PackageError::TooLarge(limits.max_unpacked_bytes));
        }
        if file.is_dir() {
            entries.push(Entry::Dir(path));
        } else if file.is_symlink() {
            let mut target = String::new();
            file.by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| PackageError::NotAZip(e.to_string()))?;
            if !link_stays_inside(&path, &target) {
                return Err(PackageError::UnsafeLink(raw_name));
            }
            entries.push(Entry::Link { path, target });
        } else {
            let mode = file.unix_mode().unwrap_or(0o644) & 0o777;
            if path == Path::new("bootstrap") && mode & 0o111 != 0 {
                has_bootstrap = true;
            }
            entries.push(Entry::File { path, mode, index });
        }
    }
    if need_bootstrap && !has_bootstrap {
        return Err(PackageError::MissingBootstrap);
    }
    Ok(entries)
}

/// Validates a package (nothing written).
pub fn check(bytes: &[u8], limits: PackageLimits, need_bootstrap: bool) -> Result<(), PackageError> {
    plan(bytes, limits, need_bootstrap).map(|_| ())
}

/// Unpacks a package into `root/<sha256>` unless it is already there; returns that task root.
/// Files keep their executable bits and become read-only.
pub fn unpack(
    bytes: &[u8],
    sha256: &str,
    root: &Path,
    limits: PackageLimits,
    need_bootstrap: bool,
) -> Result<PathBuf, PackageError> {
    let dest = root.join(sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    let entries = plan(bytes, limits, need_bootstrap)?;
    std::fs::create_dir_all(root).map_err(io)?;
    let tmp = root.join(format!(".tmp-{sha256}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io)?;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| PackageError::NotAZip(e.to_string()))?;
    let mut written: u64 = 0;
    let mut files = Vec::new();
    for entry in &entries {
        match entry {
            Entry::Dir(p) => std::fs::create_dir_all(tmp.join(p)).map_err(io)?,
            Entry::Link { path, target } => {
                let at = tmp.join(path);
                if let Some(parent) = at.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::os::unix::fs::symlink(target, &at).map_err(io)?;
            }
            Entry::File { path, mode, index } => {
                let at = tmp.join(path);
                if let Some(parent) = at.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut file = zip.by_index(*index).map_err(|e| PackageError::NotAZip(e.to_string()))?;
                let mut out = std::fs::File::create(&at).map_err(io)?;
                // Count what is really inflated: a zip may understate its sizes.
                let budget = limits.max_unpacked_bytes - written;
                let n = std::io::copy(&mut file.by_ref().take(budget + 1), &mut out).map_err(io)?;
                if n > budget {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(PackageError::TooLarge(limits.max_unpacked_bytes));
                }
                written += n;
                out.flush().map_err(io)?;
                files.push((at, *mode));
            }
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in files {
        let read_only = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(read_only)).map_err(io)?;
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        // Another process unpacked the same hash first: theirs is identical.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode)).unwrap();
            w.write_all(data).unwrap();
        }
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn unpacks_once_read_only_with_exec_bits() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = zip_of(
            &[("bootstrap", b"#!/bin/sh\n", 0o755), ("lib/data.txt", b"hello", 0o644)],
            &[("lib/alias", "data.txt")],
        );
        let root = unpack(&pkg, "abc", dir.path(), PackageLimits::default(), true).unwrap();
        assert_eq!(std::fs::read(root.join("lib/data.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read(root.join("lib/alias")).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(root.join("bootstrap")).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(std::fs::metadata(root.join("lib/data.txt")).unwrap().permissions().mode() & 0o777, 0o444);
        // Already unpacked: the same root, untouched.
        assert_eq!(unpack(&pkg, "abc", dir.path(), PackageLimits::default(), true).unwrap(), root);
    }

    #[test]
    fn hostile_packages_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let limits = PackageLimits::default();
        let cases = [
            (zip_of(&[("../evil", b"x", 0o644)], &[]), PackageError::UnsafePath("../evil".into())),
            (zip_of(&[("a/../../evil", b"x", 0o644)], &[]), PackageError::UnsafePath("a/../../evil".into())),
            (zip_of(&[], &[("passwd", "/etc/passwd")]), PackageError::UnsafeLink("passwd".into())),
            (zip_of(&[], &[("a/up", "../../x")]), PackageError::UnsafeLink("a/up".into())),
        ];
        for (i, (pkg, want)) in cases.into_iter().enumerate() {
            let sha = format!("bad{i}");
            assert_eq!(unpack(&pkg, &sha, dir.path(), limits, false), Err(want));
            assert!(!dir.path().join(&sha).exists());
        }
        assert!(matches!(check(b"not a zip", limits, false), Err(PackageError::NotAZip(_))));
    }

    #[test]
    fn limits_and_bootstrap_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let small = PackageLimits { max_unpacked_bytes: 10, max_entries: 2 };
        let big = zip_of(&[("bootstrap", &[b'x'; 11], 0o755)], &[]);
        assert_eq!(check(&big, small, true), Err(PackageError::TooLarge(10)));
        let many = zip_of(&[("a", b"", 0o644), ("b", b"", 0o644), ("c", b"", 0o644)], &[]);
        assert_eq!(check(&many, small, false), Err(PackageError::TooManyEntries(2)));
        let not_exec = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o644)], &[]);
        assert_eq!(check(&not_exec, PackageLimits::default(), true), Err(PackageError::MissingBootstrap));
        let nested = zip_of(&[("app/bootstrap", b"#!/bin/sh\n", 0o755)], &[]);
        assert_eq!(
            unpack(&nested, "n", dir.path(), PackageLimits::default(), true),
            Err(PackageError::MissingBootstrap)
        );
        assert!(
            check(&nested, PackageLimits::default(), false).is_ok(),
            "managed runtimes need no bootstrap"
        );
    }
}
