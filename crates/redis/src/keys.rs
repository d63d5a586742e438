//! The names of every key of a deployment in Redis (docs/design.md §6 and §7).
//!
//! A deployment is named `NAME` (the checkpoint key, `CHECKPOINT_KEY`). With P partitions,
//! partition p's checkpoint is named [`partition_checkpoint_name`]`(NAME, p, P)`, and every key
//! of that partition (checkpoint meta, changelog, bases, lease, fence) carries that name as its
//! hash tag `{...}`, so they share one Redis Cluster slot and one Lua script may touch them all.
//! The two deployment-wide keys (live workers, layout) are tagged by `NAME` itself.

/// The checkpoint name of partition `partition` of the deployment `name` with `partitions`
/// partitions: `name` itself when there is one partition (so a single worker's existing
/// checkpoint stays where it was), else `name:p{partition}`.
pub fn partition_checkpoint_name(name: &str, partition: u32, partitions: u32) -> String {
    if partitions <= 1 {
        name.to_owned()
    } else {
        format!("{name}:p{partition}")
    }
}

/// The key prefix of a checkpoint: `firstclick:{NAME}`.
pub fn checkpoint_prefix(checkpoint_name: &str) -> String {
    format!("firstclick:{{{checkpoint_name}}}")
}

/// The checkpoint's `meta` hash.
pub fn meta_key(checkpoint_name: &str) -> String {
    format!("firstclick:{{{checkpoint_name}}}:meta")
}

/// The checkpoint's changelog list.
pub fn log_key(checkpoint_name: &str) -> String {
    format!("firstclick:{{{checkpoint_name}}}:log")
}

/// The list of base `generation` of the checkpoint.
pub fn base_key(checkpoint_name: &str, generation: u64) -> String {
    format!("firstclick:{{{checkpoint_name}}}:base:{generation}")
}

/// The lease of the partition whose checkpoint is `checkpoint_name`: a string
/// `"<worker_id> <token>"` with an expiry.
pub fn lease_key(checkpoint_name: &str) -> String {
    format!("firstclick:{{{checkpoint_name}}}:lease")
}

/// The fencing counter of that partition: the last token given out (only grows).
pub fn fence_key(checkpoint_name: &str) -> String {
    format!("firstclick:{{{checkpoint_name}}}:fence")
}

/// The deployment's live workers: a sorted set, member = worker id, score = expiry (ms, Redis
/// server time).
pub fn workers_key(name: &str) -> String {
    format!("firstclick:{{{name}}}:workers")
}

/// The deployment's partition layout: a string holding P.
pub fn layout_key(name: &str) -> String {
    format!("firstclick:{{{name}}}:layout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::slot_of;

    #[test]
    fn one_partition_keeps_the_old_name() {
        assert_eq!(partition_checkpoint_name("proj:sub", 0, 1), "proj:sub");
        assert_eq!(partition_checkpoint_name("proj:sub", 3, 8), "proj:sub:p3");
        assert_eq!(meta_key("proj:sub"), "firstclick:{proj:sub}:meta");
        assert_eq!(lease_key("proj:sub:p3"), "firstclick:{proj:sub:p3}:lease");
        assert_eq!(fence_key("proj:sub:p3"), "firstclick:{proj:sub:p3}:fence");
        assert_eq!(workers_key("proj:sub"), "firstclick:{proj:sub}:workers");
        assert_eq!(layout_key("proj:sub"), "firstclick:{proj:sub}:layout");
        assert_eq!(base_key("n", 7), "firstclick:{n}:base:7");
    }

    #[test]
    fn a_partition_keys_share_one_slot() {
        let name = partition_checkpoint_name("proj:sub", 5, 8);
        let slot = slot_of(&meta_key(&name));
        for key in [
            log_key(&name),
            base_key(&name, 9),
            lease_key(&name),
            fence_key(&name),
        ] {
            assert_eq!(slot_of(&key), slot, "{key}");
        }
        assert_eq!(
            slot_of(&workers_key("proj:sub")),
            slot_of(&layout_key("proj:sub"))
        );
    }
}
