//! Code packages of the process runtime: zip files, checked in full and unpacked once per
//! code hash into a read-only task root.
//!
//! An archive is hostile until proven otherwise: it is unpacked as root, on servers at upload
//! time and on workers when they pull code. Two independent layers keep every write inside the
//! task root, so a mistake in one is caught by the other:
//!
//! 1. **The plan** ([`check`]) judges the package as a whole before anything is written. Refused,
//!    with a message naming the entry: absolute names and names with `..` (zip-slip), entry types
//!    other than regular file, directory and symbolic link (fifos, devices, sockets, unknown
//!    types; a zip has no hard-link entry and unpacking never calls `link`), duplicate names,
//!    names that collide once lower-cased and NFC-normalised (`App.py` and `app.py`), entries
//!    under a link or a file of the package, links whose target, resolved from the link's place
//!    through the package's other links as the kernel would, leaves the root, more entries or
//!    more unpacked bytes than the limits, and — for custom runtimes — a package without an
//!    executable `bootstrap` at its root.
//! 2. **The writer** resolves nothing by path: it opens the temporary root once and walks every
//!    name component by component with `openat(O_DIRECTORY | O_NOFOLLOW)` and `mkdirat`, creates
//!    files with `O_CREAT | O_EXCL | O_NOFOLLOW`, and creates symbolic links last, so the kernel
//!    refuses to follow any link — the package's or anyone's — while something is written.
//!
//! Files keep only their executable bit (0o555 or 0o444; setuid, setgid and sticky are dropped).
//! Unpacking goes to a temporary directory that is removed on every error and renamed into place
//! on success, so a refused package leaves nothing and a crash never leaves a partial task root.
//!
//! Every system call goes through rustix's safe wrappers: this module has no `unsafe`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use unicode_normalization::UnicodeNormalization;

/// Unpacked size limit (Lambda's: 250 MB).
pub const MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Entries a package may hold.
pub const MAX_ENTRIES: usize = 20_000;
/// Links followed while resolving one link's target: the kernel's own limit (`MAXSYMLINKS`), so a
/// chain the plan accepts is one the kernel can resolve.
const MAX_LINK_HOPS: usize = 40;
/// Longest link target: `PATH_MAX` less its terminating NUL.
const MAX_LINK_TARGET: u64 = 4095;
/// Path components followed while checking all of a package's links together: thousands of
/// times what real packages need (a `node_modules/.bin` link is a few components), and a
/// fraction of a second of CPU; what 20,000 links of 4 KB targets, each a chain of 40 such
/// links, would take is minutes.
const MAX_LINK_STEPS: usize = 2_000_000;

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

/// Why a package is refused. The message names the entry; it reaches the deployer as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("the code is not a valid zip file: {0}")]
    NotAZip(String),
    #[error("zip entry {0:?} has an unsafe path (absolute, or outside the package)")]
    UnsafePath(String),
    #[error("zip entry {0:.200}... has a path deeper than {MAX_PATH_DEPTH} directories or longer than {MAX_NAME_BYTES} bytes")]
    PathTooLong(String),
    #[error("zip entry {0:?} is a link that points outside the package")]
    UnsafeLink(String),
    #[error("zip entry {0:?} is a link with an empty, overlong or NUL-containing target")]
    BadLinkTarget(String),
    #[error("zip entry {0:?} is a link in a loop or a chain of more than {MAX_LINK_HOPS} links")]
    LinkLoop(String),
    #[error("the package's links are too long to follow: checking them took more than {MAX_LINK_STEPS} path components (use shorter link targets or fewer chained links)")]
    LinksTooLong,
    #[error("zip entry {0:?} is a {1}: only regular files, directories and symbolic links are allowed")]
    UnsupportedType(String, &'static str),
    #[error("zip entry {0:?} appears more than once in the package")]
    DuplicateEntry(String),
    #[error("zip entries {0:?} and {1:?} differ only by case or Unicode normalisation")]
    NameCollision(String, String),
    #[error("zip entry {0:?} lies under {1:?}, which is a file or link of the package, not a directory")]
    NotUnderDirectory(String, String),
    #[error("the package has more than {0} entries")]
    TooManyEntries(usize),
    #[error("the package unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("a custom runtime package needs an executable file named `bootstrap` at its root")]
    MissingBootstrap,
    #[error("cannot unpack the package: {0}")]
    Io(String),
    /// The disk under the task roots is full (nothing of the package is left behind).
    #[error("no space left on the disk to unpack the package: {0}")]
    NoSpace(String),
}

fn io(e: impl Into<std::io::Error>) -> PackageError {
    let e = e.into();
    if crate::is_out_of_space(&e) {
        PackageError::NoSpace(e.to_string())
    } else {
        PackageError::Io(e.to_string())
    }
}

