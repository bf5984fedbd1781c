//! `stallscope`: the client of the stallscope probe.
//!
//! The binary (`main.rs`) only parses the command line and calls [`cli::run`]; everything else
//! lives here so that it can be tested without a process:
//!
//! - [`target`]: what `TARGET` means (a pid, a socket path, `tcp://HOST:PORT`) and how it is found;
//! - [`conn`]: connecting, the client handshake, and decoded updates;
//! - [`list`]: the probes on this machine;
//! - [`record`]: a connection into a recording file;
//! - [`report`]: the model's summary ([`stallscope_wire::model`], the one fold of the update
//!   stream, which the UI reads too) as text or as the JSON documented in `docs/report-json.md`;
//! - [`flame`]: the model's folded stacks as an SVG flame graph (through inferno);
//! - [`timefmt`]: durations and times on the command line and in output;
//! - [`cli`]: the clap command line and one function per subcommand.
//!
//! The client never links the probe: it shares only the `stallscope-wire` crate with it.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod cli;
pub mod conn;
#[cfg(feature = "demo")]
pub mod demo;
pub mod flame;
pub mod list;
pub mod record;
pub mod report;
pub mod target;
pub mod timefmt;
pub mod ui;
