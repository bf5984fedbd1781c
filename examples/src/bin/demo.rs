//! The demo service: several failure modes at once (see `stallscope_examples::demo`).
//!
//! Run: `cargo run --release -p stallscope-examples --bin demo` (8 s, then the report).

use std::time::Duration;

fn main() {
    stallscope_examples::Example::new("demo").default_duration(Duration::from_secs(8)).run(|_ctx| async {
        stallscope_examples::demo::run().await;
    });
}
