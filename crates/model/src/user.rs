//! The users file of replays and of the file generator: one `{"id": 17, "user_name": "..."}` per
//! line. In the cloud path the same data lives in Redis hashes `user_{id}`.

use serde::{Deserialize, Serialize};

use crate::event::UserId;

/// One user, as a line of the users file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The id that clicks and checkouts carry as `user_id`.
    pub id: UserId,
    /// The name copied into output rows.
    pub user_name: String,
}

/// The Redis key of a user's hash.
pub fn redis_key(id: UserId) -> String {
    format!("user_{id}")
}
