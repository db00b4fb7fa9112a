//! Files written whole or not at all.
//!
//! [`OutputFile`] writes to a uniquely named temporary file in the
//! destination's directory (created exclusively, so two writers never share
//! one), syncs it to disk and renames it over the destination only when
//! complete. Dropped before [`OutputFile::commit`] (an error, or an
//! interruption seen by [`interrupted`]), it removes the temporary file.
//!
//! A killed process cannot clean up, so long-running commands call
//! [`stop_on_interrupt`]: SIGINT and SIGTERM then only raise a flag that the
//! work loop checks through [`interrupted`], returning an error that drops
//! (and so removes) the temporary file. A second signal ends the process at
//! once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::{Error, Result};

/// Exit status after a second SIGINT/SIGTERM (128 + SIGINT, as shells say).
const SECOND_SIGNAL_EXIT: i32 = 130;

static INTERRUPT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// From now on SIGINT and SIGTERM set the flag [`interrupted`] reads
/// instead of ending the process; a second one ends it with status 130.
/// Idempotent.
pub fn stop_on_interrupt() -> Result<()> {
    if INTERRUPT.get().is_some() {
        return Ok(());
    }
    let flag = INTERRUPT.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            SECOND_SIGNAL_EXIT,
            Arc::clone(flag),
        )
        .and_then(|_| signal_hook::flag::register(signal, Arc::clone(flag)))
        .map_err(|e| Error::InvalidArgument(format!("cannot handle signal {signal}: {e}")))?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived after [`stop_on_interrupt`].
pub fn interrupted() -> bool {
    INTERRUPT.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// A file being written: a temporary beside `dest` until committed.
pub struct OutputFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl OutputFile {
    /// Creates `DIR/NAME.XXXXXX.tmp` for the destination `DIR/NAME`.
    pub fn create(dest: &Path) -> Result<OutputFile> {
        let io = |source| Error::Io {
            path: dest.to_path_buf(),
            source,
        };
        let name = dest.file_name().ok_or_else(|| {
            Error::InvalidArgument(format!("{}: not a file name", dest.display()))
        })?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(&format!("{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        Ok(OutputFile {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Where the data goes until [`OutputFile::commit`].
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// Syncs the data, then renames the temporary file to the destination
    /// and syncs the directory. Without `overwrite`, a destination that
    /// exists by now (another run got there first) is an error and is left
    /// as it is.
    pub fn commit(self, overwrite: bool) -> Result<()> {
        let dest = self.dest;
        let io = |source| Error::Io {
            path: dest.clone(),
            source,
        };
        self.temp.as_file().sync_all().map_err(io)?;
        let persisted = if overwrite {
            self.temp.persist(&dest)
        } else {
            self.temp.persist_noclobber(&dest)
        };
        // On failure the error owns the temporary file; dropping it removes it.
        persisted.map_err(|e| io(e.error))?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rkinfer-out-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_renames_and_drop_removes() {
        let dir = scratch("commit");
        let dest = dir.join("a.bin");
        let mut f = OutputFile::create(&dest).unwrap();
        f.file().write_all(b"abc").unwrap();
        let temp = f.temp_path().to_path_buf();
        assert!(temp.starts_with(&dir));
        assert!(!dest.exists());
        f.commit(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert!(!temp.exists());

        // Dropped without commit: nothing but the old destination remains.
        let mut f = OutputFile::create(&dest).unwrap();
        f.file().write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(names(&dir), ["a.bin"]);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");

        // No overwrite: the existing destination wins, the temporary goes.
        let mut f = OutputFile::create(&dest).unwrap();
        f.file().write_all(b"second").unwrap();
        assert!(f.commit(false).is_err());
        assert_eq!(names(&dir), ["a.bin"]);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        let mut f = OutputFile::create(&dest).unwrap();
        f.file().write_all(b"third").unwrap();
        f.commit(true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"third");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_writers_get_two_temporary_files() {
        let dir = scratch("unique");
        let dest = dir.join("m.gguf");
        let a = OutputFile::create(&dest).unwrap();
        let b = OutputFile::create(&dest).unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
        drop((a, b));
        assert!(names(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_destination() {
        let dest = Path::new("/nonexistent-rkinfer-dir/x.gguf");
        let e = OutputFile::create(dest).err().unwrap();
        assert!(e.to_string().contains("x.gguf"), "{e}");
    }
}
