//! Opening files that may be hostile (in a bundle, in the compiled-component cache) without
//! following links or blocking.

use std::path::Path;

/// Opens a file for reading only if it is a regular file: never follows a link, never blocks
/// on a FIFO or device (`O_NONBLOCK`), and checks the type of what was actually opened.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other("is a link (not followed)")
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}
