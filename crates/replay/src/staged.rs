//! Outputs that appear only when the whole replay succeeded.
//!
//! Every output file is written as a temporary file in its target's directory
//! (`.<name>.tmp-<pid>-<n>`, so the final rename stays on one file system) and renamed over the
//! target by [`StagedOutputs::commit`]. A replay that fails (an unreadable input, a full disk,
//! too many bad lines) drops its [`StagedOutputs`], which deletes the temporary files: an
//! existing `--out` keeps its bytes. Standard output (`-`) is written directly.

use std::path::{Path, PathBuf};

use crate::sink::{FileSinkError, NdjsonWriter};

/// One temporary file and where it goes.
#[derive(Debug)]
struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

/// The temporary files of a replay's outputs, renamed into place by [`StagedOutputs::commit`]
/// and deleted when dropped uncommitted.
#[derive(Debug, Default)]
pub struct StagedOutputs {
    files: Vec<Staged>,
    targets: Vec<PathBuf>,
}

fn refused(path: &Path, why: String) -> FileSinkError {
    FileSinkError {
        path: path.to_path_buf(),
        cause: std::io::Error::other(why),
    }
}

impl StagedOutputs {
    /// No outputs yet.
    pub fn new() -> Self {
        StagedOutputs::default()
    }

    /// A writer for `target`: a temporary file beside it (`-`: standard output, not staged).
    /// Refuses a directory, a path without a file name, and a target already staged (two
    /// outputs naming the same file).
    pub fn create(&mut self, target: &Path) -> Result<NdjsonWriter, FileSinkError> {
        if target == Path::new("-") {
            return NdjsonWriter::create(target);
        }
        if self.targets.iter().any(|t| t == target) {
            return Err(refused(
                target,
                "two outputs name this file; give each output its own path".into(),
            ));
        }
        if target.is_dir() {
            return Err(refused(
                target,
                "it is a directory, expected a file path (e.g. rows.ndjson)".into(),
            ));
        }
        let Some(name) = target.file_name() else {
            return Err(refused(
                target,
                "expected a file path, found no file name".into(),
            ));
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            self.targets.len()
        ));
        // Created first, recorded next: a failed creation leaves nothing to delete.
        let writer = NdjsonWriter::create(&tmp).map_err(|e| FileSinkError {
            path: target.to_path_buf(),
            cause: std::io::Error::new(
                e.cause.kind(),
                format!(
                    "cannot create its temporary file {}: {}",
                    tmp.display(),
                    e.cause
                ),
            ),
        })?;
        self.targets.push(target.to_path_buf());
        self.files.push(Staged {
            tmp,
            target: target.to_path_buf(),
        });
        Ok(writer)
    }

    /// Renames every temporary file over its target (call once the writers are flushed).
    pub fn commit(mut self) -> Result<(), FileSinkError> {
        for s in std::mem::take(&mut self.files) {
            if let Err(cause) = std::fs::rename(&s.tmp, &s.target) {
                let _ = std::fs::remove_file(&s.tmp);
                return Err(FileSinkError {
                    path: s.target,
                    cause: std::io::Error::new(
                        cause.kind(),
                        format!("cannot rename {} into place: {cause}", s.tmp.display()),
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Drop for StagedOutputs {
    fn drop(&mut self) {
        for s in &self.files {
            let _ = std::fs::remove_file(&s.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_appears_before_commit_and_nothing_stays_after_a_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("rows.ndjson");
        std::fs::write(&out, "old\n").expect("old rows");
        {
            let mut staged = StagedOutputs::new();
            let mut w = staged.create(&out).expect("staged");
            w.write(&1).expect("written");
            w.flush().expect("flushed");
            assert_eq!(std::fs::read_to_string(&out).expect("read"), "old\n");
        }
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);

        let mut staged = StagedOutputs::new();
        let mut w = staged.create(&out).expect("staged");
        w.write(&2).expect("written");
        w.flush().expect("flushed");
        staged.commit().expect("renamed");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "2\n");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn a_directory_or_a_twice_named_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut staged = StagedOutputs::new();
        let Err(e) = staged.create(dir.path()) else {
            panic!("a directory accepted as an output");
        };
        assert!(e.to_string().contains("it is a directory"), "{e}");
        let out = dir.path().join("x.ndjson");
        let _w = staged.create(&out).expect("first");
        let Err(e) = staged.create(&out) else {
            panic!("one file accepted for two outputs");
        };
        assert!(e.to_string().contains("two outputs name this file"), "{e}");
    }
}