/// An I/O error writing one entry.
fn entry_io(name: &str, e: std::io::Error) -> PackageError {
    let what = format!("zip entry {name:?}: {e}");
    if crate::is_out_of_space(&e) {
        PackageError::NoSpace(what)
    } else {
        PackageError::Io(what)
    }
}

fn not_a_zip(e: impl std::fmt::Display) -> PackageError {
    PackageError::NotAZip(e.to_string())
}

/// One entry of the plan: its name as the archive spells it (for messages), where it goes
/// (normal components only) and what it is.
struct Entry {
    name: String,
    path: Vec<String>,
    kind: Kind,
}

enum Kind {
    Dir,
    File { executable: bool, index: usize },
    Link { target: String },
}

// The file-type bits of a zip entry's unix mode (`st_mode`).
const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;

/// An entry's kind from its unix mode (or, for archives without one, from its name).
fn entry_type(name: &str, mode: Option<u32>) -> Result<EntryType, PackageError> {
    let refuse = |what| Err(PackageError::UnsupportedType(name.to_string(), what));
    match mode.map_or(0, |m| m & S_IFMT) {
        S_IFLNK if name.ends_with('/') => Err(PackageError::UnsafePath(name.to_string())),
        S_IFLNK => Ok(EntryType::Link),
        S_IFDIR => Ok(EntryType::Dir),
        // Archivers that record no type (and DOS ones, which say "file" for everything not
        // flagged as a directory) mark directories by a trailing slash only.
        0 | S_IFREG if name.ends_with('/') => Ok(EntryType::Dir),
        0 | S_IFREG => Ok(EntryType::File),
        S_IFIFO => refuse("fifo"),
        S_IFCHR => refuse("character device"),
        S_IFBLK => refuse("block device"),
        S_IFSOCK => refuse("socket"),
        _ => refuse("entry of unknown type"),
    }
}

enum EntryType {
    Dir,
    File,
    Link,
}

/// Directories an entry's path may go down (Linux's own limit on a path is 4,096 bytes).
pub const MAX_PATH_DEPTH: usize = 64;
/// Bytes in an entry's name.
pub const MAX_NAME_BYTES: usize = 1024;

/// The components of an entry's name: `.` and empty ones dropped; absolute names, `..` and NUL
/// refused outright, so nothing is ever resolved upwards.
fn components(name: &str) -> Result<Vec<String>, PackageError> {
    let unsafe_path = || PackageError::UnsafePath(name.to_string());
    if name.starts_with('/') || name.contains('\0') {
        return Err(unsafe_path());
    }
    // Bounded before anything else looks at it: a deep tree costs time in every check and
    // stack in every recursive removal.
    if name.len() > MAX_NAME_BYTES || name.split('/').count() > MAX_PATH_DEPTH {
        return Err(PackageError::PathTooLong(name.chars().take(200).collect()));
    }
    let mut path = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            c => path.push(c.to_string()),
        }
    }
    if path.is_empty() {
        return Err(unsafe_path());
    }
    Ok(path)
}

/// What two names that a case-insensitive or normalising file system would confuse share.
fn fold(name: &str) -> String {
    name.to_lowercase().nfc().collect()
}

/// Reads and checks every entry on its own: names, types, duplicates, collisions, limits.
fn read_entries(bytes: &[u8], limits: PackageLimits) -> Result<Vec<Entry>, PackageError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(not_a_zip)?;
    if zip.len() > limits.max_entries {
        return Err(PackageError::TooManyEntries(limits.max_entries));
    }
    if zip.has_duplicate_names() {
        // The reader keeps one entry per name: which one the archive meant is ambiguous.
        let name = first_duplicate(bytes, zip.central_directory_start());
        return Err(PackageError::DuplicateEntry(name.unwrap_or_default()));
    }
    let mut entries = Vec::with_capacity(zip.len());
    let mut declared: u64 = 0;
    let mut seen: HashSet<Vec<String>> = HashSet::with_capacity(zip.len());
    // (parent's id, folded name) of every path and parent directory -> its id and the first
    // spelling seen: memory in proportion to the names, however deep they go.
    let mut spellings: HashMap<(usize, String), (usize, String)> = HashMap::with_capacity(zip.len());
    for index in 0..zip.len() {
        let mut file = zip.by_index(index).map_err(not_a_zip)?;
        let name = file.name().map_err(not_a_zip)?.into_owned();
        let path = components(&name)?;
        let kind = entry_type(&name, file.unix_mode())?;
        if !seen.insert(path.clone()) {
            return Err(PackageError::DuplicateEntry(name));
        }
        let mut parent = 0;
        for (depth, part) in path.iter().enumerate() {
            let next = spellings.len() + 1;
            let (id, first) = spellings.entry((parent, fold(part))).or_insert_with(|| (next, part.clone()));
            if first != part {
                let above = path[..depth].iter().map(|p| format!("{p}/")).collect::<String>();
                return Err(PackageError::NameCollision(format!("{above}{first}"), path[..=depth].join("/")));
            }
            parent = *id;
        }
        declared = declared.saturating_add(file.size());
        if declared > limits.max_unpacked_bytes {
            return Err(PackageError::TooLarge(limits.max_unpacked_bytes));
        }
        let kind = match kind {
            EntryType::Dir => Kind::Dir,
            EntryType::File => {
                let mode = file.unix_mode().unwrap_or(0o644);
                Kind::File { executable: mode & 0o111 != 0, index }
            }
            EntryType::Link => {
                let mut target = String::new();
                file.by_ref().take(MAX_LINK_TARGET + 1).read_to_string(&mut target).map_err(not_a_zip)?;
                if target.is_empty() || target.len() as u64 > MAX_LINK_TARGET || target.contains('\0') {
                    return Err(PackageError::BadLinkTarget(name));
                }
                Kind::Link { target }
            }
        };
        entries.push(Entry { name, path, kind });
    }
    Ok(entries)
}

