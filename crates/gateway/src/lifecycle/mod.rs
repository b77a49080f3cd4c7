//! The gateway's life around its requests: state restored at start-up, and
//! the background services that run while it serves (the state saver, the
//! usage pruner). Each service is a named task the runtime starts and stops.

mod pruner;
mod restore;
mod saver;

pub(crate) use pruner::{prune, spawn_pruner};
pub(crate) use restore::{added_at_runtime, restore};
pub(crate) use saver::spawn_saver;
