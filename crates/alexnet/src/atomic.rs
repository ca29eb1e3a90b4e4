//! Atomic file writes: a crash leaves either the old file or the new one, never a mix.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The prefix and infix of the temporary files [`write_atomic`] writes:
/// `.<name>.tmp-<pid>`. A crash can leave one behind; resuming a run removes them.
pub(crate) const TMP_INFIX: &str = ".tmp-";

/// Writes `bytes` to `path` atomically: temporary file in the same folder, fsync, rename,
/// fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::config(format!("{} is not a file path", path.display())))?;
    let name = name.to_string_lossy();
    let tmp = dir.join(format!(".{name}{TMP_INFIX}{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        crate::failpoint::pause_point("write-tmp", &name);
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself; not every platform can open a folder, so best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path)(e)
    })
}
