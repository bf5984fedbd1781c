//! `stallscope`: the client. Until the socket protocol lands (P2), it only explains itself.

const HELP: &str = "\
stallscope — find what blocks your Tokio event loop and which tasks never finish

Usage: stallscope <COMMAND>

Commands (coming with the socket protocol):
  attach [TARGET]                 live terminal UI
  list                            probes running on this machine
  record [TARGET] -d D -o FILE    record headless
  replay FILE                     the UI on a recording
  report FILE [--json]            stalls, leak suspects, pools, lag
  export FILE --svg OUT           flame graph of stalled time
  demo                            run the bundled demo service and attach

Today: link stallscope-probe into your service and call probe.report(); see the README.
";

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None | Some("-h") | Some("--help") | Some("help") => print!("{HELP}"),
        Some("-V") | Some("--version") => println!("stallscope {}", env!("CARGO_PKG_VERSION")),
        Some(other) => {
            eprintln!("stallscope: '{other}' is not available yet in this build\n\n{HELP}");
            std::process::exit(2);
        }
    }
}