/// The first name the central directory holds twice, for the error message: the zip reader
/// keeps only one entry per name, so the names are read from the central directory here.
fn first_duplicate(bytes: &[u8], central_directory: u64) -> Option<String> {
    const HEADER: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
    let mut seen = HashSet::new();
    let mut at = usize::try_from(central_directory).ok()?;
    while bytes.get(at..at.checked_add(4)?)? == HEADER {
        let field = |offset: usize| {
            let b = bytes.get(at + offset..at + offset + 2)?;
            Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
        };
        let (name_len, extra_len, comment_len) = (field(28)?, field(30)?, field(32)?);
        let name = bytes.get(at + 46..at + 46 + name_len)?;
        if !seen.insert(name) {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    None
}

/// Where a link's target lands, resolved as the kernel would inside the unpacked package.
enum Resolved {
    Inside,
    Outside,
    Loop,
    TooLong,
}

/// What resolving the package's links shares: the links by path, how deep the deepest is (a
/// path deeper than that is no link: not looked up, so one step costs no more than that
/// depth), and the steps left of [`MAX_LINK_STEPS`].
struct Links<'a> {
    by_path: HashMap<Vec<String>, &'a str>,
    deepest: usize,
    steps_left: usize,
}

/// Resolves `target` from the directory `at` (components below the root), expanding the
/// package's links as they are met. `..` at the root, or an absolute target, is `Outside`.
fn resolve(links: &mut Links<'_>, at: &mut Vec<String>, target: &str, hops: &mut usize) -> Resolved {
    if target.starts_with('/') {
        return Resolved::Outside;
    }
    for c in target.split('/') {
        links.steps_left = match links.steps_left.checked_sub(1) {
            Some(left) => left,
            None => return Resolved::TooLong,
        };
        match c {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return Resolved::Outside;
                }
            }
            c => {
                at.push(c.to_string());
                let next = match at.len() <= links.deepest {
                    true => links.by_path.get(at.as_slice()).copied(),
                    false => None,
                };
                if let Some(next) = next {
                    *hops += 1;
                    if *hops > MAX_LINK_HOPS {
                        return Resolved::Loop;
                    }
                    at.pop();
                    match resolve(links, at, next, hops) {
                        Resolved::Inside => {}
                        other => return other,
                    }
                }
            }
        }
    }
    Resolved::Inside
}

/// Checks the package as a whole: nothing lies under a file or link of the package, and every
/// link, followed through the others, stays inside the root.
fn check_tree(entries: &[Entry]) -> Result<(), PackageError> {
    let mut kinds: HashMap<&[String], &Entry> = HashMap::with_capacity(entries.len());
    let mut links = Links { by_path: HashMap::new(), deepest: 0, steps_left: MAX_LINK_STEPS };
    for entry in entries {
        kinds.insert(&entry.path, entry);
        if let Kind::Link { target } = &entry.kind {
            links.by_path.insert(entry.path.clone(), target);
            links.deepest = links.deepest.max(entry.path.len());
        }
    }
    for entry in entries {
        for depth in 1..entry.path.len() {
            if let Some(parent) = kinds.get(&entry.path[..depth]) {
                if !matches!(parent.kind, Kind::Dir) {
                    return Err(PackageError::NotUnderDirectory(entry.name.clone(), parent.name.clone()));
                }
            }
        }
        if let Kind::Link { target } = &entry.kind {
            let mut at = entry.path[..entry.path.len() - 1].to_vec();
            match resolve(&mut links, &mut at, target, &mut 0) {
                Resolved::Inside => {}
                Resolved::Outside => return Err(PackageError::UnsafeLink(entry.name.clone())),
                Resolved::Loop => return Err(PackageError::LinkLoop(entry.name.clone())),
                Resolved::TooLong => return Err(PackageError::LinksTooLong),
            }
        }
    }
    Ok(())
}

