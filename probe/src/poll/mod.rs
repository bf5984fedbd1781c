//! Code that runs on the service's own threads: the poll hooks (the only per-poll code), the
//! per-thread slots and histograms they write, the clock they read, `instrument`, and the
//! heartbeat task that measures loop lag on the service's runtime.

pub(crate) mod clock;
pub(crate) mod event_ring;
pub(crate) mod hist;
pub(crate) mod hooks;
pub(crate) mod instrument;
pub(crate) mod lag;
pub(crate) mod slots;
pub(crate) mod zeroed;
