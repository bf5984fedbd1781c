//! Serving what the aggregator publishes: the socket server (its listener, writer and reader
//! threads), the probe-side recorder thread, and task dumps (`stallscope-dump`).

pub(crate) mod recorder;
pub(crate) mod server;
pub(crate) mod taskdump;
