//! Loading the users file (`{"id": 17, "user_name": "..."}` per line) into memory.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use firstclick_model::{UserId, UserRecord};

/// Why the users file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("cannot read users file {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message already, so not a `source`).
        cause: std::io::Error,
    },
    /// A line is not a user record.
    #[error(
        "users file {path}, line {line}: expected {{\"id\": <integer>, \"user_name\": \"<text>\"}}, {reason}"
    )]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What was wrong.
        reason: String,
    },
}

/// User id to name.
///
/// Hashed with foldhash, not the standard SipHash: the map is looked up once per output row
/// (SipHash was 2 % of a replay's CPU), and its keys come from the users file, which is
/// configuration, not input from outside.
pub type UserNames = HashMap<UserId, String, foldhash::fast::RandomState>;

/// Reads a users file. A bad line is an error: a users file is configuration, not a stream.
pub(crate) fn load_users(path: &Path) -> Result<UserNames, UsersError> {
    let io = |cause| UsersError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut names = UserNames::default();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let record: UserRecord = serde_json::from_str(&line).map_err(|e| UsersError::Line {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            reason: e.to_string(),
        })?;
        names.insert(record.id, record.user_name);
    }
    Ok(names)
}