/// Checks every entry of a package without writing anything.
fn plan(bytes: &[u8], limits: PackageLimits, need_bootstrap: bool) -> Result<Vec<Entry>, PackageError> {
    let entries = read_entries(bytes, limits)?;
    check_tree(&entries)?;
    let has_bootstrap = entries
        .iter()
        .any(|e| e.path == ["bootstrap"] && matches!(e.kind, Kind::File { executable: true, .. }));
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
    bytes: &[u8], sha256: &str, root: &Path, limits: PackageLimits, need_bootstrap: bool,
) -> Result<PathBuf, PackageError> {
    let dest = root.join(sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    let entries = plan(bytes, limits, need_bootstrap)?;
    write_entries(bytes, &entries, sha256, root, limits)
}

/// Tells apart temporary roots of one process (two tasks may unpack the same hash at once).
static NEXT_TEMP_ROOT: AtomicU64 = AtomicU64::new(0);

/// A temporary task root, removed when dropped unless it was renamed into place.
struct TempRoot {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if !self.keep {
            // remove_dir_all does not follow the links it meets (it unlinks them).
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes planned entries into a fresh temporary directory under `root`, then renames it to
/// `root/<sha256>`. Every component is opened relative to its parent's descriptor with
/// `O_NOFOLLOW`, and links are created last, so nothing is written through a link.
fn write_entries(
    bytes: &[u8], entries: &[Entry], sha256: &str, root: &Path, limits: PackageLimits,
) -> Result<PathBuf, PackageError> {
    if sha256.is_empty() || sha256.contains(['/', '\0']) || sha256 == "." || sha256 == ".." {
        return Err(PackageError::Io(format!("invalid code hash {sha256:?}")));
    }
    std::fs::create_dir_all(root).map_err(io)?;
    // The tasks directory itself is gust's, so its own path may be followed.
    let root_dir = open_dir(rustix::fs::CWD, root, OFlags::empty()).map_err(io)?;
    let n = NEXT_TEMP_ROOT.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(".tmp-{sha256}-{}-{n}", std::process::id());
    rustix::fs::mkdirat(&root_dir, tmp_name.as_str(), DIR_MODE).map_err(io)?;
    let mut guard = TempRoot { path: root.join(&tmp_name), keep: false };
    let tmp = open_dir(&root_dir, tmp_name.as_str(), OFlags::NOFOLLOW).map_err(io)?;

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(not_a_zip)?;
    let mut written: u64 = 0;
    // Directories and files first: no link of the package exists yet.
    for entry in entries {
        let at = |e: std::io::Error| entry_io(&entry.name, e);
        match &entry.kind {
            Kind::Dir => {
                make_dirs(&tmp, &entry.path).map_err(at)?;
            }
            Kind::File { executable, index } => {
                let (file_name, parents) = entry.path.split_last().expect("paths are never empty");
                let parent = make_dirs(&tmp, parents).map_err(at)?;
                let mut out = create_file(&parent, file_name).map_err(at)?;
                let mut file = zip.by_index(*index).map_err(not_a_zip)?;
                // Count what is really inflated: a zip may understate its sizes.
                let budget = limits.max_unpacked_bytes - written;
                let n = std::io::copy(&mut file.by_ref().take(budget + 1), &mut out).map_err(at)?;
                if n > budget {
                    return Err(PackageError::TooLarge(limits.max_unpacked_bytes));
                }
                written += n;
                out.flush().map_err(at)?;
                // fchmod on the open descriptor: no path is looked up again.
                let read_only = if *executable { 0o555 } else { 0o444 };
                out.set_permissions(std::fs::Permissions::from_mode(read_only)).map_err(at)?;
            }
            Kind::Link { .. } => {}
        }
    }
    // Links last. symlinkat never follows its last component, and `make_dirs` refuses to walk
    // through a link made earlier in this loop.
    for entry in entries {
        if let Kind::Link { target } = &entry.kind {
            let at = |e: std::io::Error| entry_io(&entry.name, e);
            let (link_name, parents) = entry.path.split_last().expect("paths are never empty");
            let parent = make_dirs(&tmp, parents).map_err(at)?;
            rustix::fs::symlinkat(target.as_str(), &parent, link_name.as_str()).map_err(|e| at(e.into()))?;
        }
    }
    drop(tmp);

    let dest = root.join(sha256);
    match rustix::fs::renameat(&root_dir, tmp_name.as_str(), &root_dir, sha256) {
        Ok(()) => {
            guard.keep = true;
            Ok(dest)
        }
        // Another process unpacked the same hash first: theirs is identical (the guard removes
        // ours).
        Err(_) if dest.is_dir() => Ok(dest),
        Err(e) => Err(io(e)),
    }
}

/// Mode of the directories of a task root (less the umask).
const DIR_MODE: Mode = Mode::from_raw_mode(0o755);

/// Opens the directory `name` relative to `dir`, refusing anything that is not a directory.
fn open_dir(dir: impl AsFd, name: impl rustix::path::Arg, extra: OFlags) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Creates (if needed) and opens `dirs` below `tmp`, one component at a time, never following
/// a link: a link where a directory is expected fails with ELOOP or ENOTDIR.
fn make_dirs(tmp: &OwnedFd, dirs: &[String]) -> std::io::Result<OwnedFd> {
    let mut dir = tmp.try_clone()?;
    for name in dirs {
        match rustix::fs::mkdirat(&dir, name.as_str(), DIR_MODE) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open_dir(&dir, name.as_str(), OFlags::NOFOLLOW)?;
    }
    Ok(dir)
}

/// Creates a new regular file `name` in `dir`; fails if anything (a link included) is there.
fn create_file(dir: &OwnedFd, name: &str) -> std::io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use zip::write::SimpleFileOptions;

    /// One entry of a test archive.
    enum E<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Link(&'a str, &'a str),
        /// A file entry whose unix mode (type bits included) is given as is.
        Mode(&'a str, u32),
    }

    fn zip_entries(entries: &[E]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for entry in entries {
            match entry {
                E::File(name, data, mode) => {
                    w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode)).unwrap();
                    w.write_all(data).unwrap();
                }
                E::Dir(name) => w.add_directory(*name, SimpleFileOptions::default()).unwrap(),
                E::Link(name, target) => w.add_symlink(*name, *target, SimpleFileOptions::default()).unwrap(),
                E::Mode(name, mode) => {
                    w.start_file(*name, SimpleFileOptions::default().external_attributes(mode << 16))
                        .unwrap();
                    w.write_all(b"x").unwrap();
                }
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn zip_of(files: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut entries: Vec<E> = files.iter().map(|(n, d, m)| E::File(n, d, *m)).collect();
        entries.extend(links.iter().map(|(n, t)| E::Link(n, t)));
        zip_entries(&entries)
    }

    /// The zip writer refuses duplicate names, so an attacker's archive is made by renaming an
    /// entry in place (a name is not covered by any checksum).
    fn rename_entry(mut zip: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let mut at = 0;
        while let Some(i) = zip[at..].windows(from.len()).position(|w| w == from) {
            zip[at + i..at + i + to.len()].copy_from_slice(to);
            at += i + to.len();
        }
        zip
    }

    /// `sandbox/data/tasks` is the root; everything else in `sandbox` is what an escape would hit.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path();
            std::fs::create_dir_all(p.join("data/tasks")).unwrap();
            // Sentinels named like the entries of the attacks, at every level an escape reaches.
            for level in ["", "data/"] {
                std::fs::create_dir_all(p.join(format!("{level}sentinel/a"))).unwrap();
                std::fs::write(p.join(format!("{level}sentinel/keep")), b"keep").unwrap();
                std::fs::create_dir_all(p.join(format!("{level}a"))).unwrap();
                std::fs::write(p.join(format!("{level}b")), b"b").unwrap();
                std::fs::write(p.join(format!("{level}a/b")), b"a/b").unwrap();
            }
            Sandbox { dir }
        }

        fn tasks(&self) -> PathBuf {
            self.dir.path().join("data/tasks")
        }

        /// Everything under the sandbox except the contents of the tasks directory.
        fn outside(&self) -> BTreeMap<PathBuf, String> {
            use std::os::unix::fs::MetadataExt;
            let (mut seen, mut stack, tasks) =
                (BTreeMap::new(), vec![self.dir.path().to_path_buf()], self.tasks());
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    let meta = std::fs::symlink_metadata(&path).unwrap();
                    let what = if meta.is_symlink() {
                        format!("link to {:?}", std::fs::read_link(&path).unwrap())
                    } else if meta.is_dir() {
                        if path != tasks {
                            stack.push(path.clone());
                        }
                        format!("dir {:o}", meta.mode())
                    } else {
                        format!("file {:o} {:?}", meta.mode(), std::fs::read(&path).unwrap())
                    };
                    seen.insert(path, what);
                }
            }
            seen
        }

        /// Nothing outside the tasks directory changed, and it holds `task` only (or nothing).
        fn assert_untouched(&self, before: &BTreeMap<PathBuf, String>, task: Option<&str>) {
            assert_eq!(&self.outside(), before, "something outside the task root changed");
            let mut names: Vec<String> = std::fs::read_dir(self.tasks())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(
                names,
                task.into_iter().map(String::from).collect::<Vec<_>>(),
                "left in the tasks directory"
            );
        }
    }

    /// Asserts that `pkg` is refused with `want`, by `check` and by `unpack`, leaving nothing.
    fn assert_refused(pkg: &[u8], want: PackageError) {
        let sandbox = Sandbox::new();
        let before = sandbox.outside();
        assert_eq!(check(pkg, PackageLimits::default(), false), Err(want.clone()));
        assert_eq!(unpack(pkg, "task", &sandbox.tasks(), PackageLimits::default(), false), Err(want));
        sandbox.assert_untouched(&before, None);
    }

    /// The example of the report: each link looks inside on its own, the chain climbs out.
    fn symlink_chain() -> Vec<u8> {
        zip_entries(&[
            E::Link("a/up", ".."),
            E::Link("x1", "a/up/.."),
            E::Link("x2", "x1/.."),
            E::Link("x3", "x2/.."),
            E::File("x3/escaped", b"pwned", 0o644),
        ])
    }

    #[test]
    fn a_symlink_chain_out_of_the_root_is_refused() {
        assert_refused(&symlink_chain(), PackageError::UnsafeLink("x1".into()));
    }

    #[test]
    fn the_writer_alone_never_writes_through_a_link() {
        // Skip the plan's whole-package checks: the kernel-side walk must still hold.
        let sandbox = Sandbox::new();
        let before = sandbox.outside();
        let pkg = symlink_chain();
        let entries = read_entries(&pkg, PackageLimits::default()).unwrap();
        let got = write_entries(&pkg, &entries, "task", &sandbox.tasks(), PackageLimits::default());
        assert!(matches!(&got, Err(PackageError::Io(m)) if m.contains("\"x3\"")), "{got:?}");
        sandbox.assert_untouched(&before, None);
    }

    #[test]
    fn following_links_is_bounded_for_the_whole_package() {
        // Each target is 2,048 components deep and inside: alone, any of them is fine.
        let target = format!("{}y", "y/".repeat(2047));
        let names: Vec<String> = (0..1_200).map(|i| format!("l{i}")).collect();
        let few: Vec<E> = names[..100].iter().map(|n| E::Link(n, &target)).collect();
        assert!(check(&zip_entries(&few), PackageLimits::default(), false).is_ok());
        let many: Vec<E> = names.iter().map(|n| E::Link(n, &target)).collect();
        assert_refused(&zip_entries(&many), PackageError::LinksTooLong);
    }

    #[test]
    fn links_to_links_out_of_the_root_are_refused() {
        let pkg = zip_entries(&[
            E::Link("l1", "l2"),
            E::Link("l2", "sub/top/.."),
            E::Link("sub/top", ".."),
            E::File("l1/escaped", b"pwned", 0o644),
        ]);
        assert_refused(&pkg, PackageError::UnsafeLink("l1".into()));
        let looped = zip_entries(&[E::Link("a", "b"), E::Link("b", "a/c")]);
        assert_refused(&looped, PackageError::LinkLoop("a".into()));
    }

    #[test]
    fn nothing_is_written_under_a_link_whichever_comes_first() {
        // Even a link that stays inside: writing under it would go through it.
        let link_first =
            zip_entries(&[E::Dir("lib/"), E::Link("alias", "lib"), E::File("alias/x", b"x", 0o644)]);
        assert_refused(&link_first, PackageError::NotUnderDirectory("alias/x".into(), "alias".into()));
        let file_first = zip_entries(&[E::File("alias/x", b"x", 0o644), E::Link("alias", "..")]);
        assert_refused(&file_first, PackageError::NotUnderDirectory("alias/x".into(), "alias".into()));
        let under_file = zip_entries(&[E::File("f", b"f", 0o644), E::File("f/x", b"x", 0o644)]);
        assert_refused(&under_file, PackageError::NotUnderDirectory("f/x".into(), "f".into()));
    }

    #[test]
    fn duplicate_names_are_refused() {
        // A file, then a link of the same name.
        let pkg = zip_entries(&[E::File("same_1", b"data", 0o644), E::Link("same_2", "..")]);
        assert_refused(&rename_entry(pkg, "same_2", "same_1"), PackageError::DuplicateEntry("same_1".into()));
        let pkg = zip_entries(&[E::File("twin_1", b"one", 0o644), E::File("twin_2", b"two", 0o644)]);
        assert_refused(&rename_entry(pkg, "twin_2", "twin_1"), PackageError::DuplicateEntry("twin_1".into()));
        let spelled_twice = zip_entries(&[E::File("a", b"one", 0o644), E::File("./a", b"two", 0o644)]);
        assert_refused(&spelled_twice, PackageError::DuplicateEntry("./a".into()));
        let dir_twice = zip_entries(&[E::Dir("d/"), E::Dir("d//")]);
        assert_refused(&dir_twice, PackageError::DuplicateEntry("d//".into()));
    }

    #[test]
    fn names_equal_but_for_case_or_normalisation_are_refused() {
        let case = zip_entries(&[E::File("App.py", b"1", 0o644), E::File("app.py", b"2", 0o644)]);
        assert_refused(&case, PackageError::NameCollision("App.py".into(), "app.py".into()));
        let dirs = zip_entries(&[E::File("Lib/a", b"1", 0o644), E::File("lib/b", b"2", 0o644)]);
        assert_refused(&dirs, PackageError::NameCollision("Lib".into(), "lib".into()));
        let (nfc, nfd) = ("caf\u{e9}.py", "cafe\u{301}.py");
        let forms = zip_entries(&[E::File(nfc, b"1", 0o644), E::File(nfd, b"2", 0o644)]);
        assert_refused(&forms, PackageError::NameCollision(nfc.into(), nfd.into()));
    }

    #[test]
    fn absolute_and_climbing_names_and_targets_are_refused() {
        assert_refused(
            &zip_of(&[("/etc/evil", b"x", 0o644)], &[]),
            PackageError::UnsafePath("/etc/evil".into()),
        );
        assert_refused(&zip_of(&[("a/../b", b"x", 0o644)], &[]), PackageError::UnsafePath("a/../b".into()));
        assert_refused(&zip_of(&[], &[("etc", "/etc")]), PackageError::UnsafeLink("etc".into()));
        assert_refused(&zip_of(&[], &[("a/b/c", "../../..")]), PackageError::UnsafeLink("a/b/c".into()));
        assert_refused(&zip_of(&[], &[("empty", "")]), PackageError::BadLinkTarget("empty".into()));
    }

    #[test]
    fn devices_fifos_sockets_and_unknown_types_are_refused() {
        let cases = [
            (0o020_666, "character device"),
            (0o060_600, "block device"),
            (0o010_644, "fifo"),
            (0o140_755, "socket"),
            (0o170_644, "entry of unknown type"),
        ];
        for (mode, kind) in cases {
            let pkg = zip_entries(&[E::File("ok", b"ok", 0o644), E::Mode("dev/null", mode)]);
            assert_refused(&pkg, PackageError::UnsupportedType("dev/null".into(), kind));
        }
    }

    #[test]
    fn setuid_setgid_and_sticky_bits_are_dropped() {
        let sandbox = Sandbox::new();
        let pkg = zip_entries(&[
            E::Mode("suid", 0o104_755),
            E::Mode("sgid", 0o102_644),
            E::Mode("sticky", 0o101_777),
        ]);
        let root = unpack(&pkg, "task", &sandbox.tasks(), PackageLimits::default(), false).unwrap();
        let mode = |name: &str| std::fs::metadata(root.join(name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode("suid"), mode("sgid"), mode("sticky")), (0o555, 0o444, 0o555));
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_directory() {
        let sandbox = Sandbox::new();
        let before = sandbox.outside();
        let too_long = "n".repeat(300);
        let pkg = zip_entries(&[E::File("ok", b"ok", 0o644), E::File(&too_long, b"x", 0o644)]);
        let got = unpack(&pkg, "task", &sandbox.tasks(), PackageLimits::default(), false);
        assert!(matches!(got, Err(PackageError::Io(_))), "{got:?}");
        sandbox.assert_untouched(&before, None);
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
        assert_eq!(std::fs::metadata(root.join("bootstrap")).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(std::fs::metadata(root.join("lib/data.txt")).unwrap().permissions().mode() & 0o777, 0o444);
        // Already unpacked: the same root, untouched.
        assert_eq!(unpack(&pkg, "abc", dir.path(), PackageLimits::default(), true).unwrap(), root);
    }

    #[test]
    fn links_inside_the_package_keep_working() {
        // The shapes real packages have: node_modules/.bin, a wheel's relative links, links to
        // links, a link to a directory and to the root itself.
        let sandbox = Sandbox::new();
        let before = sandbox.outside();
        let pkg = zip_entries(&[
            E::Link("node_modules/.bin/tool", "../tool/bin/cli.js"),
            E::File("node_modules/tool/bin/cli.js", b"cli", 0o755),
            E::File("site-packages/pkg/data/v1.txt", b"v1", 0o644),
            E::Link("site-packages/pkg/data/current.txt", "v1.txt"),
            E::Link("site-packages/pkg/latest", "data/current.txt"),
            E::Link("vendored", "site-packages/pkg"),
            E::Link("site-packages/pkg/root", "../.."),
            E::Link("via", "vendored/root/vendored/latest"),
        ]);
        let root = unpack(&pkg, "task", &sandbox.tasks(), PackageLimits::default(), false).unwrap();
        assert_eq!(std::fs::read(root.join("node_modules/.bin/tool")).unwrap(), b"cli");
        assert_eq!(std::fs::read(root.join("site-packages/pkg/latest")).unwrap(), b"v1");
        assert_eq!(std::fs::read(root.join("vendored/data/current.txt")).unwrap(), b"v1");
        assert_eq!(std::fs::read(root.join("via")).unwrap(), b"v1");
        assert!(std::fs::symlink_metadata(root.join("via")).unwrap().is_symlink());
        sandbox.assert_untouched(&before, Some("task"));
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

    /// xorshift64*: deterministic, so a failing case is reproduced by its number.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }

        /// A path of 1 to `max` components from `alphabet`, sometimes absolute or with a
        /// trailing slash.
        fn path(&mut self, alphabet: &[&str], max: usize) -> String {
            let n = 1 + self.below(max);
            let mut path: Vec<&str> = (0..n).map(|_| self.pick(alphabet)).collect();
            if self.below(8) == 0 {
                path.insert(0, "");
            }
            if self.below(8) == 0 {
                path.push("");
            }
            path.join("/")
        }
    }

    // Names climb less often than targets: a name with `..` is refused outright, and the
    // interesting cases are those that pass the name checks.
    const NAMES: [&str; 14] =
        ["a", "b", "c", "d", "a", "b", "c", "d", ".", "", "..", "A", "\u{e9}", "e\u{301}"];
    const TARGETS: [&str; 8] = ["a", "b", "c", "A", "..", "..", ".", ""];

    /// A random archive of files, directories and links named from a small alphabet.
    fn random_package(rng: &mut Rng) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let mut names = HashSet::new();
        for _ in 0..1 + rng.below(7) {
            let (name, kind) = (rng.path(&NAMES, 3), rng.below(5));
            // The writer refuses duplicates (and stores directories with a trailing slash).
            let stored = if kind == 2 && !name.ends_with('/') { format!("{name}/") } else { name.clone() };
            if name.is_empty() || !names.insert(stored) {
                continue;
            }
            let options = SimpleFileOptions::default();
            match kind {
                0 | 1 => {
                    w.start_file(&name, options.unix_permissions(0o644)).unwrap();
                    w.write_all(b"x").unwrap();
                }
                2 => w.add_directory(&name, options).unwrap(),
                _ => w.add_symlink(&name, rng.path(&TARGETS, 4), options).unwrap(),
            }
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn random_packages_never_reach_outside_the_root() {
        let limits = PackageLimits::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut unpacked, mut with_links) = (0, 0);
        for case in 0..500 {
            let pkg = random_package(&mut rng);
            let sandbox = Sandbox::new();
            let before = sandbox.outside();
            let planned = check(&pkg, limits, false);
            match unpack(&pkg, "task", &sandbox.tasks(), limits, false) {
                Err(e) => {
                    assert_eq!(planned, Err(e), "case {case}: the plan and the writer disagree");
                    sandbox.assert_untouched(&before, None);
                }
                Ok(root) => {
                    assert_eq!(planned, Ok(()), "case {case}");
                    sandbox.assert_untouched(&before, Some("task"));
                    unpacked += 1;
                    let root = root.canonicalize().unwrap();
                    let mut stack = vec![root.clone()];
                    while let Some(dir) = stack.pop() {
                        for entry in std::fs::read_dir(&dir).unwrap() {
                            let path = entry.unwrap().path();
                            let meta = std::fs::symlink_metadata(&path).unwrap();
                            if meta.is_dir() {
                                stack.push(path);
                            } else if meta.is_symlink() {
                                with_links += 1;
                                if let Ok(resolved) = path.canonicalize() {
                                    assert!(
                                        resolved.starts_with(&root),
                                        "case {case}: {path:?} -> {resolved:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
            // The writer alone, without the plan's whole-package checks, writes nothing outside.
            if let Ok(entries) = read_entries(&pkg, limits) {
                let _ = std::fs::remove_dir_all(sandbox.tasks().join("task"));
                let task =
                    write_entries(&pkg, &entries, "task", &sandbox.tasks(), limits).ok().map(|_| "task");
                sandbox.assert_untouched(&before, task);
            }
        }
        // The generator must exercise the success path too, links included.
        assert!(unpacked > 50 && with_links > 20, "unpacked {unpacked}, links {with_links}");
    }

    #[test]
    fn deep_or_long_paths_are_refused_before_they_cost_anything() {
        let deep = format!("{}f", "a/".repeat(30_000));
        let pkg = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o755), (deep.as_str(), b"x", 0o644)], &[]);
        let started = std::time::Instant::now();
        assert!(matches!(check(&pkg, PackageLimits::default(), true), Err(PackageError::PathTooLong(_))));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let pkg = zip_of(&[(long.as_str(), b"x", 0o644)], &[]);
        assert!(matches!(check(&pkg, PackageLimits::default(), false), Err(PackageError::PathTooLong(_))));
    }
}
