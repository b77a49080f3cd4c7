//! The wire formats the gateway reads, read where they lie.
//!
//! An agent's request carries 100 KB to 1 MB of history, and the gateway
//! needs a handful of things from it: the model, the user, whether it
//! streams, the output cap, the ids it names, how many tokens its input is
//! likely to be. [`JsonBody::parse`] checks the bytes once (as strictly as
//! a full JSON parser: the property tests and the fuzz target hold it to
//! `serde_json`'s verdict), and [`Raw`] reads any value inside them without
//! building a tree. What the gateway must change (the upstream's name for
//! the model, `stream_options.include_usage`, an output cap) is spliced
//! into the original bytes when they are sent: nothing else is rebuilt.
//!
//! # Key design decision: check once, then read lazily
//!
//! Validation is the only full pass. It notes where the top-level members
//! and the long values lie (and the members the caller watches, at any
//! depth), so every read after it scans just the span it is asked for and
//! skips a long value without scanning it, trusting the check (a [`Raw`]
//! can only be had from checked text, so its readers never fail and never
//! panic). Like `canary` and `budget`, the crate does no I/O and reads no
//! clock.
//!
//! # Example
//!
//! ```
//! use wire::{JsonBody, string};
//!
//! # fn main() -> Result<(), wire::JsonError> {
//! let body = br#"{"model": "deepseek-v3.2", "messages": [{"role": "user", "content": "hi"}]}"#;
//! let mut body = JsonBody::parse(&body[..])?;
//! assert_eq!(body.get("model").and_then(|m| m.as_str()).as_deref(), Some("deepseek-v3.2"));
//! let first = body.get("messages").and_then(|m| m.items().next());
//! assert_eq!(first.and_then(|m| m.get("content")).and_then(|c| c.as_str()).as_deref(), Some("hi"));
//!
//! body.set("model", string("deepseek-chat"));
//! body.set_in("stream_options", "include_usage", "true");
//! assert_eq!(
//!     &body.to_bytes()[..],
//!     br#"{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}],"stream_options":{"include_usage":true}}"#
//! );
//! assert!(JsonBody::parse(&b"{\"model\": }"[..]).is_err());
//! # Ok(())
//! # }
//! ```

mod body;
mod doc;
mod error;
mod index;
mod raw;
mod scan;

pub use body::{JsonBody, string};
pub use error::JsonError;
pub use raw::{Items, Key, Kind, Members, Piece, Pieces, Raw};
pub use scan::{MAX_DEPTH, validate};
