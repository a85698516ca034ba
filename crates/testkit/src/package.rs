//! Zip packages built in memory, as `provided`, `python3.x` and `nodejsN.x` functions are
//! uploaded.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::ZipWriter;

/// A zip package of `(name, contents, unix mode)` entries, in that order.
pub fn zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    zip_with_links(files, &[], false)
}

/// A zip of files `(name, contents, unix mode)` and symbolic links `(name, target)`: the files
/// first, unless `links_first` (an unpacker must judge a link whatever comes before it).
pub fn zip_with_links(files: &[(&str, &[u8], u32)], links: &[(&str, &str)], links_first: bool) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let add_links = |w: &mut ZipWriter<Cursor<Vec<u8>>>| {
        for (name, target) in links {
            w.add_symlink(*name, *target, SimpleFileOptions::default()).expect("zip link entry");
        }
    };
    if links_first {
        add_links(&mut w);
    }
    for (name, data, mode) in files {
        w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode)).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    if !links_first {
        add_links(&mut w);
    }
    w.finish().expect("zip").into_inner()
}
